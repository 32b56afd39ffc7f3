//go:build !wasip1

package nimbus

import (
	"context"
	"errors"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// Handle serves h over HTTP on 127.0.0.1:$PORT (8080 when PORT is unset;
// NIMBUS_ADDR, when set, is the whole listen address) until SIGINT or SIGTERM,
// then lets requests in flight finish and returns. It exits the program if the
// server cannot listen.
func Handle(h http.Handler) {
	if h == nil {
		panic("nimbus: Handle called with a nil handler")
	}
	addr := os.Getenv("NIMBUS_ADDR")
	if addr == "" {
		port := os.Getenv("PORT")
		if port == "" {
			port = "8080"
		}
		addr = "127.0.0.1:" + port
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv := &http.Server{Addr: addr, Handler: withCallInfo(h), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	select {
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			log.Fatalf("nimbus: serving on %s: %v", addr, err)
		}
	case <-ctx.Done():
		shutdown, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}
}
