package objects

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbusfn/nimbus/internal/bus"
)

type env struct {
	bus *bus.Bus
	svc *Service
	srv *httptest.Server
}

func newEnv(t testing.TB, cfg Config) *env {
	t.Helper()
	ctx := context.Background()
	b, err := bus.Open(ctx, bus.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	cfg.Bus = b
	svc := New(cfg)
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	svc.Routes(mux, func(r *http.Request) string { return r.Header.Get("X-Tenant") })
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &env{bus: b, svc: svc, srv: srv}
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (e *env) do(t testing.TB, tenant, method, path string, body []byte, hdr ...string) resp {
	t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Tenant", tenant)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return resp{r.StatusCode, r.Header, b}
}

func expect(t testing.TB, r resp, status int, code string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
	if code != "" && !strings.Contains(string(r.body), `"code":"`+code+`"`) {
		t.Fatalf("body %s lacks code %q", r.body, code)
	}
}

func md5hex(b []byte) string { s := md5.Sum(b); return hex.EncodeToString(s[:]) }

func TestParseRange(t *testing.T) {
	for _, c := range []struct {
		h             string
		size          int64
		start, length int64
		err           error
	}{
		{"bytes=0-9", 100, 0, 10, nil},
		{"bytes=90-", 100, 90, 10, nil},
		{"bytes=-5", 100, 95, 5, nil},
		{"bytes=-500", 100, 0, 100, nil},
		{"bytes=50-1000", 100, 50, 50, nil},
		{"bytes=100-", 100, 0, 0, ErrInvalidRange},
		{"bytes=200-300", 100, 0, 0, ErrInvalidRange},
		{"bytes=-0", 100, 0, 0, ErrInvalidRange},
		{"bytes=5-1", 100, 0, 0, ErrInvalidArgument},
		{"bytes=0-1,3-4", 100, 0, 0, ErrInvalidArgument},
		{"items=0-1", 100, 0, 0, ErrInvalidArgument},
		{"bytes=x-1", 100, 0, 0, ErrInvalidArgument},
	} {
		r, err := ParseRange(c.h)
		var start, length int64
		if err == nil {
			start, length, err = r.Resolve(c.size)
		}
		if !errors.Is(err, c.err) || (err == nil && (start != c.start || length != c.length)) {
			t.Errorf("%q on %d: %d+%d, %v; want %d+%d, %v", c.h, c.size, start, length, err, c.start, c.length, c.err)
		}
	}
}

func TestObjectsREST(t *testing.T) {
	e := newEnv(t, Config{MaxObjectBytes: 1 << 20})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	expect(t, e.do(t, "acme", "PUT", "/api/v1/objects/photos", nil), 201, "")
	expect(t, e.do(t, "acme", "PUT", "/api/v1/objects/photos", nil), 409, "conflict")
	expect(t, e.do(t, "acme", "PUT", "/api/v1/objects/Bad_Name", nil), 400, "invalid_name")

	content := bytes.Repeat([]byte("0123456789"), 30000) // 300 kB: several chunks
	r := e.do(t, "acme", "PUT", "/api/v1/objects/photos/2024/cat%20pic.jpg", content, "Content-Type", "image/jpeg", "X-Nimbus-Meta-Owner", "ada")
	expect(t, r, 200, "")
	if r.header.Get("ETag") != `"`+md5hex(content)+`"` {
		t.Fatalf("etag %q, want md5 %s", r.header.Get("ETag"), md5hex(content))
	}
	r = e.do(t, "acme", "GET", "/api/v1/objects/photos/2024/cat%20pic.jpg", nil)
	expect(t, r, 200, "")
	if !bytes.Equal(r.body, content) || r.header.Get("Content-Type") != "image/jpeg" || r.header.Get("X-Nimbus-Meta-Owner") != "ada" {
		t.Fatalf("got %d bytes, headers %v", len(r.body), r.header)
	}
	r = e.do(t, "acme", "HEAD", "/api/v1/objects/photos/2024/cat%20pic.jpg", nil)
	if r.status != 200 || r.header.Get("Content-Length") != fmt.Sprint(len(content)) || len(r.body) != 0 {
		t.Fatalf("HEAD %d %v", r.status, r.header)
	}
	// Ranges, including one that crosses a chunk boundary.
	for h, want := range map[string][]byte{
		"bytes=131000-131099": content[131000:131100],
		"bytes=299990-":       content[299990:],
		"bytes=-7":            content[len(content)-7:],
	} {
		r = e.do(t, "acme", "GET", "/api/v1/objects/photos/2024/cat%20pic.jpg", nil, "Range", h)
		if r.status != 206 || !bytes.Equal(r.body, want) || r.header.Get("Content-Range") == "" {
			t.Fatalf("Range %s: %d %q %q", h, r.status, r.body, r.header.Get("Content-Range"))
		}
	}
	r = e.do(t, "acme", "GET", "/api/v1/objects/photos/2024/cat%20pic.jpg", nil, "Range", "bytes=300000-")
	expect(t, r, 416, "range_not_satisfiable")
	if r.header.Get("Content-Range") != "bytes */300000" {
		t.Fatalf("416 Content-Range %q", r.header.Get("Content-Range"))
	}

	// Bad input changes nothing.
	expect(t, e.do(t, "acme", "PUT", "/api/v1/objects/photos/2024/cat%20pic.jpg", make([]byte, 1<<20+1)), 413, "payload_too_large")
	expect(t, e.do(t, "acme", "PUT", "/api/v1/objects/photos/2024/cat%20pic.jpg", []byte("other"), "Content-MD5", base64.StdEncoding.EncodeToString(make([]byte, 16))), 400, "bad_request")
	expect(t, e.do(t, "acme", "PUT", "/api/v1/objects/photos/"+strings.Repeat("k", 1025), []byte("x")), 400, "bad_request")
	if r := e.do(t, "acme", "GET", "/api/v1/objects/photos/2024/cat%20pic.jpg", nil); !bytes.Equal(r.body, content) {
		t.Fatal("a refused upload changed the object")
	}
	// A streamed body over the limit (no Content-Length) is refused too.
	pr, pw := io.Pipe()
	go func() { _, _ = pw.Write(make([]byte, 1<<20+10)); _ = pw.Close() }()
	req, _ := http.NewRequest("PUT", e.srv.URL+"/api/v1/objects/photos/stream", pr)
	req.Header.Set("X-Tenant", "acme")
	hr, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	hr.Body.Close()
	if hr.StatusCode != 413 {
		t.Fatalf("streamed oversize upload: %d", hr.StatusCode)
	}
	expect(t, e.do(t, "acme", "GET", "/api/v1/objects/photos/stream", nil), 404, "not_found")

	// Listing.
	expect(t, e.do(t, "acme", "PUT", "/api/v1/objects/photos/2024/dog.jpg", []byte("d")), 200, "")
	expect(t, e.do(t, "acme", "PUT", "/api/v1/objects/photos/top.txt", []byte("t")), 200, "")
	r = e.do(t, "acme", "GET", "/api/v1/objects/photos?delimiter=/", nil)
	var l struct {
		Objects        []ObjectInfo
		CommonPrefixes []string `json:"common_prefixes"`
		NextCursor     string   `json:"next_cursor"`
	}
	_ = json.Unmarshal(r.body, &l)
	if len(l.Objects) != 1 || l.Objects[0].Key != "top.txt" || len(l.CommonPrefixes) != 1 || l.CommonPrefixes[0] != "2024/" {
		t.Fatalf("listing %s", r.body)
	}
	r = e.do(t, "acme", "GET", "/api/v1/objects/photos?prefix=2024/&limit=1", nil)
	_ = json.Unmarshal(r.body, &l)
	if len(l.Objects) != 1 || l.Objects[0].Key != "2024/cat pic.jpg" || l.NextCursor == "" {
		t.Fatalf("page 1 %s", r.body)
	}
	r = e.do(t, "acme", "GET", "/api/v1/objects/photos?prefix=2024/&limit=1&cursor="+l.NextCursor, nil)
	l.NextCursor = ""
	_ = json.Unmarshal(r.body, &l)
	if len(l.Objects) != 1 || l.Objects[0].Key != "2024/dog.jpg" || l.NextCursor != "" {
		t.Fatalf("page 2 %s", r.body)
	}

	// Delete, bucket emptiness, events.
	expect(t, e.do(t, "acme", "DELETE", "/api/v1/objects/photos", nil), 409, "conflict")
	expect(t, e.do(t, "acme", "DELETE", "/api/v1/objects/photos/top.txt", nil), 204, "")
	expect(t, e.do(t, "acme", "DELETE", "/api/v1/objects/photos/top.txt", nil), 404, "not_found")
	cons, err := e.bus.JS.OrderedConsumer(ctx, ChangeStream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{ChangeSubjectFor("acme", "photos")}})
	if err != nil {
		t.Fatal(err)
	}
	var evs []ChangeEvent
	for len(evs) < 4 {
		m, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
		if err != nil {
			t.Fatalf("after %d events: %v", len(evs), err)
		}
		var ev ChangeEvent
		_ = json.Unmarshal(m.Data(), &ev)
		evs = append(evs, ev)
	}
	if evs[0].Kind != "object.created" || evs[0].Key != "2024/cat pic.jpg" || evs[0].ETag != md5hex(content) || evs[0].Size != int64(len(content)) || evs[0].ContentType != "image/jpeg" ||
		evs[3].Kind != "object.deleted" || evs[3].Key != "top.txt" {
		t.Fatalf("events %+v", evs)
	}
}

func TestMultipart(t *testing.T) {
	e := newEnv(t, Config{MinPartBytes: 1000})
	ctx := context.Background()
	if _, err := e.svc.CreateBucket(ctx, "acme", "big"); err != nil {
		t.Fatal(err)
	}
	u, err := e.svc.CreateUpload(ctx, "acme", "big", "data.bin", PutOptions{ContentType: "application/x-test", Metadata: map[string]string{"Origin": "test"}})
	if err != nil {
		t.Fatal(err)
	}
	parts := [][]byte{bytes.Repeat([]byte("a"), 1500), bytes.Repeat([]byte("b"), 1200), []byte("tail")}
	etags := make([]string, 3)
	for _, i := range []int{2, 0, 1} { // out of order, like parallel clients
		p, err := e.svc.UploadPart(ctx, "acme", "big", "data.bin", u.UploadID, i+1, bytes.NewReader(parts[i]), nil)
		if err != nil {
			t.Fatal(err)
		}
		if p.ETag != md5hex(parts[i]) {
			t.Fatalf("part etag %s", p.ETag)
		}
		etags[i] = p.ETag
	}
	if ps, err := e.svc.ListParts(ctx, "acme", "big", "data.bin", u.UploadID); err != nil || len(ps) != 3 || ps[0].Number != 1 {
		t.Fatalf("parts %+v %v", ps, err)
	}
	cp := func(ns ...int) []CompletedPart {
		var out []CompletedPart
		for _, n := range ns {
			out = append(out, CompletedPart{Number: n, ETag: `"` + etags[n-1] + `"`})
		}
		return out
	}
	for _, c := range []struct {
		list []CompletedPart
		want error
	}{
		{cp(2, 1, 3), ErrInvalidPartOrder},
		{cp(1, 1, 3), ErrInvalidPartOrder},
		{append(cp(1, 2), CompletedPart{Number: 4, ETag: etags[2]}), ErrInvalidPart},
		{append(cp(1, 2), CompletedPart{Number: 3, ETag: etags[0]}), ErrInvalidPart},
		{nil, ErrInvalidPart},
	} {
		if _, err := e.svc.CompleteUpload(ctx, "acme", "big", "data.bin", u.UploadID, c.list); !errors.Is(err, c.want) {
			t.Fatalf("complete %+v: %v, want %v", c.list, err, c.want)
		}
	}
	// A small part that is not the last.
	if _, err := e.svc.CompleteUpload(ctx, "acme", "big", "data.bin", u.UploadID, cp(1, 3, 2)[1:2]); err != nil {
		t.Fatalf("a single small part may complete: %v", err)
	}
	if _, err := e.svc.Head(ctx, "acme", "big", "data.bin"); err != nil {
		t.Fatal(err)
	}
	// That upload is gone now; start again for the real thing.
	if _, err := e.svc.CompleteUpload(ctx, "acme", "big", "data.bin", u.UploadID, cp(1, 2, 3)); !errors.Is(err, ErrNoSuchUpload) {
		t.Fatalf("completed upload reused: %v", err)
	}
	u, _ = e.svc.CreateUpload(ctx, "acme", "big", "data.bin", PutOptions{ContentType: "application/x-test", Metadata: map[string]string{"Origin": "test"}})
	for i := range parts {
		if _, err := e.svc.UploadPart(ctx, "acme", "big", "data.bin", u.UploadID, i+1, bytes.NewReader(parts[i]), nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.svc.CompleteUpload(ctx, "acme", "big", "data.bin", u.UploadID, []CompletedPart{{2, etags[1]}, {3, etags[2]}, {4, "x"}}); !errors.Is(err, ErrInvalidPart) {
		t.Fatalf("missing part: %v", err)
	}
	// Part 2 (1200 bytes) is not the last and below MinPartBytes 1300.
	e.svc.cfg.MinPartBytes = 1300
	if _, err := e.svc.CompleteUpload(ctx, "acme", "big", "data.bin", u.UploadID, cp(1, 2, 3)); !errors.Is(err, ErrEntityTooSmall) {
		t.Fatalf("small part: %v", err)
	}
	e.svc.cfg.MinPartBytes = 1000
	info, err := e.svc.CompleteUpload(ctx, "acme", "big", "data.bin", u.UploadID, cp(1, 2, 3))
	if err != nil {
		t.Fatal(err)
	}
	var sums []byte
	for _, p := range parts {
		s := md5.Sum(p)
		sums = append(sums, s[:]...)
	}
	if info.ETag != md5hex(sums)+"-3" || info.Size != 2704 {
		t.Fatalf("info %+v", info)
	}
	o, err := e.svc.Get(ctx, "acme", "big", "data.bin", nil)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(o.Body)
	o.Body.Close()
	if !bytes.Equal(got, bytes.Join(parts, nil)) || o.Info.ContentType != "application/x-test" || o.Info.Metadata["origin"] != "test" {
		t.Fatalf("assembled %d bytes, info %+v", len(got), o.Info)
	}
	// The parts are gone.
	if ps, err := e.svc.parts.List(ctx); err == nil && len(ps) > 0 {
		t.Fatalf("%d parts left behind", len(ps))
	}
	// Abort.
	u, _ = e.svc.CreateUpload(ctx, "acme", "big", "x", PutOptions{})
	_, _ = e.svc.UploadPart(ctx, "acme", "big", "x", u.UploadID, 1, strings.NewReader("x"), nil)
	if err := e.svc.AbortUpload(ctx, "acme", "big", "x", u.UploadID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.UploadPart(ctx, "acme", "big", "x", u.UploadID, 2, strings.NewReader("x"), nil); !errors.Is(err, ErrNoSuchUpload) {
		t.Fatalf("part after abort: %v", err)
	}
	// Another tenant cannot touch an upload.
	u, _ = e.svc.CreateUpload(ctx, "acme", "big", "y", PutOptions{})
	if _, err := e.svc.UploadPart(ctx, "other", "big", "y", u.UploadID, 1, strings.NewReader("x"), nil); !errors.Is(err, ErrNoSuchUpload) {
		t.Fatalf("other tenant's part: %v", err)
	}
}

func TestListingPagesAndIsolation(t *testing.T) {
	e := newEnv(t, Config{})
	ctx := context.Background()
	for _, tn := range []string{"alpha", "beta"} {
		if _, err := e.svc.CreateBucket(ctx, tn, "photos"); err != nil {
			t.Fatal(err)
		}
	}
	keys := []string{"a/1", "a/2", "b/1", "c", "d/x/y", "e"}
	for _, k := range keys {
		if _, err := e.svc.Put(ctx, "alpha", "photos", k, strings.NewReader(k), PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	var items []string
	after := ""
	for pages := 0; pages < 10; pages++ {
		res, err := e.svc.List(ctx, "alpha", "photos", ListOptions{Delimiter: "/", Max: 2, After: after})
		if err != nil {
			t.Fatal(err)
		}
		items = append(items, res.CommonPrefixes...)
		for _, o := range res.Objects {
			items = append(items, o.Key)
		}
		if !res.IsTruncated {
			break
		}
		after = res.NextAfter
	}
	if got := strings.Join(items, ","); got != "a/,b/,c,d/,e" && got != "a/,b/,d/,c,e" {
		t.Fatalf("items %s", got)
	}
	res, _ := e.svc.List(ctx, "beta", "photos", ListOptions{})
	if len(res.Objects) != 0 {
		t.Fatalf("beta sees %d of alpha's objects", len(res.Objects))
	}
	if _, err := e.svc.Get(ctx, "beta", "photos", "c", nil); !errors.Is(err, ErrNoSuchKey) {
		t.Fatalf("beta reads alpha's object: %v", err)
	}
	bs, _ := e.svc.ListBuckets(ctx, "gamma")
	if len(bs) != 0 {
		t.Fatalf("gamma sees %v", bs)
	}
	if _, err := e.svc.Copy(ctx, "alpha", "photos", "c", "photos", "c2", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Copy(ctx, "beta", "photos", "c", "photos", "c3", nil); !errors.Is(err, ErrNoSuchKey) {
		t.Fatalf("beta copies alpha's object: %v", err)
	}
}
