package server

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/nimbusfn/nimbus/internal/apierr"
)

// loadAdminKey reads DataDir/admin.key, creating it (mode 0600) on first start.
func (s *Server) loadAdminKey() error {
	p := filepath.Join(s.cfg.DataDir, "admin.key")
	if b, err := os.ReadFile(p); err == nil {
		s.adminKey = strings.TrimSpace(string(b))
		if s.adminKey != "" {
			return nil
		}
	}
	var raw [24]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return err
	}
	s.adminKey = "nmb_admin_" + hex.EncodeToString(raw[:])
	if err := os.WriteFile(p, []byte(s.adminKey+"\n"), 0o600); err != nil {
		return fmt.Errorf("writing the admin key: %w", err)
	}
	s.log.Info("created the admin API key", "file", p)
	return nil
}

// authenticate requires the admin key on /api/* from anywhere but loopback.
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/api/") && !isLoopback(r.RemoteAddr) {
			tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok || subtle.ConstantTimeCompare([]byte(tok), []byte(s.adminKey)) != 1 {
				apierr.Write(w, apierr.New(apierr.Unauthorized, "this API needs an API key: send Authorization: Bearer <key> (the admin key is in the server's data dir, admin.key)"))
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

func isLoopback(remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
