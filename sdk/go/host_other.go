//go:build !wasip1

package nimbus

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// Outside WebAssembly (a process function) the host API is the local HTTP
// endpoint whose address and token Nimbus puts in NIMBUS_HOST_API and
// NIMBUS_HOST_TOKEN (docs/ABI.md, "Host API for process functions").

var hostClient = &http.Client{Timeout: 5 * time.Minute}

type callInfoKey struct{}

type callInfo struct{ invocation, traceparent string }

// withCallInfo passes the invocation id and traceparent of each request on
// in its context, so that host calls made with r.Context() carry them.
func withCallInfo(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ci := callInfo{invocation: r.Header.Get(InvocationIDHeader), traceparent: r.Header.Get("Traceparent")}
		if ci != (callInfo{}) {
			r = r.WithContext(context.WithValue(r.Context(), callInfoKey{}, ci))
		}
		h.ServeHTTP(w, r)
	})
}

// call sends one request to the host endpoint and returns the response body.
func call(ctx context.Context, op, what, method, path string, body []byte, header map[string]string) ([]byte, http.Header, error) {
	base := os.Getenv("NIMBUS_HOST_API")
	if base == "" {
		return nil, nil, hostErr(op, what, fmt.Errorf("%w: NIMBUS_HOST_API is not set (the host API exists only under Nimbus)", ErrUnavailable))
	}
	if ctx == nil {
		ctx = context.Background()
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(base, "/")+path, rd)
	if err != nil {
		return nil, nil, hostErr(op, what, err)
	}
	req.Header.Set("Authorization", "Bearer "+os.Getenv("NIMBUS_HOST_TOKEN"))
	if ci, ok := ctx.Value(callInfoKey{}).(callInfo); ok {
		if ci.invocation != "" {
			req.Header.Set(InvocationIDHeader, ci.invocation)
		}
		if ci.traceparent != "" {
			req.Header.Set("Traceparent", ci.traceparent)
		}
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := hostClient.Do(req)
	if err != nil {
		return nil, nil, hostErr(op, what, fmt.Errorf("%w: %v", ErrHost, err))
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, hostErr(op, what, fmt.Errorf("%w: %v", ErrHost, err))
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		_ = json.Unmarshal(b, &e)
		var kind error
		switch resp.StatusCode {
		case http.StatusNotFound:
			kind = ErrNotFound
		case http.StatusForbidden:
			kind = ErrDenied
		case http.StatusServiceUnavailable:
			kind = ErrUnavailable
		case http.StatusRequestEntityTooLarge:
			kind = ErrTooLarge
		case http.StatusBadRequest:
			kind = ErrInvalid
		default:
			kind = ErrHost
		}
		if e.Error.Message != "" {
			return nil, nil, hostErr(op, what, fmt.Errorf("%w: %s", kind, e.Error.Message))
		}
		return nil, nil, hostErr(op, what, fmt.Errorf("%w: host API answered %s", kind, resp.Status))
	}
	return b, resp.Header, nil
}

func esc(s string) string { return url.PathEscape(s) }

// keyPath escapes each segment of a key, keeping its slashes.
func keyPath(key string) string {
	parts := strings.Split(key, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return strings.Join(parts, "/")
}

func hostKVGet(ctx context.Context, bucket, key string) ([]byte, error) {
	b, _, err := call(ctx, "kv get", fmt.Sprintf("%q %q", bucket, key), "GET", "/v1/kv/"+esc(bucket)+"/"+keyPath(key), nil, nil)
	return b, err
}

func hostKVPut(ctx context.Context, bucket, key string, value []byte) error {
	if value == nil {
		value = []byte{}
	}
	_, _, err := call(ctx, "kv put", fmt.Sprintf("%q %q", bucket, key), "PUT", "/v1/kv/"+esc(bucket)+"/"+keyPath(key), value, nil)
	return err
}

func hostKVDelete(ctx context.Context, bucket, key string) error {
	_, _, err := call(ctx, "kv delete", fmt.Sprintf("%q %q", bucket, key), "DELETE", "/v1/kv/"+esc(bucket)+"/"+keyPath(key), nil, nil)
	return err
}

func listVia(ctx context.Context, op, area, bucket, prefix string) ([]string, error) {
	b, _, err := call(ctx, op, fmt.Sprintf("%q", bucket), "GET", "/v1/"+area+"/"+esc(bucket)+"?prefix="+url.QueryEscape(prefix), nil, nil)
	if err != nil {
		return nil, err
	}
	var out struct {
		Keys []string `json:"keys"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, hostErr(op, fmt.Sprintf("%q", bucket), fmt.Errorf("%w: bad answer: %v", ErrHost, err))
	}
	return out.Keys, nil
}

func hostKVList(ctx context.Context, bucket, prefix string) ([]string, error) {
	return listVia(ctx, "kv list", "kv", bucket, prefix)
}

func hostObjectGet(ctx context.Context, bucket, key string) ([]byte, error) {
	b, _, err := call(ctx, "object get", fmt.Sprintf("%q %q", bucket, key), "GET", "/v1/objects/"+esc(bucket)+"/"+keyPath(key), nil, nil)
	return b, err
}

func hostObjectPut(ctx context.Context, bucket, key, contentType string, data []byte) error {
	if data == nil {
		data = []byte{}
	}
	var h map[string]string
	if contentType != "" {
		h = map[string]string{"Content-Type": contentType}
	}
	_, _, err := call(ctx, "object put", fmt.Sprintf("%q %q", bucket, key), "PUT", "/v1/objects/"+esc(bucket)+"/"+keyPath(key), data, h)
	return err
}

func hostObjectDelete(ctx context.Context, bucket, key string) error {
	_, _, err := call(ctx, "object delete", fmt.Sprintf("%q %q", bucket, key), "DELETE", "/v1/objects/"+esc(bucket)+"/"+keyPath(key), nil, nil)
	return err
}

func hostObjectList(ctx context.Context, bucket, prefix string) ([]string, error) {
	return listVia(ctx, "object list", "objects", bucket, prefix)
}

func hostPublish(ctx context.Context, topic, eventType string, data []byte) error {
	var h map[string]string
	if eventType != "" {
		h = map[string]string{"Ce-Type": eventType}
	}
	if data == nil {
		data = []byte{}
	}
	_, _, err := call(ctx, "publish", fmt.Sprintf("%q", topic), "POST", "/v1/publish/"+esc(topic), data, h)
	return err
}

func hostSecret(name string) (string, error) {
	b, _, err := call(context.Background(), "secret", fmt.Sprintf("%q", name), "GET", "/v1/secrets/"+esc(name), nil, nil)
	return string(b), err
}

func hostConfig(name string) (string, error) {
	b, _, err := call(context.Background(), "config", fmt.Sprintf("%q", name), "GET", "/v1/config/"+esc(name), nil, nil)
	return string(b), err
}

func hostLog(level, msg string, fields map[string]string) error {
	b, err := json.Marshal(map[string]any{"level": level, "msg": msg, "fields": fields})
	if err != nil {
		return hostErr("log", "", err)
	}
	_, _, err = call(context.Background(), "log", "", "POST", "/v1/log", b, nil)
	return err
}

type fetchResponse struct {
	Status int         `json:"status"`
	Header http.Header `json:"header"`
	Body   []byte      `json:"body"`
}

func hostFetch(ctx context.Context, method, u string, h http.Header, body []byte) (*http.Response, error) {
	req, err := json.Marshal(map[string]any{"method": method, "url": u, "header": h, "body": body})
	if err != nil {
		return nil, hostErr("http", method+" "+u, err)
	}
	b, _, err := call(ctx, "http", method+" "+u, "POST", "/v1/fetch", req, nil)
	if err != nil {
		return nil, err
	}
	var fr fetchResponse
	if err := json.Unmarshal(b, &fr); err != nil {
		return nil, hostErr("http", method+" "+u, fmt.Errorf("%w: bad answer: %v", ErrHost, err))
	}
	return newResponse(fr.Status, fr.Header, fr.Body), nil
}
