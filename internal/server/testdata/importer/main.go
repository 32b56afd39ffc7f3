// Command importer imports a host function that Nimbus does not provide.
package main

//go:wasmimport env launch_missiles
func launchMissiles() int32

func main() { println(launchMissiles()) }
