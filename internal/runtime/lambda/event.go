package lambda

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"mime"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nimbusfn/nimbus/internal/runtime"
)

// httpEvent is an API Gateway HTTP API payload (format version 2.0), the shape
// of aws-lambda-go's events.APIGatewayV2HTTPRequest.
type httpEvent struct {
	Version               string            `json:"version"`
	RouteKey              string            `json:"routeKey"`
	RawPath               string            `json:"rawPath"`
	RawQueryString        string            `json:"rawQueryString"`
	Cookies               []string          `json:"cookies,omitempty"`
	Headers               map[string]string `json:"headers"`
	QueryStringParameters map[string]string `json:"queryStringParameters,omitempty"`
	RequestContext        httpEventContext  `json:"requestContext"`
	Body                  string            `json:"body,omitempty"`
	IsBase64Encoded       bool              `json:"isBase64Encoded"`
}

type httpEventContext struct {
	AccountID    string `json:"accountId"`
	APIID        string `json:"apiId"`
	DomainName   string `json:"domainName"`
	DomainPrefix string `json:"domainPrefix"`
	HTTP         struct {
		Method    string `json:"method"`
		Path      string `json:"path"`
		Protocol  string `json:"protocol"`
		SourceIP  string `json:"sourceIp"`
		UserAgent string `json:"userAgent"`
	} `json:"http"`
	RequestID string `json:"requestId"`
	RouteKey  string `json:"routeKey"`
	Stage     string `json:"stage"`
	Time      string `json:"time"`
	TimeEpoch int64  `json:"timeEpoch"`
}

// accountID is the account in every ARN Nimbus hands to a function.
const accountID = "000000000000"

// functionARN is the ARN a function sees as its own.
func functionARN(name string) string {
	return "arn:aws:lambda:local:" + accountID + ":function:" + name
}

// HTTPEvent maps an HTTP request and its body to the API Gateway v2 event a
// lambda function is given (exported so that a benchmark gives the same
// bootstrap run bare the same event).
func HTTPEvent(req *runtime.Request, body []byte, now time.Time) ([]byte, error) {
	ev := httpEvent{
		Version:        "2.0",
		RouteKey:       "$default",
		RawPath:        req.Path,
		RawQueryString: req.RawQuery,
		Headers:        make(map[string]string, len(req.Header)+1),
	}
	if ev.RawPath == "" {
		ev.RawPath = "/"
	}
	for k, vs := range req.Header {
		lk := strings.ToLower(k)
		if lk == "cookie" {
			for _, v := range vs {
				for c := range strings.SplitSeq(v, ";") {
					if c = strings.TrimSpace(c); c != "" {
						ev.Cookies = append(ev.Cookies, c)
					}
				}
			}
			continue
		}
		ev.Headers[lk] = strings.Join(vs, ",")
	}
	if req.Host != "" {
		ev.Headers["host"] = req.Host
	}
	if _, ok := ev.Headers["content-length"]; !ok && len(body) > 0 {
		ev.Headers["content-length"] = strconv.Itoa(len(body))
	}
	if req.RawQuery != "" {
		q, _ := url.ParseQuery(req.RawQuery)
		if len(q) > 0 {
			ev.QueryStringParameters = make(map[string]string, len(q))
			for k, vs := range q {
				ev.QueryStringParameters[k] = strings.Join(vs, ",")
			}
		}
	}
	rc := &ev.RequestContext
	rc.AccountID = accountID
	rc.APIID = "nimbus"
	rc.DomainName = req.Host
	rc.DomainPrefix, _, _ = strings.Cut(req.Host, ".")
	rc.HTTP.Method = req.Method
	if rc.HTTP.Method == "" {
		rc.HTTP.Method = http.MethodGet
	}
	rc.HTTP.Path = ev.RawPath
	rc.HTTP.Protocol = "HTTP/1.1"
	rc.HTTP.SourceIP = req.RemoteAddr
	if host, _, err := net.SplitHostPort(req.RemoteAddr); err == nil {
		rc.HTTP.SourceIP = host
	}
	rc.HTTP.UserAgent = req.Header.Get("User-Agent")
	rc.RequestID = req.InvocationID
	rc.RouteKey = "$default"
	rc.Stage = "$default"
	rc.Time = now.UTC().Format("02/Jan/2006:15:04:05 -0700")
	rc.TimeEpoch = now.UnixMilli()
	if len(body) > 0 {
		if isText(req.Header.Get("Content-Type"), body) {
			ev.Body = string(body)
		} else {
			ev.Body = base64.StdEncoding.EncodeToString(body)
			ev.IsBase64Encoded = true
		}
	}
	return json.Marshal(&ev)
}

// isText reports whether a body can travel as a JSON string unencoded: valid
// UTF-8 of a textual (or undeclared) media type.
func isText(contentType string, body []byte) bool {
	if !utf8.Valid(body) {
		return false
	}
	if contentType == "" {
		return true
	}
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false
	}
	switch {
	case strings.HasPrefix(mt, "text/"),
		strings.HasSuffix(mt, "+json"), strings.HasSuffix(mt, "+xml"),
		mt == "application/json", mt == "application/xml", mt == "application/javascript",
		mt == "application/x-www-form-urlencoded", mt == "application/graphql",
		mt == "application/x-ndjson", mt == "application/yaml":
		return true
	}
	return false
}

// rawEvent returns body as a JSON event: unchanged when it is JSON, "{}" when
// empty, and as a JSON string otherwise.
func rawEvent(body []byte) []byte {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return []byte("{}")
	}
	if json.Valid(trimmed) {
		return body
	}
	b, _ := json.Marshal(string(body))
	return b
}

// httpResult is a function's structured answer to an HTTP event
// (events.APIGatewayV2HTTPResponse).
type httpResult struct {
	StatusCode        json.RawMessage              `json:"statusCode"`
	Headers           map[string]json.RawMessage   `json:"headers"`
	MultiValueHeaders map[string][]json.RawMessage `json:"multiValueHeaders"`
	Cookies           []string                     `json:"cookies"`
	Body              json.RawMessage              `json:"body"`
	IsBase64Encoded   bool                         `json:"isBase64Encoded"`
}

// writeHTTPResult answers an HTTP invocation from the function's result the
// way API Gateway v2 does: an object with statusCode is a response
// description; any other JSON is a 200 application/json body.
func writeHTTPResult(w http.ResponseWriter, result []byte) error {
	var probe map[string]json.RawMessage
	if json.Unmarshal(result, &probe) != nil || probe["statusCode"] == nil {
		writeJSON(w, result)
		return nil
	}
	var r httpResult
	if err := json.Unmarshal(result, &r); err != nil {
		return runtime.Errorf(runtime.BadResponse, "the function's response object is malformed: %v", err)
	}
	status, err := parseStatus(r.StatusCode)
	if err != nil {
		return err
	}
	var body []byte
	if len(r.Body) > 0 && string(r.Body) != "null" {
		var s string
		if err := json.Unmarshal(r.Body, &s); err != nil {
			return runtime.Errorf(runtime.BadResponse, "the function's response body must be a string, got %s", abbrev(r.Body))
		}
		body = []byte(s)
		if r.IsBase64Encoded {
			if body, err = base64.StdEncoding.DecodeString(s); err != nil {
				return runtime.Errorf(runtime.BadResponse, "the function's response says isBase64Encoded but its body is not base64: %v", err)
			}
		}
	}
	h := w.Header()
	for _, k := range sortedKeys(r.MultiValueHeaders) {
		for _, v := range r.MultiValueHeaders[k] {
			s, err := headerValue(k, v)
			if err != nil {
				return err
			}
			h.Add(k, s)
		}
	}
	for k, v := range r.Headers {
		s, err := headerValue(k, v)
		if err != nil {
			return err
		}
		h.Set(k, s)
	}
	for _, c := range r.Cookies {
		h.Add("Set-Cookie", c)
	}
	h.Del("Content-Length")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
	return nil
}

func writeJSON(w http.ResponseWriter, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

func parseStatus(raw json.RawMessage) (int, error) {
	var n float64
	if err := json.Unmarshal(raw, &n); err != nil {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return 0, runtime.Errorf(runtime.BadResponse, "the function's statusCode must be a number, got %s", abbrev(raw))
		}
		if n, err = strconv.ParseFloat(s, 64); err != nil {
			return 0, runtime.Errorf(runtime.BadResponse, "the function's statusCode must be a number, got %s", abbrev(raw))
		}
	}
	if n != float64(int(n)) || n < 100 || n > 599 {
		return 0, runtime.Errorf(runtime.BadResponse, "the function's statusCode %s is not an HTTP status (100-599)", abbrev(raw))
	}
	return int(n), nil
}

// headerValue renders a header value that a handler may have written as a
// string, number or boolean.
func headerValue(name string, raw json.RawMessage) (string, error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var v any
	if json.Unmarshal(raw, &v) == nil {
		switch v.(type) {
		case float64, bool:
			return string(raw), nil
		}
	}
	return "", runtime.Errorf(runtime.BadResponse, "the function's response header %q must be a string, got %s", name, abbrev(raw))
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func abbrev(b []byte) string {
	if len(b) > 64 {
		return string(b[:64]) + "…"
	}
	return string(b)
}

// traceID builds a Lambda-Runtime-Trace-Id (X-Ray format) that carries the
// W3C trace of the request when there is one.
func traceID(h http.Header, now time.Time) string {
	if tp := h.Get("Traceparent"); len(tp) == 55 && tp[2] == '-' && tp[35] == '-' && tp[52] == '-' {
		trace, parent, flags := tp[3:35], tp[36:52], tp[53:55]
		sampled := "0"
		if f, err := strconv.ParseUint(flags, 16, 8); err == nil && f&1 == 1 {
			sampled = "1"
		}
		return fmt.Sprintf("Root=1-%s-%s;Parent=%s;Sampled=%s", trace[:8], trace[8:], parent, sampled)
	}
	var b [12]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("Root=1-%08x-%s;Sampled=0", uint32(now.Unix()), hex.EncodeToString(b[:]))
}
