// Command bench measures Nimbus against its baselines in one run, with one load
// generator, and prints the ratios:
//
//	go run ./bench                 # all suites
//	go run ./bench -suite warm     # one suite: warm, cold, burst, memory
//
// Every suite starts a real Nimbus (embedded JetStream in a temp dir) on
// loopback. Results go to stdout as a Markdown table; bench/README.md records
// them with the machine they came from.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/nimbusfn/nimbus/internal/server"
)

var (
	suite    = flag.String("suite", "all", "suites to run: all or a comma list of warm, cold, burst, memory")
	duration = flag.Duration("d", 5*time.Second, "load duration per measurement")
	conns    = flag.Int("c", 16, "concurrent connections for throughput runs")
	segment  = flag.Duration("seg", 500*time.Millisecond, "overhead suite: length of each variant's segment in a round; -d / -seg rounds (at least 8)")
	cpuProf  = flag.String("cpuprofile", "", "warm and overhead suites: after the measurement, load each server alone once more and write a CPU profile of that run (server and load generator) to this file (warm: FILE and FILE.bare; overhead: FILE.0 … FILE.4 in the order of its table)")
)

func main() {
	flag.Parse()
	fmt.Printf("# Nimbus benchmarks — %s, %s/%s, %d CPUs, %s\n\n", time.Now().UTC().Format("2006-01-02"), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version())
	want := func(s string) bool { return *suite == "all" || strings.Contains(","+*suite+",", ","+s+",") }
	for _, s := range suites {
		if want(s.name) {
			fmt.Printf("## %s\n\n", s.title)
			if err := s.run(); err != nil {
				fmt.Fprintf(os.Stderr, "%s: %v\n", s.name, err)
				os.Exit(1)
			}
			fmt.Println()
		}
	}
}

type benchSuite struct {
	name, title string
	run         func() error
}

var suites []benchSuite

func addSuite(name, title string, run func() error) {
	suites = append(suites, benchSuite{name, title, run})
}

// startNimbus runs a server in a temp dir on a free port.
func startNimbus(mutate ...func(*server.Config)) (*server.Server, func(), error) {
	dir, err := os.MkdirTemp("", "nimbus-bench-")
	if err != nil {
		return nil, nil, err
	}
	cfg := server.Config{Listen: "127.0.0.1:0", DataDir: dir, Node: "bench", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for _, m := range mutate {
		m(&cfg)
	}
	s, err := server.New(cfg)
	if err != nil {
		return nil, nil, err
	}
	if err := s.Start(context.Background()); err != nil {
		return nil, nil, err
	}
	return s, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = s.Stop(ctx)
		_ = os.RemoveAll(dir)
	}, nil
}

func runtimeGC() { runtime.GC() }
