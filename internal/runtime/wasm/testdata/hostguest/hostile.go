package main

import (
	"fmt"
	"net/http"
	"unsafe"
)

//go:wasmimport nimbus kv_get
func rawKVGet(bucket unsafe.Pointer, bucketLen uint32, key unsafe.Pointer, keyLen uint32, buf unsafe.Pointer, capacity uint32) int32

//go:wasmimport nimbus kv_put
func rawKVPut(bucket unsafe.Pointer, bucketLen uint32, key unsafe.Pointer, keyLen uint32, val unsafe.Pointer, valLen uint32) int32

//go:wasmimport nimbus http_response_status
func rawHTTPStatus(handle int32) int32

//go:wasmimport nimbus log_write
func rawLogWrite(level unsafe.Pointer, levelLen uint32, msg unsafe.Pointer, msgLen uint32, fields unsafe.Pointer, fieldsLen uint32) int32

// hostile calls imports with arguments no SDK would pass and answers the
// codes: pointers past the end of memory, unknown handles, a malformed list.
func hostile(w http.ResponseWriter) {
	out := make([]byte, 16)
	far := unsafe.Add(unsafe.Pointer(&out[0]), 1<<31) // far past the end of memory
	b := []byte("todos")                              // holds u1/b (see the test)
	k := []byte("u1/b")
	bad := []byte{5, 0, 0, 0} // claims 5 fields, has none
	lvl := []byte("info")
	fmt.Fprintf(w, "%d %d %d %d %d",
		rawKVGet(far, 5, unsafe.Pointer(&k[0]), 4, unsafe.Pointer(&out[0]), 16),
		rawKVPut(unsafe.Pointer(&b[0]), 5, unsafe.Pointer(&k[0]), 4, far, 4096),
		rawKVGet(unsafe.Pointer(&b[0]), 5, unsafe.Pointer(&k[0]), 4, far, 1<<20),
		rawHTTPStatus(12345),
		rawLogWrite(unsafe.Pointer(&lvl[0]), 4, unsafe.Pointer(&lvl[0]), 4, unsafe.Pointer(&bad[0]), 4),
	)
}
