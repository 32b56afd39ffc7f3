package lambda

import (
	"bytes"
	"encoding/base64"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestRuntimeAPIProtocol drives the Runtime API server by hand: state checks
// (403 out of order, 400 unknown id), chunked bodies with error trailers, the
// size limit and /init/error after init.
func TestRuntimeAPIProtocol(t *testing.T) {
	s, err := newAPIServer(slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	base := "http://" + s.addr() + "/2018-06-01/runtime"
	post := func(path string, body io.Reader, trailer http.Header) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, base+path, body)
		req.Trailer = trailer
		if trailer != nil {
			req.ContentLength = -1
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	next := func() *http.Response {
		t.Helper()
		resp, err := http.Get(base + "/invocation/next")
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	send := func(id string) *invocation {
		inv := &invocation{id: id, event: []byte(`{"n":1}`), deadline: time.Now().Add(time.Minute),
			arn: functionARN("fn"), traceID: "Root=1-x", done: make(chan apiResult, 1)}
		go func() {
			select {
			case s.events <- inv:
			case <-time.After(20 * time.Second):
			}
		}()
		return inv
	}

	// Before any event: answers are out of order.
	if c := post("/invocation/nope/response", strings.NewReader("{}"), nil); c != http.StatusForbidden {
		t.Errorf("response before next: %d, want 403", c)
	}
	if c := post("/init/error", strings.NewReader(`{"errorMessage":"m","errorType":"T"}`), nil); c != http.StatusAccepted {
		t.Errorf("init/error during init: %d, want 202", c)
	}
	if doc := <-s.initErr; doc.ErrorType != "T" || doc.ErrorMessage != "m" {
		t.Errorf("init error %+v", doc)
	}

	inv := send("id-1")
	resp := next()
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != `{"n":1}` || resp.Header.Get(hdrRequestID) != "id-1" ||
		resp.Header.Get(hdrFunctionARN) != "arn:aws:lambda:local:000000000000:function:fn" ||
		resp.Header.Get(hdrDeadline) == "" || resp.Header.Get(hdrTraceID) != "Root=1-x" {
		t.Fatalf("next: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	if c := post("/init/error", strings.NewReader("{}"), nil); c != http.StatusForbidden {
		t.Errorf("init/error after init: %d, want 403", c)
	}
	if c := post("/invocation/other/response", strings.NewReader("{}"), nil); c != http.StatusBadRequest {
		t.Errorf("unknown id: %d, want 400", c)
	}
	// A chunked response whose trailers report an error mid-stream.
	errBody := base64.StdEncoding.EncodeToString([]byte(`{"errorMessage":"half way","errorType":"Stream.Broke"}`))
	tr := http.Header{hdrErrorType: nil, hdrErrorBody: nil}
	pr, pw := io.Pipe()
	go func() {
		_, _ = pw.Write([]byte(`{"partial":`))
		tr.Set(hdrErrorType, "Stream.Broke")
		tr.Set(hdrErrorBody, errBody)
		pw.Close()
	}()
	if c := post("/invocation/id-1/response", pr, tr); c != http.StatusAccepted {
		t.Fatalf("chunked response: %d, want 202", c)
	}
	if res := <-inv.done; res.fnErr == nil || res.fnErr.ErrorType != "Stream.Broke" || res.fnErr.ErrorMessage != "half way" {
		t.Errorf("trailer error: %+v", res)
	}
	if c := post("/invocation/id-1/response", strings.NewReader("{}"), nil); c != http.StatusForbidden {
		t.Errorf("second answer: %d, want 403", c)
	}

	// A chunked response without error trailers is the result.
	inv = send("id-2")
	next().Body.Close()
	if c := post("/invocation/id-2/response", io.MultiReader(strings.NewReader(`{"ok":`), strings.NewReader(`true}`)),
		http.Header{hdrErrorType: nil}); c != http.StatusAccepted {
		t.Fatalf("chunked response: %d", c)
	}
	if res := <-inv.done; string(res.body) != `{"ok":true}` || res.fnErr != nil {
		t.Errorf("chunked result: %+v", res)
	}

	// /error: the type comes from the body, or from the header.
	inv = send("id-3")
	next().Body.Close()
	req, _ := http.NewRequest(http.MethodPost, base+"/invocation/id-3/error", strings.NewReader(`not json`))
	req.Header.Set(hdrErrorType, "Hdr.Type")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("error post: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	if res := <-inv.done; res.fnErr == nil || res.fnErr.ErrorType != "Hdr.Type" || res.fnErr.ErrorMessage != "not json" {
		t.Errorf("error result: %+v", res.fnErr)
	}

	// Over 6 MiB: 413, and the invocation fails with a clear error.
	inv = send("id-4")
	next().Body.Close()
	if c := post("/invocation/id-4/response", bytes.NewReader(make([]byte, maxPayload+1)), nil); c != http.StatusRequestEntityTooLarge {
		t.Errorf("large response: %d, want 413", c)
	}
	if res := <-inv.done; res.fnErr == nil || res.fnErr.ErrorType != "Function.ResponseSizeTooLarge" {
		t.Errorf("large result: %+v", res.fnErr)
	}

	// Asking for the next event without answering abandons the one in hand.
	inv = send("id-5")
	next().Body.Close()
	go func() {
		r, err := http.Get(base + "/invocation/next")
		if err == nil {
			r.Body.Close()
		}
	}()
	if res := <-inv.done; !strings.Contains(res.protoErr, "without answering") {
		t.Errorf("abandoned: %+v", res)
	}
	// Closing the server releases the blocked /next.
	s.close()
}
