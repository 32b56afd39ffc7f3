//go:build wasip1

package nimbus

import "unsafe"

// Imports from the "nimbus" host module, ABI v1 (docs/ABI.md).

// request_head returns the whole request head in one call; the single-value
// getters (request_method, request_path, …) stay in the ABI for other guests.
//
//go:wasmimport nimbus request_head
func requestHead(buf unsafe.Pointer, capacity uint32) int32

//go:wasmimport nimbus request_body_read
func requestBodyRead(buf unsafe.Pointer, capacity uint32) int32

//go:wasmimport nimbus response_set_status
func responseSetStatus(status int32) int32

//go:wasmimport nimbus response_set_headers
func responseSetHeaders(buf unsafe.Pointer, length uint32) int32

//go:wasmimport nimbus response_body_write
func responseBodyWrite(buf unsafe.Pointer, length uint32) int32

// Exports the host looks for.

// nimbusABIVersion1 declares that this module speaks Nimbus ABI v1. It is
// never called.
//
//go:wasmexport nimbus_abi_version_1
func nimbusABIVersion1() {}

// nimbusInit runs the program's main (which calls Handle) once, right after
// the WASI reactor's _initialize: in a c-shared build Go runs the package
// initialisers but not main.main.
//
//go:wasmexport nimbus_init
func nimbusInit() int32 {
	if handler == nil {
		mainMain()
	}
	if handler == nil {
		println("nimbus: main returned without calling nimbus.Handle")
		return 1
	}
	return 0
}

// nimbusHandle serves the request the host holds.
//
//go:wasmexport nimbus_handle
func nimbusHandle() int32 {
	return serve()
}

// mainMain is the program's main.main.
//
//go:linkname mainMain main.main
func mainMain()
