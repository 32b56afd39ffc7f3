//go:build wasip1

package nimbus

import (
	"context"
	"encoding/binary"
	"net/http"
	"strconv"
	"unsafe"
)

// Host API imports of the "nimbus" module (docs/ABI.md, "Host API"). Every
// (ptr, len) pair is a string or byte argument; getters take (buf, cap) last.

//go:wasmimport nimbus kv_get
func kvGet(bucket unsafe.Pointer, bucketLen uint32, key unsafe.Pointer, keyLen uint32, buf unsafe.Pointer, capacity uint32) int32

//go:wasmimport nimbus kv_put
func kvPut(bucket unsafe.Pointer, bucketLen uint32, key unsafe.Pointer, keyLen uint32, val unsafe.Pointer, valLen uint32) int32

//go:wasmimport nimbus kv_delete
func kvDelete(bucket unsafe.Pointer, bucketLen uint32, key unsafe.Pointer, keyLen uint32) int32

//go:wasmimport nimbus kv_list
func kvList(bucket unsafe.Pointer, bucketLen uint32, prefix unsafe.Pointer, prefixLen uint32, buf unsafe.Pointer, capacity uint32) int32

//go:wasmimport nimbus object_get
func objectGet(bucket unsafe.Pointer, bucketLen uint32, key unsafe.Pointer, keyLen uint32, buf unsafe.Pointer, capacity uint32) int32

//go:wasmimport nimbus object_put
func objectPut(bucket unsafe.Pointer, bucketLen uint32, key unsafe.Pointer, keyLen uint32, ctype unsafe.Pointer, ctypeLen uint32, data unsafe.Pointer, dataLen uint32) int32

//go:wasmimport nimbus object_delete
func objectDelete(bucket unsafe.Pointer, bucketLen uint32, key unsafe.Pointer, keyLen uint32) int32

//go:wasmimport nimbus object_list
func objectList(bucket unsafe.Pointer, bucketLen uint32, prefix unsafe.Pointer, prefixLen uint32, buf unsafe.Pointer, capacity uint32) int32

//go:wasmimport nimbus publish
func publish(topic unsafe.Pointer, topicLen uint32, typ unsafe.Pointer, typLen uint32, data unsafe.Pointer, dataLen uint32) int32

//go:wasmimport nimbus secret_get
func secretGet(name unsafe.Pointer, nameLen uint32, buf unsafe.Pointer, capacity uint32) int32

//go:wasmimport nimbus config_get
func configGet(name unsafe.Pointer, nameLen uint32, buf unsafe.Pointer, capacity uint32) int32

//go:wasmimport nimbus log_write
func logWrite(level unsafe.Pointer, levelLen uint32, msg unsafe.Pointer, msgLen uint32, fields unsafe.Pointer, fieldsLen uint32) int32

//go:wasmimport nimbus http_request
func httpRequest(method unsafe.Pointer, methodLen uint32, url unsafe.Pointer, urlLen uint32, headers unsafe.Pointer, headersLen uint32, body unsafe.Pointer, bodyLen uint32) int32

//go:wasmimport nimbus http_response_status
func httpResponseStatus(handle int32) int32

//go:wasmimport nimbus http_response_headers
func httpResponseHeaders(handle int32, buf unsafe.Pointer, capacity uint32) int32

//go:wasmimport nimbus http_response_body_read
func httpResponseBodyRead(handle int32, buf unsafe.Pointer, capacity uint32) int32

//go:wasmimport nimbus http_response_close
func httpResponseClose(handle int32) int32

const (
	errNotFound    = -6
	errDenied      = -7
	errUnavailable = -8
	errInternal    = -9
)

// codeErr maps an import's negative result to the SDK's errors.
func codeErr(op, what string, code int32) error {
	var err error
	switch code {
	case errNotFound:
		err = ErrNotFound
	case errDenied:
		err = ErrDenied
	case errUnavailable:
		err = ErrUnavailable
	case errTooLarge:
		err = ErrTooLarge
	case errInvalid, errBounds:
		err = ErrInvalid
	case errState:
		return hostErr(op, what, abiError("call", code))
	default:
		err = ErrHost
	}
	if code != errNotFound && code != errDenied && code != errUnavailable && code != errTooLarge && code != errInvalid && code != errBounds && code != errInternal {
		return hostErr(op, what+" (code "+strconv.Itoa(int(code))+")", err)
	}
	return hostErr(op, what, err)
}

func sp(s string) (unsafe.Pointer, uint32) {
	return unsafe.Pointer(unsafe.StringData(s)), uint32(len(s))
}

func bp(b []byte) (unsafe.Pointer, uint32) {
	return unsafe.Pointer(unsafe.SliceData(b)), uint32(len(b))
}

// fetchValue calls a getter import until the value fits and returns a copy
// owned by the caller.
func fetchValue(call func(buf unsafe.Pointer, capacity uint32) int32) ([]byte, int32) {
	buf := make([]byte, 1024)
	for {
		n := call(bp(buf))
		if n < 0 {
			return nil, n
		}
		if int(n) <= len(buf) {
			return buf[:n], 0
		}
		buf = make([]byte, n)
	}
}

func quote(parts ...string) string {
	s := ""
	for i, p := range parts {
		if i > 0 {
			s += " "
		}
		s += strconv.Quote(p)
	}
	return s
}

func hostKVGet(_ context.Context, bucket, key string) ([]byte, error) {
	b, bl := sp(bucket)
	k, kl := sp(key)
	v, code := fetchValue(func(buf unsafe.Pointer, c uint32) int32 { return kvGet(b, bl, k, kl, buf, c) })
	if code < 0 {
		return nil, codeErr("kv get", quote(bucket, key), code)
	}
	return v, nil
}

func hostKVPut(_ context.Context, bucket, key string, value []byte) error {
	b, bl := sp(bucket)
	k, kl := sp(key)
	v, vl := bp(value)
	if code := kvPut(b, bl, k, kl, v, vl); code < 0 {
		return codeErr("kv put", quote(bucket, key), code)
	}
	return nil
}

func hostKVDelete(_ context.Context, bucket, key string) error {
	b, bl := sp(bucket)
	k, kl := sp(key)
	if code := kvDelete(b, bl, k, kl); code < 0 {
		return codeErr("kv delete", quote(bucket, key), code)
	}
	return nil
}

// decodeKeys decodes a key list: u32 count, then per key u32 length and bytes.
func decodeKeys(b []byte) ([]string, bool) {
	if len(b) < 4 {
		return nil, false
	}
	n := binary.LittleEndian.Uint32(b)
	b = b[4:]
	keys := make([]string, 0, min(n, 1<<16))
	for range n {
		if len(b) < 4 {
			return nil, false
		}
		l := binary.LittleEndian.Uint32(b)
		b = b[4:]
		if uint64(l) > uint64(len(b)) {
			return nil, false
		}
		keys = append(keys, string(b[:l]))
		b = b[l:]
	}
	return keys, len(b) == 0
}

func listKeys(op, bucket, prefix string, imp func(b unsafe.Pointer, bl uint32, p unsafe.Pointer, pl uint32, buf unsafe.Pointer, c uint32) int32) ([]string, error) {
	b, bl := sp(bucket)
	p, pl := sp(prefix)
	v, code := fetchValue(func(buf unsafe.Pointer, c uint32) int32 { return imp(b, bl, p, pl, buf, c) })
	if code < 0 {
		return nil, codeErr(op, quote(bucket, prefix), code)
	}
	keys, ok := decodeKeys(v)
	if !ok {
		return nil, hostErr(op, quote(bucket), errHeaderList)
	}
	return keys, nil
}

func hostKVList(_ context.Context, bucket, prefix string) ([]string, error) {
	return listKeys("kv list", bucket, prefix, kvList)
}

func hostObjectGet(_ context.Context, bucket, key string) ([]byte, error) {
	b, bl := sp(bucket)
	k, kl := sp(key)
	v, code := fetchValue(func(buf unsafe.Pointer, c uint32) int32 { return objectGet(b, bl, k, kl, buf, c) })
	if code < 0 {
		return nil, codeErr("object get", quote(bucket, key), code)
	}
	return v, nil
}

func hostObjectPut(_ context.Context, bucket, key, contentType string, data []byte) error {
	b, bl := sp(bucket)
	k, kl := sp(key)
	t, tl := sp(contentType)
	d, dl := bp(data)
	if code := objectPut(b, bl, k, kl, t, tl, d, dl); code < 0 {
		return codeErr("object put", quote(bucket, key), code)
	}
	return nil
}

func hostObjectDelete(_ context.Context, bucket, key string) error {
	b, bl := sp(bucket)
	k, kl := sp(key)
	if code := objectDelete(b, bl, k, kl); code < 0 {
		return codeErr("object delete", quote(bucket, key), code)
	}
	return nil
}

func hostObjectList(_ context.Context, bucket, prefix string) ([]string, error) {
	return listKeys("object list", bucket, prefix, objectList)
}

func hostPublish(_ context.Context, topic, eventType string, data []byte) error {
	t, tl := sp(topic)
	e, el := sp(eventType)
	d, dl := bp(data)
	if code := publish(t, tl, e, el, d, dl); code < 0 {
		return codeErr("publish", quote(topic), code)
	}
	return nil
}

func hostSecret(name string) (string, error) {
	n, nl := sp(name)
	v, code := fetchValue(func(buf unsafe.Pointer, c uint32) int32 { return secretGet(n, nl, buf, c) })
	if code < 0 {
		return "", codeErr("secret", quote(name), code)
	}
	return string(v), nil
}

func hostConfig(name string) (string, error) {
	n, nl := sp(name)
	v, code := fetchValue(func(buf unsafe.Pointer, c uint32) int32 { return configGet(n, nl, buf, c) })
	if code < 0 {
		return "", codeErr("config", quote(name), code)
	}
	return string(v), nil
}

func hostLog(level, msg string, fields map[string]string) error {
	var enc []byte
	if len(fields) > 0 {
		enc = binary.LittleEndian.AppendUint32(nil, uint32(len(fields)))
		for _, k := range sortedKeys(fields) {
			v := fields[k]
			enc = binary.LittleEndian.AppendUint32(enc, uint32(len(k)))
			enc = binary.LittleEndian.AppendUint32(enc, uint32(len(v)))
			enc = append(enc, k...)
			enc = append(enc, v...)
		}
	}
	l, ll := sp(level)
	m, ml := sp(msg)
	f, fl := bp(enc)
	if code := logWrite(l, ll, m, ml, f, fl); code < 0 {
		return codeErr("log", "", code)
	}
	return nil
}

func hostFetch(_ context.Context, method, url string, h http.Header, body []byte) (*http.Response, error) {
	enc := appendHeaderList(nil, h)
	m, ml := sp(method)
	u, ul := sp(url)
	e, el := bp(enc)
	b, bl := bp(body)
	handle := httpRequest(m, ml, u, ul, e, el, b, bl)
	if handle < 0 {
		return nil, codeErr("http", method+" "+url, handle)
	}
	defer httpResponseClose(handle)
	status := httpResponseStatus(handle)
	if status < 0 {
		return nil, codeErr("http", method+" "+url, status)
	}
	raw, code := fetchValue(func(buf unsafe.Pointer, c uint32) int32 { return httpResponseHeaders(handle, buf, c) })
	if code < 0 {
		return nil, codeErr("http", method+" "+url, code)
	}
	header := http.Header{}
	if err := parseHeaderList(raw, header); err != nil {
		return nil, hostErr("http", method+" "+url, err)
	}
	var out []byte
	chunk := make([]byte, 32<<10)
	for {
		cp, cl := bp(chunk)
		n := httpResponseBodyRead(handle, cp, cl)
		if n < 0 {
			return nil, codeErr("http", method+" "+url, n)
		}
		if n == 0 {
			break
		}
		out = append(out, chunk[:n]...)
	}
	return newResponse(int(status), header, out), nil
}
