package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/nimbusfn/nimbus/internal/baas/kv"
	"github.com/nimbusfn/nimbus/internal/baas/objects"
	"github.com/nimbusfn/nimbus/internal/compat/s3"
)

// startStorage starts app data (KV), object storage and, when asked, the
// S3-compatible API on its own listener (so bucket names never collide with
// Nimbus routes).
func (s *Server) startStorage(ctx context.Context, mux *http.ServeMux) error {
	s.KV = kv.New(kv.Config{Bus: s.Bus, Logger: s.cfg.Logger})
	if err := s.KV.Start(ctx); err != nil {
		return err
	}
	s.onStop(s.KV.Stop)
	s.KV.Routes(mux, tenantOf)

	s.Objects = objects.New(objects.Config{Bus: s.Bus, Logger: s.cfg.Logger})
	if err := s.Objects.Start(ctx); err != nil {
		return err
	}
	s.onStop(s.Objects.Stop)
	s.Objects.Routes(mux, tenantOf)

	kek, err := s.Tenants.DeriveKey("s3-credentials")
	if err != nil {
		return err
	}
	creds, err := s3.NewKVCredentials(ctx, s.Bus, kek)
	if err != nil {
		return err
	}
	s3url := ""
	var ln net.Listener
	if s.cfg.S3Listen != "" {
		ln, err = net.Listen("tcp", s.cfg.S3Listen)
		if err != nil {
			return fmt.Errorf("S3 API: listen on %s: %w", s.cfg.S3Listen, err)
		}
		s3url = "http://" + ln.Addr().String()
		s.s3Addr = ln.Addr().String()
	}
	srv := s3.New(s3.Config{Objects: s.Objects, Credentials: creds, Region: "us-east-1", S3URL: s3url, Logger: s.cfg.Logger})
	srv.Routes(mux, tenantOf)
	if ln != nil {
		hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: 64 << 10}
		go func() {
			if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.log.Error("S3 API stopped", "err", err)
			}
		}()
		s.onStop(hs.Shutdown)
		s.log.Info("S3-compatible API is up", "url", s3url)
	}
	return nil
}

// S3URL is the S3 API's base URL, or "" when it is off.
func (s *Server) S3URL() string {
	if s.s3Addr == "" {
		return ""
	}
	return "http://" + s.s3Addr
}
