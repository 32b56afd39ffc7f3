// Command nimbus is the Nimbus server and its command-line client.
package main

import (
	"os"

	"github.com/nimbusfn/nimbus/internal/cli"
)

func main() { os.Exit(cli.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)) }
