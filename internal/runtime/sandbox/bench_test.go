package sandbox

import (
	"context"
	"testing"
)

// BenchmarkStart measures Start (fork to the process running, every layer
// set up) of /bin/true, with every layer the machine gives and with the
// private file system off; the exit and clean-up are not timed.
func BenchmarkStart(b *testing.B) {
	dir := codeDir(b, "exit 0\n")
	for _, bc := range []struct {
		name  string
		fsOff bool
	}{{"all-layers", false}, {"no-private-fs", true}} {
		b.Run(bc.name, func(b *testing.B) {
			was := fsOff.Load()
			fsOff.Store(bc.fsOff)
			defer fsOff.Store(was)
			for range b.N {
				p, err := Start(context.Background(), Config{Args: []string{"/bin/true"}, Dir: dir})
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				<-p.Done()
				p.Kill()
				b.StartTimer()
			}
		})
	}
}
