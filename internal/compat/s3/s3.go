// Package s3 owns Nimbus's S3-compatible API (path-style): the S3 operations
// mapped onto internal/baas/objects, AWS Signature V4 authentication (header,
// presigned and aws-chunked streaming forms) against access keys Nimbus
// issues per tenant, and S3's XML shapes and error documents.
package s3

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nimbusfn/nimbus/internal/baas/objects"
)

// Config configures the S3 API.
type Config struct {
	Objects     *objects.Service
	Credentials CredentialStore
	// Region is the one region this endpoint answers for (default us-east-1).
	Region string
	// S3URL is the public base URL of this API (http://127.0.0.1:9000), used
	// to presign URLs for the REST API.
	S3URL  string
	Logger *slog.Logger
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

// Server is the S3 API; it is an http.Handler for its own listener.
type Server struct {
	cfg Config
	obj *objects.Service
	log *slog.Logger
}

// New builds the S3 API handler.
func New(cfg Config) *Server {
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Server{cfg: cfg, obj: cfg.Objects, log: cfg.Logger.With("component", "s3")}
}

// auth is an authenticated request.
type auth struct {
	tenant string
}

// subresources S3 knows and Nimbus does not implement.
var unsupported = map[string]bool{
	"acl": true, "policy": true, "tagging": true, "cors": true, "lifecycle": true, "encryption": true,
	"object-lock": true, "notification": true, "replication": true, "website": true, "logging": true,
	"retention": true, "legal-hold": true, "torrent": true, "restore": true, "select": true,
	"accelerate": true, "requestPayment": true, "analytics": true, "inventory": true, "metrics": true,
	"intelligent-tiering": true, "ownershipControls": true, "publicAccessBlock": true, "policyStatus": true,
	"attributes": true,
}

func requestID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return strings.ToUpper(hex.EncodeToString(b))
}

// ServeHTTP answers one S3 request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("x-amz-request-id", requestID())
	w.Header().Set("Server", "Nimbus")
	a, err := s.authenticate(r)
	if err != nil {
		writeError(w, r, toS3(err))
		return
	}
	path := strings.TrimPrefix(r.URL.Path, "/")
	bucketName, key, _ := strings.Cut(path, "/")
	q := r.URL.Query()
	for k := range q {
		if unsupported[k] {
			writeError(w, r, s3err("NotImplemented", "Nimbus does not implement the ?"+k+" operations"))
			return
		}
	}
	ctx := r.Context()
	switch {
	case bucketName == "":
		if r.Method != http.MethodGet {
			writeError(w, r, s3err("MethodNotAllowed", "the service endpoint accepts only GET (ListBuckets)"))
			return
		}
		s.listBuckets(ctx, w, r, a)
	case key == "":
		s.bucketOp(ctx, w, r, a, bucketName, q)
	default:
		s.objectOp(ctx, w, r, a, bucketName, key, q)
	}
}

func (s *Server) bucketOp(ctx context.Context, w http.ResponseWriter, r *http.Request, a auth, b string, q map[string][]string) {
	has := func(k string) bool { _, ok := q[k]; return ok }
	switch r.Method {
	case http.MethodPut:
		if _, err := s.obj.CreateBucket(ctx, a.tenant, b); err != nil {
			writeError(w, r, toS3(err))
			return
		}
		w.Header().Set("Location", "/"+b)
		w.WriteHeader(http.StatusOK)
	case http.MethodDelete:
		if err := s.obj.DeleteBucket(ctx, a.tenant, b); err != nil {
			writeError(w, r, toS3(err))
			return
		}
		w.WriteHeader(http.StatusNoContent)
	case http.MethodHead:
		if _, err := s.obj.HeadBucket(ctx, a.tenant, b); err != nil {
			writeError(w, r, toS3(err))
			return
		}
		w.Header().Set("x-amz-bucket-region", s.cfg.Region)
		w.WriteHeader(http.StatusOK)
	case http.MethodGet:
		if has("versions") {
			writeError(w, r, s3err("NotImplemented", "Nimbus does not keep object versions"))
			return
		}
		if _, err := s.obj.HeadBucket(ctx, a.tenant, b); err != nil {
			writeError(w, r, toS3(err))
			return
		}
		switch {
		case has("location"):
			loc := s.cfg.Region
			if loc == "us-east-1" {
				loc = ""
			}
			writeXML(w, http.StatusOK, locationConstraint{Location: loc})
		case has("versioning"):
			writeXML(w, http.StatusOK, versioningConfiguration{})
		case has("uploads"):
			s.listUploads(ctx, w, r, a, b)
		case q["list-type"] != nil && q["list-type"][0] == "2":
			s.listObjectsV2(ctx, w, r, a, b)
		default:
			s.listObjectsV1(ctx, w, r, a, b)
		}
	case http.MethodPost:
		if has("delete") {
			s.deleteObjects(ctx, w, r, a, b)
			return
		}
		writeError(w, r, s3err("NotImplemented", "this POST operation on a bucket is not implemented"))
	default:
		writeError(w, r, s3err("MethodNotAllowed", r.Method+" is not allowed on a bucket"))
	}
}

func (s *Server) objectOp(ctx context.Context, w http.ResponseWriter, r *http.Request, a auth, b, key string, q map[string][]string) {
	has := func(k string) bool { _, ok := q[k]; return ok }
	get := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	switch r.Method {
	case http.MethodPut:
		switch {
		case has("uploadId") && has("partNumber"):
			if r.Header.Get("x-amz-copy-source") != "" {
				writeError(w, r, s3err("NotImplemented", "UploadPartCopy is not implemented"))
				return
			}
			s.uploadPart(ctx, w, r, a, b, key, get("uploadId"), get("partNumber"))
		case r.Header.Get("x-amz-copy-source") != "":
			s.copyObject(ctx, w, r, a, b, key)
		default:
			s.putObject(ctx, w, r, a, b, key)
		}
	case http.MethodGet, http.MethodHead:
		if has("uploadId") && r.Method == http.MethodGet {
			s.listParts(ctx, w, r, a, b, key, get("uploadId"))
			return
		}
		s.getObject(ctx, w, r, a, b, key)
	case http.MethodDelete:
		if has("uploadId") {
			if err := s.obj.AbortUpload(ctx, a.tenant, b, key, get("uploadId")); err != nil {
				writeError(w, r, toS3(err))
				return
			}
			w.WriteHeader(http.StatusNoContent)
			return
		}
		if err := s.obj.Delete(ctx, a.tenant, b, key); err != nil && !errors.Is(err, objects.ErrNoSuchKey) {
			writeError(w, r, toS3(err))
			return
		}
		w.WriteHeader(http.StatusNoContent)
	case http.MethodPost:
		switch {
		case has("uploads"):
			s.createUpload(ctx, w, r, a, b, key)
		case has("uploadId"):
			s.completeUpload(ctx, w, r, a, b, key, get("uploadId"))
		default:
			writeError(w, r, s3err("NotImplemented", "this POST operation on an object is not implemented"))
		}
	default:
		writeError(w, r, s3err("MethodNotAllowed", r.Method+" is not allowed on an object"))
	}
}

// authenticate checks the request's SigV4 signature (header or presigned
// query), and prepares its body for reading (aws-chunked decoding, payload
// hash and checksum verification).
func (s *Server) authenticate(r *http.Request) (auth, error) {
	ctx := r.Context()
	q := r.URL.Query()
	if q.Get("X-Amz-Algorithm") != "" || q.Get("X-Amz-Signature") != "" {
		return s.authPresigned(ctx, r, q)
	}
	h := r.Header.Get("Authorization")
	if h == "" {
		return auth{}, s3err("AccessDenied", "anonymous access is not allowed; sign requests with AWS Signature V4")
	}
	ah, err := parseAuthHeader(h)
	if err != nil {
		return auth{}, s3err("AuthorizationHeaderMalformed", err.Error())
	}
	if ah.cred.region != s.cfg.Region {
		return auth{}, s3err("AuthorizationHeaderMalformed", "the authorization header is malformed; the region '"+ah.cred.region+"' is wrong; expecting '"+s.cfg.Region+"'")
	}
	amzDate := r.Header.Get("X-Amz-Date")
	t, err := time.Parse(amzDateFormat, amzDate)
	if err != nil {
		return auth{}, s3err("AccessDenied", "X-Amz-Date must be set as yyyymmddThhmmssZ")
	}
	if d := s.cfg.Now().Sub(t); d > maxSkew || d < -maxSkew {
		return auth{}, s3err("RequestTimeTooSkewed", "the difference between the request time and the server's time is too large")
	}
	if t.Format(scopeDateFormat) != ah.cred.day {
		return auth{}, s3err("SignatureDoesNotMatch", "the credential date does not match X-Amz-Date")
	}
	tenant, secret, err := s.cfg.Credentials.Lookup(ctx, ah.cred.accessKey)
	if errors.Is(err, ErrUnknownAccessKey) {
		return auth{}, s3err("InvalidAccessKeyId", "the AWS access key id you provided does not exist in our records")
	}
	if err != nil {
		return auth{}, err
	}
	payload := r.Header.Get("X-Amz-Content-Sha256")
	if payload == "" {
		return auth{}, s3err("InvalidRequest", "missing required header for this request: x-amz-content-sha256")
	}
	signedHost := false
	for _, h := range ah.signed {
		if h == "host" {
			signedHost = true
		}
	}
	if !signedHost {
		return auth{}, s3err("AccessDenied", "the host header must be signed")
	}
	key := signingKey(secret, ah.cred.day, ah.cred.region)
	want := signature(key, stringToSign(amzDate, ah.cred.scope(), canonicalRequest(r, ah.signed, payload, "")))
	if !hmac.Equal([]byte(want), []byte(ah.signature)) {
		return auth{}, s3err("SignatureDoesNotMatch", "the request signature we calculated does not match the signature you provided; check your key and signing method")
	}
	if err := s.prepareBody(r, payload, key, amzDate, ah.cred.scope(), ah.signature); err != nil {
		return auth{}, err
	}
	return auth{tenant: tenant}, nil
}

func (s *Server) authPresigned(ctx context.Context, r *http.Request, q map[string][]string) (auth, error) {
	get := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	if get("X-Amz-Algorithm") != algorithm {
		return auth{}, s3err("AuthorizationQueryParametersError", "X-Amz-Algorithm must be "+algorithm)
	}
	cred, err := parseCredential(get("X-Amz-Credential"))
	if err != nil {
		return auth{}, &Error{Code: "AuthorizationQueryParametersError", Message: err.Error(), Status: 400}
	}
	if cred.region != s.cfg.Region {
		return auth{}, &Error{Code: "AuthorizationQueryParametersError", Message: "the region '" + cred.region + "' is wrong; expecting '" + s.cfg.Region + "'", Status: 400}
	}
	amzDate := get("X-Amz-Date")
	t, err := time.Parse(amzDateFormat, amzDate)
	if err != nil || t.Format(scopeDateFormat) != cred.day {
		return auth{}, &Error{Code: "AuthorizationQueryParametersError", Message: "X-Amz-Date must be yyyymmddThhmmssZ on the credential's day", Status: 400}
	}
	exp, err := strconv.ParseInt(get("X-Amz-Expires"), 10, 64)
	if err != nil || exp < 1 || time.Duration(exp)*time.Second > maxPresignExpiry {
		return auth{}, &Error{Code: "AuthorizationQueryParametersError", Message: "X-Amz-Expires must be a number of seconds from 1 to 604800", Status: 400}
	}
	now := s.cfg.Now()
	if now.After(t.Add(time.Duration(exp) * time.Second)) {
		return auth{}, s3err("AccessDenied", "Request has expired")
	}
	if t.Sub(now) > maxSkew {
		return auth{}, s3err("AccessDenied", "Request is not valid yet")
	}
	tenant, secret, err := s.cfg.Credentials.Lookup(ctx, cred.accessKey)
	if errors.Is(err, ErrUnknownAccessKey) {
		return auth{}, s3err("InvalidAccessKeyId", "the AWS access key id you provided does not exist in our records")
	}
	if err != nil {
		return auth{}, err
	}
	signed := strings.Split(get("X-Amz-SignedHeaders"), ";")
	payload := get("X-Amz-Content-Sha256")
	if payload == "" {
		payload = unsignedPayload
	}
	key := signingKey(secret, cred.day, cred.region)
	want := signature(key, stringToSign(amzDate, cred.scope(), canonicalRequest(r, signed, payload, "X-Amz-Signature")))
	if !hmac.Equal([]byte(want), []byte(get("X-Amz-Signature"))) {
		return auth{}, s3err("SignatureDoesNotMatch", "the request signature we calculated does not match the signature you provided; check your key and signing method")
	}
	if payload != unsignedPayload {
		if err := s.prepareBody(r, payload, key, amzDate, cred.scope(), get("X-Amz-Signature")); err != nil {
			return auth{}, err
		}
	}
	return auth{tenant: tenant}, nil
}

// prepareBody replaces r.Body with a reader that decodes and verifies it.
func (s *Server) prepareBody(r *http.Request, payload string, key []byte, amzDate, scope, seed string) error {
	var sum *checksum
	switch payload {
	case streamingSigned, streamingSignedTr, streamingUnsigned:
		dl := int64(-1)
		if v := r.Header.Get("X-Amz-Decoded-Content-Length"); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return s3err("InvalidArgument", "x-amz-decoded-content-length must be a number")
			}
			dl = n
		} else if r.Method == http.MethodPut {
			return s3err("MissingContentLength", "x-amz-decoded-content-length is required with aws-chunked bodies")
		}
		if payload != streamingSigned {
			if tr := r.Header.Get("X-Amz-Trailer"); tr != "" {
				sum = newChecksum(strings.TrimSpace(tr))
				if sum == nil {
					return s3err("InvalidRequest", "the trailer "+tr+" is not supported")
				}
			}
		}
		r.Body = readCloser{&chunkedReader{
			br:        bufioReader(r.Body),
			signed:    payload != streamingUnsigned,
			trailer:   payload != streamingSigned,
			key:       key,
			date:      amzDate,
			scope:     scope,
			prevSig:   seed,
			sum:       sum,
			wantTotal: dl,
		}, r.Body}
		r.ContentLength = dl
		return nil
	}
	v := &verifyingReader{r: r.Body}
	if payload != unsignedPayload {
		if len(payload) != 64 {
			return s3err("InvalidArgument", "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, a STREAMING-* value or a hex SHA-256")
		}
		if r.ContentLength == 0 || r.Body == nil || r.Body == http.NoBody {
			if payload != emptySHA256 {
				return s3err("XAmzContentSHA256Mismatch", "the provided x-amz-content-sha256 header does not match what was computed")
			}
		}
		v.sha, v.wantSHA = sha256.New(), payload
	}
	for name, vals := range r.Header {
		if c := newChecksum(name); c != nil && len(vals) > 0 {
			v.sum, v.sumWant = c, vals[0]
			break
		}
	}
	if v.sha != nil || v.sum != nil {
		r.Body = readCloser{v, r.Body}
	}
	return nil
}

type readCloser struct {
	io.Reader
	io.Closer
}
