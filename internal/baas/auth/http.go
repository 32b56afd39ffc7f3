package auth

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/nimbusfn/nimbus/internal/apierr"
)

// Headers the gateway sets on requests to functions with auth: user (and
// strips from every incoming request, so a caller cannot forge them).
const (
	HeaderUserID     = "X-Nimbus-User-Id"
	HeaderUserEmail  = "X-Nimbus-User-Email"
	HeaderUserClaims = "X-Nimbus-User-Claims"
)

// UserHeaders are the headers the gateway strips from incoming requests.
var UserHeaders = []string{HeaderUserID, HeaderUserEmail, HeaderUserClaims}

// SetUserHeaders writes u into h as the X-Nimbus-User-* headers (claims as
// base64 of their JSON) after removing any such headers already there.
func SetUserHeaders(h http.Header, u *User) {
	for _, k := range UserHeaders {
		h.Del(k)
	}
	if u == nil {
		return
	}
	h.Set(HeaderUserID, u.ID)
	h.Set(HeaderUserEmail, u.Email)
	b, _ := json.Marshal(u.Claims)
	h.Set(HeaderUserClaims, base64.StdEncoding.EncodeToString(b))
}

// Routes mounts the end-user auth API under /auth/{tenant}/. These routes
// take no API key: apps call them from browsers and devices.
func (s *Service) Routes(mux *http.ServeMux) {
	mux.HandleFunc("POST /auth/{tenant}/signup", s.handleSignUp)
	mux.HandleFunc("POST /auth/{tenant}/login", s.handleLogIn)
	mux.HandleFunc("POST /auth/{tenant}/refresh", s.handleRefresh)
	mux.HandleFunc("POST /auth/{tenant}/logout", s.handleLogOut)
	mux.HandleFunc("POST /auth/{tenant}/password", s.handlePassword)
	mux.HandleFunc("POST /auth/{tenant}/reset", s.handleReset)
	mux.HandleFunc("POST /auth/{tenant}/reset/confirm", s.handleResetConfirm)
	mux.HandleFunc("GET /auth/{tenant}/me", s.handleMe)
	mux.HandleFunc("GET /auth/{tenant}/.well-known/jwks.json", s.handleJWKS)
}

const maxBody = 64 << 10

func decode(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return apierr.New(apierr.PayloadTooLarge, "request body is larger than %d bytes", maxBody)
		}
		if errors.Is(err, io.EOF) {
			return apierr.New(apierr.BadRequest, "request body is empty: send a JSON object")
		}
		return apierr.New(apierr.BadRequest, "request body is not valid JSON for this call: %v", err)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// clientIP is the address rate limits count against.
func (s *Service) clientIP(r *http.Request) string {
	if s.cfg.TrustForwardedFor {
		if xff := r.Header.Get("X-Forwarded-For"); xff != "" {
			first, _, _ := strings.Cut(xff, ",")
			if ip := net.ParseIP(strings.TrimSpace(first)); ip != nil {
				return ip.String()
			}
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// writeErr maps the service's errors onto the API catalog.
func (s *Service) writeErr(w http.ResponseWriter, r *http.Request, err error) {
	var ae *apierr.Error
	var bi *badInput
	var rl *RateLimitedError
	switch {
	case errors.As(err, &ae):
	case errors.As(err, &bi):
		ae = apierr.New(apierr.BadRequest, "%s", bi.msg)
	case errors.As(err, &rl):
		ae = apierr.New(apierr.TooManyRequests, "%s", rl.Error())
		secs := int(math.Ceil(rl.RetryAfter.Seconds()))
		ae.Header = http.Header{"Retry-After": {strconv.Itoa(max(secs, 1))}}
	case errors.Is(err, ErrInvalidCredentials):
		ae = apierr.New(apierr.Unauthorized, "%s", ErrInvalidCredentials.Error())
	case errors.Is(err, ErrInvalidToken):
		s.log.Debug("token refused", "path", r.URL.Path, "reason", err)
		ae = apierr.New(apierr.Unauthorized, "%s: log in again", ErrInvalidToken.Error())
	case errors.Is(err, ErrInvalidResetToken):
		ae = apierr.New(apierr.BadRequest, "%s: request a new one", ErrInvalidResetToken.Error())
	case errors.Is(err, ErrEmailTaken):
		ae = apierr.New(apierr.Conflict, "%s", ErrEmailTaken.Error())
	case errors.Is(err, ErrTenantNotFound):
		ae = apierr.New(apierr.NotFound, "no app user pool named %q", r.PathValue("tenant"))
	case errors.Is(err, r.Context().Err()):
		ae = apierr.New(apierr.Unavailable, "request cancelled")
	default:
		s.log.Error("auth request failed", "path", r.URL.Path, "err", err)
		ae = apierr.New(apierr.Internal, "internal error; see the server log")
	}
	apierr.Write(w, ae)
}

type credentials struct {
	Email    string `json:"email"`
	Password string `json:"password"`
}

func (s *Service) handleSignUp(w http.ResponseWriter, r *http.Request) {
	var in credentials
	if err := decode(w, r, &in); err != nil {
		apierr.Write(w, err)
		return
	}
	t, err := s.SignUp(r.Context(), r.PathValue("tenant"), in.Email, in.Password, s.clientIP(r))
	if err != nil {
		s.writeErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, t)
}

func (s *Service) handleLogIn(w http.ResponseWriter, r *http.Request) {
	var in credentials
	if err := decode(w, r, &in); err != nil {
		apierr.Write(w, err)
		return
	}
	t, err := s.LogIn(r.Context(), r.PathValue("tenant"), in.Email, in.Password, s.clientIP(r))
	if err != nil {
		s.writeErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, t)
}

type refreshRequest struct {
	RefreshToken string `json:"refresh_token"`
}

func (s *Service) handleRefresh(w http.ResponseWriter, r *http.Request) {
	var in refreshRequest
	if err := decode(w, r, &in); err != nil {
		apierr.Write(w, err)
		return
	}
	t, err := s.Refresh(r.Context(), r.PathValue("tenant"), in.RefreshToken)
	if err != nil {
		s.writeErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, t)
}

func (s *Service) handleLogOut(w http.ResponseWriter, r *http.Request) {
	var in refreshRequest
	if err := decode(w, r, &in); err != nil {
		apierr.Write(w, err)
		return
	}
	if err := s.LogOut(r.Context(), r.PathValue("tenant"), in.RefreshToken); err != nil {
		s.writeErr(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

type passwordRequest struct {
	OldPassword string `json:"old_password"`
	NewPassword string `json:"new_password"`
}

func (s *Service) handlePassword(w http.ResponseWriter, r *http.Request) {
	var in passwordRequest
	if err := decode(w, r, &in); err != nil {
		apierr.Write(w, err)
		return
	}
	t, err := s.ChangePassword(r.Context(), r.PathValue("tenant"), r.Header.Get("Authorization"), in.OldPassword, in.NewPassword, s.clientIP(r))
	if err != nil {
		s.writeErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, t)
}

func (s *Service) handleReset(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Email string `json:"email"`
	}
	if err := decode(w, r, &in); err != nil {
		apierr.Write(w, err)
		return
	}
	if err := s.RequestReset(r.Context(), r.PathValue("tenant"), in.Email, s.clientIP(r)); err != nil {
		s.writeErr(w, r, err)
		return
	}
	w.WriteHeader(http.StatusAccepted)
}

func (s *Service) handleResetConfirm(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Token       string `json:"token"`
		NewPassword string `json:"new_password"`
	}
	if err := decode(w, r, &in); err != nil {
		apierr.Write(w, err)
		return
	}
	if err := s.ConfirmReset(r.Context(), r.PathValue("tenant"), in.Token, in.NewPassword, s.clientIP(r)); err != nil {
		s.writeErr(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Service) handleMe(w http.ResponseWriter, r *http.Request) {
	u, err := s.Me(r.Context(), r.PathValue("tenant"), r.Header.Get("Authorization"))
	if err != nil {
		s.writeErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, u)
}

func (s *Service) handleJWKS(w http.ResponseWriter, r *http.Request) {
	tenant := r.PathValue("tenant")
	if err := s.checkTenant(tenant); err != nil {
		s.writeErr(w, r, err)
		return
	}
	doc, err := s.JWKS(r.Context(), tenant)
	if err != nil {
		s.writeErr(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/jwk-set+json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	_, _ = w.Write(doc)
}
