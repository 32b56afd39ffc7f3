//go:build !wasip1

package nimbus

import "embed"

// Source holds this SDK's own source files and go.mod, so that tools (the
// nimbus CLI) can copy the SDK into a new project. It is not part of wasm
// builds.
//
//go:embed *.go go.mod README.md
var Source embed.FS
