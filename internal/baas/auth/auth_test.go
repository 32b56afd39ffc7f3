package auth

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/nimbusfn/nimbus/internal/bus"
	"github.com/nimbusfn/nimbus/internal/tenant"
)

// env is a running auth service with a real tenant service, both on an
// embedded JetStream in a temp dir, mounted on a real HTTP server.
type env struct {
	t      testing.TB
	b      *bus.Bus
	ten    *tenant.Service
	s      *Service
	srv    *httptest.Server
	resets chan ResetToken
}

// fastArgon keeps tests quick; TestPasswordHashFormat checks the defaults.
var fastArgon = Argon2Params{Time: 1, MemoryKiB: 1024, Threads: 1}

func newEnv(t testing.TB, tweak func(*Config)) *env {
	t.Helper()
	dir := t.TempDir()
	b, err := bus.Open(context.Background(), bus.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	e := &env{t: t, b: b, resets: make(chan ResetToken, 10)}
	ctx := context.Background()
	if e.ten, err = tenant.New(tenant.Config{Bus: b, DataDir: dir, AllowLoopbackAdmin: true}); err != nil {
		t.Fatal(err)
	}
	if err := e.ten.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.ten.Stop(context.Background()) })
	if _, err := e.ten.Bootstrap(ctx, dir); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"alpha", "beta"} {
		if _, err := e.ten.CreateTenant(ctx, name, tenant.Quotas{}); err != nil {
			t.Fatal(err)
		}
	}
	kek, err := e.ten.DeriveKey("auth-signing-keys")
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Bus: b, Tenants: e.ten, KeyEncryptionKey: kek, Argon2: fastArgon, LoginPerIP: 1000, LoginPerIPBurst: 1000,
		ResetHook: func(ctx context.Context, rt ResetToken) error { e.resets <- rt; return nil }}
	if tweak != nil {
		tweak(&cfg)
	}
	e.s = e.start(cfg)
	mux := http.NewServeMux()
	e.s.Routes(mux)
	e.s.AdminRoutes(mux, e.ten)
	e.srv = httptest.NewServer(mux)
	t.Cleanup(e.srv.Close)
	return e
}

func (e *env) start(cfg Config) *Service {
	s, err := New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = s.Stop(context.Background()) })
	return s
}

type answer struct {
	code   int
	body   []byte
	header http.Header
}

func (a answer) errCode() string {
	var b struct {
		Error struct{ Code string } `json:"error"`
	}
	_ = json.Unmarshal(a.body, &b)
	return b.Error.Code
}

func (e *env) call(method, path, bearer string, in any) answer {
	e.t.Helper()
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, e.srv.URL+path, body)
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, data, resp.Header}
}

func (e *env) tokens(a answer, want int) Tokens {
	e.t.Helper()
	if a.code != want {
		e.t.Fatalf("got %d %s, want %d", a.code, a.body, want)
	}
	var t Tokens
	if err := json.Unmarshal(a.body, &t); err != nil {
		e.t.Fatal(err)
	}
	if t.AccessToken == "" || t.RefreshToken == "" || t.ExpiresIn != 900 || t.TokenType != "Bearer" {
		e.t.Fatalf("tokens = %+v", t)
	}
	return t
}

func (e *env) signUp(tenantName, email, pw string) Tokens {
	e.t.Helper()
	return e.tokens(e.call("POST", "/auth/"+tenantName+"/signup", "", credentials{email, pw}), 201)
}

func (e *env) logIn(tenantName, email, pw string) answer {
	return e.call("POST", "/auth/"+tenantName+"/login", "", credentials{email, pw})
}

func TestSignUpLogInMe(t *testing.T) {
	e := newEnv(t, nil)
	tk := e.signUp("alpha", "Ada@Example.com", "correct horse")
	if tk.User.Email != "ada@example.com" || len(tk.User.ID) != 32 {
		t.Fatalf("user = %+v", tk.User)
	}
	me := e.call("GET", "/auth/alpha/me", tk.AccessToken, nil)
	var u UserInfo
	_ = json.Unmarshal(me.body, &u)
	if me.code != 200 || u.ID != tk.User.ID || u.Email != "ada@example.com" {
		t.Fatalf("me: %d %s", me.code, me.body)
	}
	e.tokens(e.logIn("alpha", "ADA@example.com", "correct horse"), 200)
	if a := e.call("POST", "/auth/alpha/signup", "", credentials{"ada@example.com", "another pass"}); a.code != 409 || a.errCode() != "conflict" {
		t.Fatalf("duplicate: %d %s", a.code, a.body)
	}
	for _, c := range []credentials{
		{"not-an-email", "long enough"},
		{"ada@localhost", "long enough"},
		{"Ada <ada@x.org>", "long enough"},
		{"", "long enough"},
		{"bob@example.com", "short"},
		{"bob@example.com", strings.Repeat("x", MaxPasswordLen+1)},
	} {
		if a := e.call("POST", "/auth/alpha/signup", "", c); a.code != 400 || a.errCode() != "bad_request" {
			t.Errorf("signup %+v: %d %s", c, a.code, a.body)
		}
	}
	if a := e.call("POST", "/auth/alpha/signup", "", map[string]any{"email": "x@y.io", "password": "longenough", "admin": true}); a.code != 400 {
		t.Errorf("unknown field: %d", a.code)
	}
	if a := e.call("GET", "/auth/alpha/me", "", nil); a.code != 401 {
		t.Errorf("me without token: %d", a.code)
	}
	if a := e.call("POST", "/auth/ghost/signup", "", credentials{"a@b.io", "longenough"}); a.code != 404 {
		t.Errorf("unknown tenant: %d %s", a.code, a.body)
	}
	// The stored user holds an argon2id hash, not the password.
	kv, _ := e.b.JS.KeyValue(context.Background(), bus.BucketAuth)
	raw, err := kv.Get(context.Background(), userKey("alpha", tk.User.ID))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw.Value(), []byte("correct horse")) || !bytes.Contains(raw.Value(), []byte("$argon2id$v=19$")) {
		t.Fatalf("stored user: %s", raw.Value())
	}
}

func TestWrongPasswordGivesNoHint(t *testing.T) {
	e := newEnv(t, nil)
	e.signUp("alpha", "ada@example.com", "correct horse")
	wrongPw := e.logIn("alpha", "ada@example.com", "wrong horse")
	noUser := e.logIn("alpha", "nobody@example.com", "correct horse")
	if wrongPw.code != 401 || noUser.code != 401 || !bytes.Equal(wrongPw.body, noUser.body) {
		t.Fatalf("wrong password %d %s vs unknown email %d %s", wrongPw.code, wrongPw.body, noUser.code, noUser.body)
	}
}

func TestRefreshRotationAndReuse(t *testing.T) {
	e := newEnv(t, nil)
	first := e.signUp("alpha", "ada@example.com", "correct horse")
	second := e.tokens(e.call("POST", "/auth/alpha/refresh", "", refreshRequest{first.RefreshToken}), 200)
	if second.RefreshToken == first.RefreshToken {
		t.Fatal("refresh token did not rotate")
	}
	third := e.tokens(e.call("POST", "/auth/alpha/refresh", "", refreshRequest{second.RefreshToken}), 200)
	// Reusing an old token fails and revokes the family: the newest fails too.
	if a := e.call("POST", "/auth/alpha/refresh", "", refreshRequest{first.RefreshToken}); a.code != 401 {
		t.Fatalf("reuse: %d %s", a.code, a.body)
	}
	if a := e.call("POST", "/auth/alpha/refresh", "", refreshRequest{third.RefreshToken}); a.code != 401 {
		t.Fatalf("newest token after reuse: %d %s", a.code, a.body)
	}
	// Another log-in (another family) is untouched.
	other := e.tokens(e.logIn("alpha", "ada@example.com", "correct horse"), 200)
	e.tokens(e.call("POST", "/auth/alpha/refresh", "", refreshRequest{other.RefreshToken}), 200)
	for _, bad := range []string{"", "junk", strings.Repeat("a", 32) + "." + strings.Repeat("b", 43)} {
		if a := e.call("POST", "/auth/alpha/refresh", "", refreshRequest{bad}); a.code != 401 {
			t.Errorf("refresh %q: %d", bad, a.code)
		}
	}
	// The same token used twice at once: at most one wins.
	race := e.tokens(e.logIn("alpha", "ada@example.com", "correct horse"), 200)
	var wg sync.WaitGroup
	codes := make([]int, 4)
	for i := range codes {
		wg.Go(func() { codes[i] = e.call("POST", "/auth/alpha/refresh", "", refreshRequest{race.RefreshToken}).code })
	}
	wg.Wait()
	wins := 0
	for _, c := range codes {
		if c == 200 {
			wins++
		}
	}
	if wins > 1 {
		t.Fatalf("one refresh token was redeemed %d times: %v", wins, codes)
	}
}

func TestLogOut(t *testing.T) {
	e := newEnv(t, nil)
	a := e.signUp("alpha", "ada@example.com", "correct horse")
	b := e.tokens(e.logIn("alpha", "ada@example.com", "correct horse"), 200)
	if r := e.call("POST", "/auth/alpha/logout", "", refreshRequest{a.RefreshToken}); r.code != 204 {
		t.Fatalf("logout: %d %s", r.code, r.body)
	}
	if r := e.call("POST", "/auth/alpha/refresh", "", refreshRequest{a.RefreshToken}); r.code != 401 {
		t.Fatalf("refresh after logout: %d", r.code)
	}
	e.tokens(e.call("POST", "/auth/alpha/refresh", "", refreshRequest{b.RefreshToken}), 200)
	if r := e.call("POST", "/auth/alpha/logout", "", refreshRequest{"junk"}); r.code != 401 {
		t.Fatalf("logout junk: %d", r.code)
	}
}

func TestLockoutAndRateLimits(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxFailures = 3; c.LockoutPeriod = time.Minute })
	e.signUp("alpha", "ada@example.com", "correct horse")
	for i := range 3 {
		if a := e.logIn("alpha", "ada@example.com", "wrong"+strconv.Itoa(i)); a.code != 401 {
			t.Fatalf("failure %d: %d", i, a.code)
		}
	}
	// Locked: even the right password gets 429 with Retry-After.
	a := e.logIn("alpha", "ada@example.com", "correct horse")
	if a.code != 429 || a.errCode() != "too_many_requests" {
		t.Fatalf("locked: %d %s", a.code, a.body)
	}
	if ra, _ := strconv.Atoi(a.header.Get("Retry-After")); ra < 1 || ra > 60 {
		t.Fatalf("Retry-After = %q", a.header.Get("Retry-After"))
	}
	// Unknown emails lock too (so a lock does not reveal that an account exists).
	for range 3 {
		e.logIn("alpha", "ghost@example.com", "whatever1")
	}
	if a := e.logIn("alpha", "ghost@example.com", "whatever1"); a.code != 429 {
		t.Fatalf("unknown email lock: %d", a.code)
	}
	// The lock is per tenant: beta's ada is free.
	e.signUp("beta", "ada@example.com", "correct horse")
	e.tokens(e.logIn("beta", "ada@example.com", "correct horse"), 200)
	// A reset clears the lock.
	e.call("POST", "/auth/alpha/reset", "", map[string]string{"email": "ada@example.com"})
	rt := <-e.resets
	if a := e.call("POST", "/auth/alpha/reset/confirm", "", map[string]string{"token": rt.Token, "new_password": "brand new pw"}); a.code != 204 {
		t.Fatalf("confirm: %d %s", a.code, a.body)
	}
	e.tokens(e.logIn("alpha", "ada@example.com", "brand new pw"), 200)

	// Per-IP bucket: a burst of 3, then 429 whatever the email.
	ip := newEnv(t, func(c *Config) { c.LoginPerIP = 0.001; c.LoginPerIPBurst = 3 })
	for i := range 3 {
		if a := ip.logIn("alpha", fmt.Sprintf("u%d@example.com", i), "whatever1"); a.code != 401 {
			t.Fatalf("attempt %d: %d %s", i, a.code, a.body)
		}
	}
	a = ip.logIn("alpha", "u9@example.com", "whatever1")
	if a.code != 429 || a.header.Get("Retry-After") == "" {
		t.Fatalf("per-IP limit: %d %s %v", a.code, a.body, a.header)
	}
	// Per-email bucket.
	em := newEnv(t, func(c *Config) { c.LoginPerEmail = 0.001; c.LoginPerEmailBurst = 2; c.MaxFailures = 100 })
	em.logIn("alpha", "x@example.com", "whatever1")
	em.logIn("alpha", "x@example.com", "whatever1")
	if a := em.logIn("alpha", "x@example.com", "whatever1"); a.code != 429 {
		t.Fatalf("per-email limit: %d", a.code)
	}
	if a := em.logIn("alpha", "y@example.com", "whatever1"); a.code != 401 {
		t.Fatalf("other email: %d", a.code)
	}
}

func TestPasswordReset(t *testing.T) {
	e := newEnv(t, nil)
	old := e.signUp("alpha", "ada@example.com", "correct horse")
	// Unknown email: same 202, no token made.
	if a := e.call("POST", "/auth/alpha/reset", "", map[string]string{"email": "nobody@example.com"}); a.code != 202 || len(a.body) != 0 {
		t.Fatalf("reset unknown: %d %s", a.code, a.body)
	}
	a := e.call("POST", "/auth/alpha/reset", "", map[string]string{"email": "ada@example.com"})
	if a.code != 202 || len(a.body) != 0 {
		t.Fatalf("reset: %d %s", a.code, a.body)
	}
	var rt ResetToken
	select {
	case rt = <-e.resets:
	case <-time.After(10 * time.Second):
		t.Fatal("the reset hook was not called")
	}
	select {
	case extra := <-e.resets:
		t.Fatalf("hook called for an unknown email too: %+v", extra)
	default:
	}
	if rt.UserID != old.User.ID || rt.Email != "ada@example.com" || rt.Tenant != "alpha" {
		t.Fatalf("reset token = %+v", rt)
	}
	if a := e.call("POST", "/auth/alpha/reset/confirm", "", map[string]string{"token": rt.Token, "new_password": "short"}); a.code != 400 {
		t.Fatalf("short new password: %d", a.code)
	}
	bad := rt.Token[:len(rt.Token)-1] + map[bool]string{true: "0", false: "1"}[strings.HasSuffix(rt.Token, "1")]
	if a := e.call("POST", "/auth/alpha/reset/confirm", "", map[string]string{"token": bad, "new_password": "brand new pw"}); a.code != 400 {
		t.Fatalf("wrong token: %d %s", a.code, a.body)
	}
	// A token of alpha means nothing to beta.
	if a := e.call("POST", "/auth/beta/reset/confirm", "", map[string]string{"token": rt.Token, "new_password": "brand new pw"}); a.code != 400 {
		t.Fatalf("token on another tenant: %d", a.code)
	}
	if a := e.call("POST", "/auth/alpha/reset/confirm", "", map[string]string{"token": rt.Token, "new_password": "brand new pw"}); a.code != 204 {
		t.Fatalf("confirm: %d %s", a.code, a.body)
	}
	if a := e.call("POST", "/auth/alpha/reset/confirm", "", map[string]string{"token": rt.Token, "new_password": "another pw1"}); a.code != 400 {
		t.Fatalf("token reused: %d", a.code)
	}
	if a := e.logIn("alpha", "ada@example.com", "correct horse"); a.code != 401 {
		t.Fatalf("old password: %d", a.code)
	}
	e.tokens(e.logIn("alpha", "ada@example.com", "brand new pw"), 200)
	// Sessions from before the reset are over.
	if a := e.call("POST", "/auth/alpha/refresh", "", refreshRequest{old.RefreshToken}); a.code != 401 {
		t.Fatalf("old session after reset: %d", a.code)
	}
}

func TestChangePassword(t *testing.T) {
	e := newEnv(t, nil)
	old := e.signUp("alpha", "ada@example.com", "correct horse")
	if a := e.call("POST", "/auth/alpha/password", old.AccessToken, passwordRequest{"wrong horse", "new password 1"}); a.code != 400 {
		t.Fatalf("wrong old password: %d %s", a.code, a.body)
	}
	if a := e.call("POST", "/auth/alpha/password", "", passwordRequest{"correct horse", "new password 1"}); a.code != 401 {
		t.Fatalf("no token: %d", a.code)
	}
	if a := e.call("POST", "/auth/alpha/password", old.AccessToken, passwordRequest{"correct horse", "short"}); a.code != 400 {
		t.Fatalf("short: %d", a.code)
	}
	fresh := e.tokens(e.call("POST", "/auth/alpha/password", old.AccessToken, passwordRequest{"correct horse", "new password 1"}), 200)
	if a := e.call("POST", "/auth/alpha/refresh", "", refreshRequest{old.RefreshToken}); a.code != 401 {
		t.Fatalf("old session after change: %d", a.code)
	}
	e.tokens(e.call("POST", "/auth/alpha/refresh", "", refreshRequest{fresh.RefreshToken}), 200)
	if a := e.logIn("alpha", "ada@example.com", "correct horse"); a.code != 401 {
		t.Fatalf("old password: %d", a.code)
	}
	e.tokens(e.logIn("alpha", "ada@example.com", "new password 1"), 200)
}

// TestJWKSVerifiesIndependently checks an access token with nothing of this
// package: the JWKS is fetched over HTTP and the key built from its fields.
func TestJWKSVerifiesIndependently(t *testing.T) {
	e := newEnv(t, nil)
	tk := e.signUp("alpha", "ada@example.com", "correct horse")
	resp, err := http.Get(e.srv.URL + "/auth/alpha/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Type"), "json") {
		t.Fatalf("jwks: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var set struct {
		Keys []map[string]string `json:"keys"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		t.Fatal(err)
	}
	if len(set.Keys) != 1 {
		t.Fatalf("jwks = %+v", set)
	}
	jwk := set.Keys[0]
	if jwk["kty"] != "OKP" || jwk["crv"] != "Ed25519" || jwk["alg"] != "EdDSA" || jwk["use"] != "sig" || jwk["kid"] == "" {
		t.Fatalf("jwk = %v", jwk)
	}
	x, err := base64.RawURLEncoding.DecodeString(jwk["x"])
	if err != nil || len(x) != ed25519.PublicKeySize {
		t.Fatalf("jwk x: %v (%d bytes)", err, len(x))
	}
	pub := ed25519.PublicKey(x)
	claims := jwt.MapClaims{}
	tok, err := jwt.ParseWithClaims(tk.AccessToken, claims, func(tok *jwt.Token) (any, error) {
		if tok.Header["kid"] != jwk["kid"] {
			return nil, fmt.Errorf("kid %v not in the JWKS", tok.Header["kid"])
		}
		return pub, nil
	}, jwt.WithValidMethods([]string{"EdDSA"}), jwt.WithIssuer("nimbus/alpha"), jwt.WithAudience("alpha"), jwt.WithExpirationRequired())
	if err != nil || !tok.Valid {
		t.Fatalf("independent verification failed: %v", err)
	}
	if claims["sub"] != tk.User.ID || claims["email"] != "ada@example.com" || claims["jti"] == "" {
		t.Fatalf("claims = %v", claims)
	}
	exp, _ := claims.GetExpirationTime()
	iat, _ := claims.GetIssuedAt()
	if exp.Sub(iat.Time) != 15*time.Minute {
		t.Fatalf("lifetime %v, want 15m", exp.Sub(iat.Time))
	}
	// Beta's JWKS does not verify alpha's token.
	resp2, _ := http.Get(e.srv.URL + "/auth/beta/.well-known/jwks.json")
	var setB struct {
		Keys []map[string]string `json:"keys"`
	}
	_ = json.NewDecoder(resp2.Body).Decode(&setB)
	resp2.Body.Close()
	xb, _ := base64.RawURLEncoding.DecodeString(setB.Keys[0]["x"])
	if _, err := jwt.Parse(tk.AccessToken, func(*jwt.Token) (any, error) { return ed25519.PublicKey(xb), nil }); err == nil {
		t.Fatal("beta's key verified alpha's token")
	}
	if r, _ := http.Get(e.srv.URL + "/auth/ghost/.well-known/jwks.json"); r.StatusCode != 404 {
		t.Fatalf("jwks of unknown tenant: %d", r.StatusCode)
	}
}

func TestBadTokensRejected(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	tk := e.signUp("alpha", "ada@example.com", "correct horse")
	if u, err := e.s.Verify(ctx, "alpha", "Bearer "+tk.AccessToken); err != nil || u.ID != tk.User.ID || u.Email != "ada@example.com" {
		t.Fatalf("Verify good token: %+v %v", u, err)
	}
	parts := strings.Split(tk.AccessToken, ".")
	// Tampered payload: claim another user.
	var payload map[string]any
	pb, _ := base64.RawURLEncoding.DecodeString(parts[1])
	_ = json.Unmarshal(pb, &payload)
	payload["sub"] = "someone-else"
	pb, _ = json.Marshal(payload)
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString(pb) + "." + parts[2]
	// alg none.
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims(payload)).SignedString(jwt.UnsafeAllowNoneSignatureType)
	// Signed by a key of our own making, with alpha's kid.
	_, rogue, _ := ed25519.GenerateKey(nil)
	rt := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.MapClaims(payload))
	rt.Header["kid"] = strings.Split(string(mustB64(parts[0])), `"kid":"`)[1][:16]
	rogueTok, _ := rt.SignedString(rogue)
	// Expired, but properly signed.
	u, _, err := e.s.user(ctx, "alpha", tk.User.ID)
	if err != nil {
		t.Fatal(err)
	}
	expired, err := e.s.signAccess(ctx, "alpha", u, time.Now().Add(-time.Hour), 15*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for name, tok := range map[string]string{"tampered": tampered, "alg none": none, "rogue key": rogueTok, "expired": expired, "garbage": "abc.def.ghi", "empty": ""} {
		if _, err := e.s.Verify(ctx, "alpha", tok); err == nil {
			t.Errorf("%s token verified", name)
		}
		if a := e.call("GET", "/auth/alpha/me", tok, nil); a.code != 401 || a.errCode() != "unauthorized" {
			t.Errorf("%s token on /me: %d %s", name, a.code, a.body)
		}
	}
}

func mustB64(s string) []byte {
	b, _ := base64.RawURLEncoding.DecodeString(s)
	return b
}

func TestTenantsIsolated(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	a := e.signUp("alpha", "ada@example.com", "alpha password")
	// Beta cannot log in alpha's user.
	if r := e.logIn("beta", "ada@example.com", "alpha password"); r.code != 401 {
		t.Fatalf("alpha's user on beta: %d", r.code)
	}
	// The same email is a different user in beta.
	b := e.signUp("beta", "ada@example.com", "beta password")
	if a.User.ID == b.User.ID {
		t.Fatal("two tenants share a user id")
	}
	// Alpha's tokens are worthless on beta, even once cached as verified for alpha.
	for range 2 {
		if u, err := e.s.Verify(ctx, "alpha", a.AccessToken); err != nil || u.ID != a.User.ID {
			t.Fatalf("alpha's token on alpha: %+v %v", u, err)
		}
	}
	if _, err := e.s.Verify(ctx, "beta", a.AccessToken); err == nil {
		t.Fatal("alpha's token verified for beta")
	}
	if r := e.call("GET", "/auth/beta/me", a.AccessToken, nil); r.code != 401 {
		t.Fatalf("alpha's token on beta/me: %d", r.code)
	}
	if r := e.call("POST", "/auth/beta/refresh", "", refreshRequest{a.RefreshToken}); r.code != 401 {
		t.Fatalf("alpha's refresh token on beta: %d", r.code)
	}
	if r := e.call("POST", "/auth/beta/logout", "", refreshRequest{a.RefreshToken}); r.code != 401 {
		t.Fatalf("alpha's refresh token logging out on beta: %d", r.code)
	}
	// …and alpha's session survived all that.
	e.tokens(e.call("POST", "/auth/alpha/refresh", "", refreshRequest{a.RefreshToken}), 200)
	// Operators see only their tenant's users.
	key, _, err := e.ten.CreateKey(ctx, tenant.KeyRequest{Tenant: "beta", Scopes: []string{"read"}})
	if err != nil {
		t.Fatal(err)
	}
	r := e.call("GET", "/api/v1/users", key, nil)
	if r.code != 200 || !bytes.Contains(r.body, []byte(b.User.ID)) || bytes.Contains(r.body, []byte(a.User.ID)) {
		t.Fatalf("beta's user list: %d %s", r.code, r.body)
	}
	if r := e.call("GET", "/api/v1/users?tenant=alpha", key, nil); r.code != 404 {
		t.Fatalf("beta's key listing alpha's users: %d", r.code)
	}
}

func TestClaimsAndUserHeaders(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	tk := e.signUp("alpha", "ada@example.com", "correct horse")
	key, _, _ := e.ten.CreateKey(ctx, tenant.KeyRequest{Tenant: "alpha", Scopes: []string{"deploy"}})
	if r := e.call("PUT", "/api/v1/users/"+tk.User.ID+"/claims", key, map[string]any{"role": "editor", "plan": 3}); r.code != 200 {
		t.Fatalf("set claims: %d %s", r.code, r.body)
	}
	if r := e.call("PUT", "/api/v1/users/"+tk.User.ID+"/claims", key, map[string]any{"sub": "root"}); r.code != 400 {
		t.Fatalf("reserved claim: %d %s", r.code, r.body)
	}
	if r := e.call("PUT", "/api/v1/users/nope/claims", key, map[string]any{"x": 1}); r.code != 404 {
		t.Fatalf("claims of unknown user: %d %s", r.code, r.body)
	}
	fresh := e.tokens(e.logIn("alpha", "ada@example.com", "correct horse"), 200)
	u, err := e.s.Verify(ctx, "alpha", fresh.AccessToken)
	if err != nil || u.Claims["role"] != "editor" || u.Claims["plan"] != float64(3) {
		t.Fatalf("claims: %+v %v", u, err)
	}
	h := http.Header{}
	h.Set(HeaderUserID, "forged")
	h.Set(HeaderUserClaims, "forged")
	SetUserHeaders(h, u)
	if h.Get(HeaderUserID) != tk.User.ID || len(h.Values(HeaderUserID)) != 1 || h.Get(HeaderUserEmail) != "ada@example.com" {
		t.Fatalf("headers %v", h)
	}
	raw, _ := base64.StdEncoding.DecodeString(h.Get(HeaderUserClaims))
	var claims map[string]any
	if err := json.Unmarshal(raw, &claims); err != nil || claims["role"] != "editor" {
		t.Fatalf("claims header %s: %v", raw, err)
	}
	SetUserHeaders(h, nil)
	if h.Get(HeaderUserID) != "" || h.Get(HeaderUserClaims) != "" {
		t.Fatal("SetUserHeaders(nil) left headers")
	}
	// Deleting the user ends its sessions.
	if r := e.call("DELETE", "/api/v1/users/"+tk.User.ID, key, nil); r.code != 204 {
		t.Fatalf("delete: %d", r.code)
	}
	if r := e.call("POST", "/auth/alpha/refresh", "", refreshRequest{fresh.RefreshToken}); r.code != 401 {
		t.Fatalf("refresh of a deleted user: %d", r.code)
	}
	e.signUp("alpha", "ada@example.com", "correct horse") // the email is free again
}

func TestSigningKeysSealedAndDurable(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	tk := e.signUp("alpha", "ada@example.com", "correct horse")
	kv, _ := e.b.JS.KeyValue(ctx, bus.BucketAuth)
	raw, err := kv.Get(ctx, signingKeyKey("alpha"))
	if err != nil {
		t.Fatal(err)
	}
	var set storedKeySet
	_ = json.Unmarshal(raw.Value(), &set)
	if len(set.Keys) != 1 || set.Keys[0].Seed != nil || len(set.Keys[0].Sealed) == 0 {
		t.Fatalf("stored key is not sealed: %s", raw.Value())
	}
	// Another service (another node, or a restart) verifies the same token.
	kek, _ := e.ten.DeriveKey("auth-signing-keys")
	s2 := e.start(Config{Bus: e.b, Tenants: e.ten, KeyEncryptionKey: kek, Argon2: fastArgon})
	if _, err := s2.Verify(ctx, "alpha", tk.AccessToken); err != nil {
		t.Fatalf("second node: %v", err)
	}
	// …and can sign: its tokens verify on the first.
	tk2 := e.tokens(e.logIn("alpha", "ada@example.com", "correct horse"), 200)
	if _, err := s2.Verify(ctx, "alpha", tk2.AccessToken); err != nil {
		t.Fatal(err)
	}
	// Without the right key encryption key, the keys cannot be used.
	wrong := make([]byte, 32)
	s3 := e.start(Config{Bus: e.b, KeyEncryptionKey: wrong, Argon2: fastArgon})
	if _, err := s3.Verify(ctx, "alpha", tk.AccessToken); err == nil {
		t.Fatal("verified with keys unsealed by a wrong key")
	}
}

func TestPasswordHashFormat(t *testing.T) {
	p := Argon2Params{}.withDefaults()
	h, err := hashPassword(p, "correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("hash %s", h)
	}
	for pw, want := range map[string]bool{"correct horse": true, "correct horsE": false, "": false} {
		if ok, err := checkPassword(h, pw); err != nil || ok != want {
			t.Errorf("check(%q) = %v, %v", pw, ok, err)
		}
	}
	for _, bad := range []string{"", "$bcrypt$x", "$argon2id$v=19$m=0,t=1,p=1$AA$AA", "$argon2id$v=19$m=64,t=1,p=1$!!$AA"} {
		if _, err := checkPassword(bad, "x"); err == nil {
			t.Errorf("accepted hash %q", bad)
		}
	}
}

func TestLimiterAndLockoutUnits(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newLimiter(1, 2)
	for i, want := range []bool{true, true, false} {
		if ok, _ := l.allow("k", now); ok != want {
			t.Fatalf("attempt %d: %v", i, ok)
		}
	}
	if _, wait := l.allow("k", now); wait <= 0 || wait > time.Second {
		t.Fatalf("wait %v", wait)
	}
	if ok, _ := l.allow("k", now.Add(1100*time.Millisecond)); !ok {
		t.Fatal("no refill")
	}
	lo := newLockout(2, time.Minute)
	lo.fail("e", now)
	if locked, _ := lo.locked("e", now); locked {
		t.Fatal("locked early")
	}
	if !lo.fail("e", now) {
		t.Fatal("second failure did not lock")
	}
	if locked, wait := lo.locked("e", now.Add(30*time.Second)); !locked || wait != 30*time.Second {
		t.Fatalf("locked=%v wait=%v", locked, wait)
	}
	if locked, _ := lo.locked("e", now.Add(time.Minute)); locked {
		t.Fatal("lock did not end")
	}
	lo.sweep(now.Add(3 * time.Minute))
	if len(lo.m) != 0 {
		t.Fatal("sweep kept a stale entry")
	}
}

func TestDeleteTenantRemovesUsers(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	a := e.signUp("alpha", "ada@example.com", "correct horse")
	e.signUp("beta", "bob@example.com", "correct horse")
	if err := e.s.DeleteTenant(ctx, "alpha"); err != nil {
		t.Fatal(err)
	}
	if r := e.logIn("alpha", "ada@example.com", "correct horse"); r.code != 401 {
		t.Fatalf("log-in after delete: %d", r.code)
	}
	if r := e.call("POST", "/auth/alpha/refresh", "", refreshRequest{a.RefreshToken}); r.code != 401 {
		t.Fatalf("refresh after delete: %d", r.code)
	}
	if _, err := e.s.Verify(ctx, "alpha", a.AccessToken); err == nil {
		t.Fatal("token of a deleted pool verified")
	}
	e.tokens(e.logIn("beta", "bob@example.com", "correct horse"), 200)
	e.signUp("alpha", "ada@example.com", "correct horse")
}

func BenchmarkVerify(b *testing.B) {
	e := newEnv(b, nil)
	tk := e.signUp("alpha", "ada@example.com", "correct horse")
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.s.Verify(ctx, "alpha", tk.AccessToken); err != nil {
			b.Fatal(err)
		}
	}
}

func TestCachedTokenStillExpires(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.AccessTTL = time.Second })
	ctx := context.Background()
	tk, err := e.s.SignUp(ctx, "alpha", "ada@example.com", "correct horse", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.Verify(ctx, "alpha", tk.AccessToken); err != nil {
		t.Fatal(err)
	}
	// Verified once (and cached); it must still stop working after exp (+5 s leeway).
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := e.s.Verify(ctx, "alpha", tk.AccessToken)
		if err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a cached access token never expired")
		}
		time.Sleep(100 * time.Millisecond)
	}
}
