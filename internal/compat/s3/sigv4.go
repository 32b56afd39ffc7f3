package s3

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// AWS Signature Version 4, as S3 uses it.
// https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-authenticating-requests.html

const (
	algorithm         = "AWS4-HMAC-SHA256"
	amzDateFormat     = "20060102T150405Z"
	scopeDateFormat   = "20060102"
	unsignedPayload   = "UNSIGNED-PAYLOAD"
	streamingSigned   = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
	streamingSignedTr = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
	streamingUnsigned = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
	emptySHA256       = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	maxSkew           = 15 * time.Minute
	maxPresignExpiry  = 7 * 24 * time.Hour
)

// awsEscape percent-encodes s as SigV4 wants: everything but A-Z a-z 0-9 - _ . ~
// (and '/' when keepSlash).
func awsEscape(s string, keepSlash bool) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~' || (keepSlash && c == '/') {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

// canonicalQuery sorts and re-encodes a raw query, leaving out skip.
func canonicalQuery(raw string, skip string) string {
	type kv struct{ k, v string }
	var pairs []kv
	for _, part := range strings.Split(raw, "&") {
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		if dk, err := url.QueryUnescape(k); err == nil {
			k = dk
		}
		if dv, err := url.QueryUnescape(v); err == nil {
			v = dv
		}
		if k == skip {
			continue
		}
		pairs = append(pairs, kv{awsEscape(k, false), awsEscape(v, false)})
	}
	sort.Slice(pairs, func(i, j int) bool {
		if pairs[i].k != pairs[j].k {
			return pairs[i].k < pairs[j].k
		}
		return pairs[i].v < pairs[j].v
	})
	var b strings.Builder
	for i, p := range pairs {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(p.k)
		b.WriteByte('=')
		b.WriteString(p.v)
	}
	return b.String()
}

// headerValue is the canonical value of one signed header of r.
func headerValue(r *http.Request, name string) string {
	switch name {
	case "host":
		return r.Host
	case "content-length":
		if v := r.Header.Get("Content-Length"); v != "" {
			return v
		}
		if r.ContentLength >= 0 {
			return strconv.FormatInt(r.ContentLength, 10)
		}
	case "transfer-encoding":
		if len(r.TransferEncoding) > 0 {
			return strings.Join(r.TransferEncoding, ",")
		}
	}
	vs := r.Header.Values(name)
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = strings.Join(strings.Fields(v), " ")
	}
	return strings.Join(out, ",")
}

// canonicalRequest builds the SigV4 canonical request of r.
func canonicalRequest(r *http.Request, signed []string, payloadHash, skipQuery string) string {
	var b strings.Builder
	b.WriteString(r.Method)
	b.WriteByte('\n')
	path := r.URL.Path
	if path == "" {
		path = "/"
	}
	b.WriteString(awsEscape(path, true))
	b.WriteByte('\n')
	b.WriteString(canonicalQuery(r.URL.RawQuery, skipQuery))
	b.WriteByte('\n')
	for _, h := range signed {
		b.WriteString(h)
		b.WriteByte(':')
		b.WriteString(headerValue(r, h))
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	b.WriteString(strings.Join(signed, ";"))
	b.WriteByte('\n')
	b.WriteString(payloadHash)
	return b.String()
}

func sha256Hex(s []byte) string {
	h := sha256.Sum256(s)
	return hex.EncodeToString(h[:])
}

func hmacSHA256(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}

// signingKey derives the SigV4 key for a day, region and service s3.
func signingKey(secret, day, region string) []byte {
	k := hmacSHA256([]byte("AWS4"+secret), day)
	k = hmacSHA256(k, region)
	k = hmacSHA256(k, "s3")
	return hmacSHA256(k, "aws4_request")
}

func stringToSign(amzDate, scope, canonical string) string {
	return algorithm + "\n" + amzDate + "\n" + scope + "\n" + sha256Hex([]byte(canonical))
}

func signature(key []byte, sts string) string { return hex.EncodeToString(hmacSHA256(key, sts)) }

// credential is a parsed Credential=AKID/day/region/s3/aws4_request.
type credential struct {
	accessKey, day, region string
}

func (c credential) scope() string { return c.day + "/" + c.region + "/s3/aws4_request" }

func parseCredential(v string) (credential, error) {
	parts := strings.Split(v, "/")
	if len(parts) != 5 || parts[0] == "" || parts[3] != "s3" || parts[4] != "aws4_request" {
		return credential{}, fmt.Errorf("the credential %q is not of the form AKID/yyyymmdd/region/s3/aws4_request", v)
	}
	if _, err := time.Parse(scopeDateFormat, parts[1]); err != nil {
		return credential{}, fmt.Errorf("the credential date %q is not yyyymmdd", parts[1])
	}
	return credential{accessKey: parts[0], day: parts[1], region: parts[2]}, nil
}

// authHeader is a parsed Authorization: AWS4-HMAC-SHA256 header.
type authHeader struct {
	cred      credential
	signed    []string
	signature string
}

func parseAuthHeader(v string) (authHeader, error) {
	rest, ok := strings.CutPrefix(v, algorithm+" ")
	if !ok {
		return authHeader{}, fmt.Errorf("only %s signatures are supported", algorithm)
	}
	var a authHeader
	var haveCred bool
	for _, f := range strings.Split(rest, ",") {
		k, val, _ := strings.Cut(strings.TrimSpace(f), "=")
		switch k {
		case "Credential":
			c, err := parseCredential(val)
			if err != nil {
				return authHeader{}, err
			}
			a.cred, haveCred = c, true
		case "SignedHeaders":
			a.signed = strings.Split(val, ";")
		case "Signature":
			a.signature = val
		}
	}
	if !haveCred || len(a.signed) == 0 || a.signature == "" {
		return authHeader{}, fmt.Errorf("the Authorization header needs Credential, SignedHeaders and Signature")
	}
	return a, nil
}

// Presign returns a presigned URL for method on bucket/key at endpoint (the S3
// API's base URL), valid for expires from now.
func Presign(method, endpoint, bucket, key string, creds Credentials, region string, expires time.Duration, now time.Time) (string, error) {
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("the S3 endpoint %q is not a URL", endpoint)
	}
	if expires <= 0 || expires > maxPresignExpiry {
		return "", fmt.Errorf("expiry must be between 1s and 7 days, not %s", expires)
	}
	now = now.UTC()
	cred := credential{accessKey: creds.AccessKeyID, day: now.Format(scopeDateFormat), region: region}
	path := strings.TrimRight(u.Path, "/") + "/" + bucket
	if key != "" {
		path += "/" + key
	}
	q := url.Values{}
	q.Set("X-Amz-Algorithm", algorithm)
	q.Set("X-Amz-Credential", creds.AccessKeyID+"/"+cred.scope())
	q.Set("X-Amz-Date", now.Format(amzDateFormat))
	q.Set("X-Amz-Expires", strconv.Itoa(int(expires/time.Second)))
	q.Set("X-Amz-SignedHeaders", "host")
	raw := strings.ReplaceAll(q.Encode(), "+", "%20")
	req := &http.Request{Method: method, Host: u.Host, URL: &url.URL{Path: path, RawQuery: raw}, Header: http.Header{}}
	sig := signature(signingKey(creds.SecretAccessKey, cred.day, region), stringToSign(now.Format(amzDateFormat), cred.scope(), canonicalRequest(req, []string{"host"}, unsignedPayload, "")))
	return u.Scheme + "://" + u.Host + awsEscape(path, true) + "?" + raw + "&X-Amz-Signature=" + sig, nil
}
