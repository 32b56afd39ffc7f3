package wasm

import (
	"context"
	"encoding/binary"
	"net/http"

	"github.com/tetratelabs/wazero/api"

	"github.com/nimbusfn/nimbus/internal/hostapi"
)

// The host API half of the nimbus module (docs/ABI.md, "Host API"): kv_*,
// object_*, publish, secret_get, config_get, log_write and http_*. Each call
// runs with the invocation's context (deadline, trace) and is confined to the
// version's tenant by the hostapi.Host in its spec.

// errInternal is the host API's "the platform failed" (ABI v1 addition).
const errInternal int32 = -9

// maxOpenResponses bounds the HTTP responses one invocation holds open.
const maxOpenResponses = 16

// hostState is an instance's host API: the version's Host and the state of
// the invocation in progress. It is only touched by the instance's own
// (sequential) calls.
type hostState struct {
	h *hostapi.Host
	// inv is the invocation the state below belongs to; a call from another
	// invocation drops it (handles die with their invocation).
	inv string
	// pending keeps a value that did not fit the guest's buffer, so that the
	// retry with a bigger buffer gets the same value without a second fetch.
	pendingKey string
	pending    []byte
	resp       map[int32]*fetched
	next       int32
}

// fetched is one outbound response held for the guest.
type fetched struct {
	status int32
	header []byte // encoded header list
	body   []byte
	off    int
}

// newHostState returns the host API state of an instance whose spec offers host.
func newHostState(host any) *hostState {
	h, _ := host.(*hostapi.Host)
	return &hostState{h: h}
}

// hostCall returns the state for a host API call, or the code to fail it with.
func hostCall(ctx context.Context) (*exchange, *hostState, int32) {
	x := exchangeOf(ctx)
	if x == nil || x.req == nil {
		return nil, nil, errState
	}
	st := x.host
	if st == nil || st.h == nil {
		return nil, nil, errUnavailable
	}
	if st.inv != x.req.invocationID {
		st.inv = x.req.invocationID
		st.pendingKey, st.pending = "", nil
		st.resp = nil
	}
	return x, st, 0
}

// hostCode maps a host API error to its ABI code and reports the ones the
// function's author needs to see in the function's log.
func (st *hostState) hostCode(x *exchange, err error) int32 {
	switch hostapi.KindOf(err) {
	case hostapi.NotFound:
		return errNotFound
	case hostapi.Denied:
		st.h.Report(x.req.invocationID, err)
		return errDenied
	case hostapi.TooLarge:
		st.h.Report(x.req.invocationID, err)
		return errTooLarge
	case hostapi.BadInput:
		st.h.Report(x.req.invocationID, err)
		return errInvalid
	case hostapi.Unavailable:
		st.h.Report(x.req.invocationID, err)
		return errUnavailable
	}
	st.h.Report(x.req.invocationID, err)
	return errInternal
}

// str reads a (ptr, len) string argument.
func str(mod api.Module, ptr, length uint64) (string, bool) {
	if length == 0 {
		return "", true
	}
	b, ok := mod.Memory().Read(uint32(ptr), uint32(length))
	if !ok {
		return "", false
	}
	return string(b), true
}

// bytesArg reads a (ptr, len) byte argument as a copy.
func bytesArg(mod api.Module, ptr, length uint64) ([]byte, bool) {
	if length == 0 {
		return nil, true
	}
	b, ok := mod.Memory().Read(uint32(ptr), uint32(length))
	if !ok {
		return nil, false
	}
	return append([]byte(nil), b...), true
}

// strs reads n consecutive (ptr, len) string arguments from stack.
func strs(mod api.Module, stack []uint64, n int) ([]string, bool) {
	out := make([]string, n)
	for i := range n {
		s, ok := str(mod, stack[2*i], stack[2*i+1])
		if !ok {
			return nil, false
		}
		out[i] = s
	}
	return out, true
}

// give copies v into the guest buffer (ptr, cap) under the getter convention;
// a value that does not fit is kept as pending under key for the retry.
func (st *hostState) give(mod api.Module, stack []uint64, key string, v []byte, ptr, capacity uint64) {
	if uint64(len(v)) > 1<<31-1 {
		i32(stack, errTooLarge)
		return
	}
	if uint64(len(v)) > capacity {
		st.pendingKey, st.pending = key, v
		i32(stack, int32(len(v)))
		return
	}
	st.pendingKey, st.pending = "", nil
	if len(v) > 0 && !mod.Memory().Write(uint32(ptr), v) {
		i32(stack, errBounds)
		return
	}
	i32(stack, int32(len(v)))
}

// valueGetter builds an import (n string args, then buf, cap) -> i32 that
// returns fetch(args) with the getter convention.
func valueGetter(op string, n int, fetch func(ctx context.Context, h *hostapi.Host, inv string, args []string) ([]byte, error)) api.GoModuleFunc {
	return func(ctx context.Context, mod api.Module, stack []uint64) {
		x, st, code := hostCall(ctx)
		if code != 0 {
			i32(stack, code)
			return
		}
		args, ok := strs(mod, stack, n)
		if !ok {
			i32(stack, errBounds)
			return
		}
		ptr, capacity := uint64(uint32(stack[2*n])), uint64(uint32(stack[2*n+1]))
		key := op
		for _, a := range args {
			key += "\x00" + a
		}
		if st.pendingKey == key {
			st.give(mod, stack, key, st.pending, ptr, capacity)
			return
		}
		v, err := fetch(ctx, st.h, x.req.invocationID, args)
		if err != nil {
			i32(stack, st.hostCode(x, err))
			return
		}
		st.give(mod, stack, key, v, ptr, capacity)
	}
}

// encodeKeys encodes a key list: u32 count, then per key u32 length and bytes.
func encodeKeys(keys []string) []byte {
	n := 4
	for _, k := range keys {
		n += 4 + len(k)
	}
	b := make([]byte, 0, n)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(keys)))
	for _, k := range keys {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(k)))
		b = append(b, k...)
	}
	return b
}

func kvGet(ctx context.Context, h *hostapi.Host, _ string, a []string) ([]byte, error) {
	return h.KVGet(ctx, a[0], a[1])
}

func kvList(ctx context.Context, h *hostapi.Host, _ string, a []string) ([]byte, error) {
	keys, err := h.KVList(ctx, a[0], a[1])
	return encodeKeys(keys), err
}

func objectGet(ctx context.Context, h *hostapi.Host, _ string, a []string) ([]byte, error) {
	o, err := h.ObjectGet(ctx, a[0], a[1])
	return o.Data, err
}

func objectList(ctx context.Context, h *hostapi.Host, _ string, a []string) ([]byte, error) {
	keys, err := h.ObjectList(ctx, a[0], a[1])
	return encodeKeys(keys), err
}

func secretGet(ctx context.Context, h *hostapi.Host, _ string, a []string) ([]byte, error) {
	v, err := h.Secret(ctx, a[0])
	return []byte(v), err
}

func configGet(_ context.Context, h *hostapi.Host, _ string, a []string) ([]byte, error) {
	v, err := h.Config(a[0])
	return []byte(v), err
}

// kv_put(bucket, key, value) -> 0
func hostKVPut(ctx context.Context, mod api.Module, stack []uint64) {
	x, st, code := hostCall(ctx)
	if code != 0 {
		i32(stack, code)
		return
	}
	a, ok := strs(mod, stack, 2)
	v, ok2 := bytesArg(mod, stack[4], stack[5])
	if !ok || !ok2 {
		i32(stack, errBounds)
		return
	}
	if _, err := st.h.KVPut(ctx, a[0], a[1], v); err != nil {
		i32(stack, st.hostCode(x, err))
		return
	}
	i32(stack, 0)
}

// kv_delete(bucket, key) -> 0
func hostKVDelete(ctx context.Context, mod api.Module, stack []uint64) {
	x, st, code := hostCall(ctx)
	if code != 0 {
		i32(stack, code)
		return
	}
	a, ok := strs(mod, stack, 2)
	if !ok {
		i32(stack, errBounds)
		return
	}
	if err := st.h.KVDelete(ctx, a[0], a[1]); err != nil {
		i32(stack, st.hostCode(x, err))
		return
	}
	i32(stack, 0)
}

// object_put(bucket, key, content_type, data) -> 0
func hostObjectPut(ctx context.Context, mod api.Module, stack []uint64) {
	x, st, code := hostCall(ctx)
	if code != 0 {
		i32(stack, code)
		return
	}
	a, ok := strs(mod, stack, 3)
	if !ok {
		i32(stack, errBounds)
		return
	}
	if int64(uint32(stack[7])) > st.h.Limits().MaxObjectBytes {
		i32(stack, errTooLarge)
		return
	}
	data, ok := bytesArg(mod, stack[6], stack[7])
	if !ok {
		i32(stack, errBounds)
		return
	}
	if err := st.h.ObjectPut(ctx, a[0], a[1], data, a[2]); err != nil {
		i32(stack, st.hostCode(x, err))
		return
	}
	i32(stack, 0)
}

// object_delete(bucket, key) -> 0
func hostObjectDelete(ctx context.Context, mod api.Module, stack []uint64) {
	x, st, code := hostCall(ctx)
	if code != 0 {
		i32(stack, code)
		return
	}
	a, ok := strs(mod, stack, 2)
	if !ok {
		i32(stack, errBounds)
		return
	}
	if err := st.h.ObjectDelete(ctx, a[0], a[1]); err != nil {
		i32(stack, st.hostCode(x, err))
		return
	}
	i32(stack, 0)
}

// publish(topic, type, data) -> 0
func hostPublish(ctx context.Context, mod api.Module, stack []uint64) {
	x, st, code := hostCall(ctx)
	if code != 0 {
		i32(stack, code)
		return
	}
	a, ok := strs(mod, stack, 2)
	data, ok2 := bytesArg(mod, stack[4], stack[5])
	if !ok || !ok2 {
		i32(stack, errBounds)
		return
	}
	if err := st.h.Publish(ctx, a[0], data, a[1]); err != nil {
		i32(stack, st.hostCode(x, err))
		return
	}
	i32(stack, 0)
}

// log_write(level, msg, fields) -> 0; fields is a header-list-encoded list
// of name/value pairs.
func hostLogWrite(ctx context.Context, mod api.Module, stack []uint64) {
	x, st, code := hostCall(ctx)
	if code != 0 {
		i32(stack, code)
		return
	}
	a, ok := strs(mod, stack, 2)
	raw, ok2 := bytesArg(mod, stack[4], stack[5])
	if !ok || !ok2 {
		i32(stack, errBounds)
		return
	}
	var fields map[string]string
	if len(raw) > 0 {
		fields = map[string]string{}
		if walkHeaderList(raw, func(n, v []byte) { fields[string(n)] = string(v) }) < 0 {
			i32(stack, errInvalid)
			return
		}
	}
	if err := st.h.Log(x.req.invocationID, a[0], a[1], fields); err != nil {
		i32(stack, st.hostCode(x, err))
		return
	}
	i32(stack, 0)
}

// http_request(method, url, headers, body) -> handle (> 0)
func hostHTTPRequest(ctx context.Context, mod api.Module, stack []uint64) {
	x, st, code := hostCall(ctx)
	if code != 0 {
		i32(stack, code)
		return
	}
	if len(st.resp) >= maxOpenResponses {
		st.h.Report(x.req.invocationID, &hostapi.Error{Kind: hostapi.BadInput, Op: "http_request", Message: "too many open responses: close them with http_response_close"})
		i32(stack, errState)
		return
	}
	a, ok := strs(mod, stack, 2)
	hdr, ok2 := bytesArg(mod, stack[4], stack[5])
	if int64(uint32(stack[7])) > st.h.Limits().MaxFetchRequestBytes {
		i32(stack, errTooLarge)
		return
	}
	body, ok3 := bytesArg(mod, stack[6], stack[7])
	if !ok || !ok2 || !ok3 {
		i32(stack, errBounds)
		return
	}
	req := hostapi.FetchRequest{Method: a[0], URL: a[1], Header: http.Header{}, Body: body}
	if len(hdr) > 0 && walkHeaderList(hdr, func(n, v []byte) {
		k := http.CanonicalHeaderKey(string(n))
		req.Header[k] = append(req.Header[k], string(v))
	}) < 0 {
		i32(stack, errInvalid)
		return
	}
	resp, err := st.h.Fetch(ctx, req)
	if err != nil {
		i32(stack, st.hostCode(x, err))
		return
	}
	if st.resp == nil {
		st.resp = map[int32]*fetched{}
	}
	st.next++
	if st.next <= 0 {
		st.next = 1
	}
	st.resp[st.next] = &fetched{status: int32(resp.Status), header: appendHeaderList(nil, resp.Header), body: resp.Body}
	i32(stack, st.next)
}

func (st *hostState) handle(stack []uint64) (*fetched, int32) {
	f := st.resp[api.DecodeI32(stack[0])]
	if f == nil {
		return nil, errInvalid
	}
	return f, 0
}

// http_response_status(handle) -> status
func hostHTTPStatus(ctx context.Context, _ api.Module, stack []uint64) {
	_, st, code := hostCall(ctx)
	if code != 0 {
		i32(stack, code)
		return
	}
	f, code := st.handle(stack)
	if code != 0 {
		i32(stack, code)
		return
	}
	i32(stack, f.status)
}

// http_response_headers(handle, buf, cap) -> length (getter)
func hostHTTPHeaders(ctx context.Context, mod api.Module, stack []uint64) {
	_, st, code := hostCall(ctx)
	if code != 0 {
		i32(stack, code)
		return
	}
	f, code := st.handle(stack)
	if code != 0 {
		i32(stack, code)
		return
	}
	ptr, capacity := uint32(stack[1]), uint32(stack[2])
	if uint32(len(f.header)) <= capacity && !mod.Memory().Write(ptr, f.header) {
		i32(stack, errBounds)
		return
	}
	i32(stack, int32(len(f.header)))
}

// http_response_body_read(handle, buf, cap) -> n, 0 at the end
func hostHTTPBodyRead(ctx context.Context, mod api.Module, stack []uint64) {
	_, st, code := hostCall(ctx)
	if code != 0 {
		i32(stack, code)
		return
	}
	f, code := st.handle(stack)
	if code != 0 {
		i32(stack, code)
		return
	}
	ptr, capacity := uint32(stack[1]), uint32(stack[2])
	n := min(len(f.body)-f.off, int(min(capacity, 1<<30)))
	if n > 0 {
		if !mod.Memory().Write(ptr, f.body[f.off:f.off+n]) {
			i32(stack, errBounds)
			return
		}
		f.off += n
	}
	i32(stack, int32(n))
}

// http_response_close(handle) -> 0
func hostHTTPClose(ctx context.Context, _ api.Module, stack []uint64) {
	_, st, code := hostCall(ctx)
	if code != 0 {
		i32(stack, code)
		return
	}
	if _, code := st.handle(stack); code != 0 {
		i32(stack, code)
		return
	}
	delete(st.resp, api.DecodeI32(stack[0]))
	i32(stack, 0)
}

// hostAPIFuncs lists the host API imports of the nimbus module.
func hostAPIFuncs() []hostFunc {
	ps := func(n int) []api.ValueType {
		t := make([]api.ValueType, n)
		for i := range t {
			t[i] = i32T
		}
		return t
	}
	r := []api.ValueType{i32T}
	return []hostFunc{
		{"kv_get", valueGetter("kv_get", 2, kvGet), ps(6), r},
		{"kv_put", hostKVPut, ps(6), r},
		{"kv_delete", hostKVDelete, ps(4), r},
		{"kv_list", valueGetter("kv_list", 2, kvList), ps(6), r},
		{"object_get", valueGetter("object_get", 2, objectGet), ps(6), r},
		{"object_put", hostObjectPut, ps(8), r},
		{"object_delete", hostObjectDelete, ps(4), r},
		{"object_list", valueGetter("object_list", 2, objectList), ps(6), r},
		{"publish", hostPublish, ps(6), r},
		{"secret_get", valueGetter("secret_get", 1, secretGet), ps(4), r},
		{"config_get", valueGetter("config_get", 1, configGet), ps(4), r},
		{"log_write", hostLogWrite, ps(6), r},
		{"http_request", hostHTTPRequest, ps(8), r},
		{"http_response_status", hostHTTPStatus, ps(1), r},
		{"http_response_headers", hostHTTPHeaders, ps(3), r},
		{"http_response_body_read", hostHTTPBodyRead, ps(3), r},
		{"http_response_close", hostHTTPClose, ps(1), r},
	}
}
