package wasm

import (
	"bytes"
	"fmt"
	"net/http"
	"strconv"
)

// maxCGIHeader caps the header block of a CGI response.
const maxCGIHeader = 64 << 10

// cgiResponse is a parsed CGI response (RFC 3875 §6).
type cgiResponse struct {
	status int
	header http.Header
	body   []byte
}

// parseCGI parses a CGI script's whole output: header lines (ended by "\n" or
// "\r\n"), a blank line, then the body. A Status header sets the status
// ("404 Not Found"); a Location header without one means 302; otherwise 200.
// The body aliases out.
func parseCGI(out []byte) (*cgiResponse, error) {
	if len(out) == 0 {
		return nil, fmt.Errorf("function wrote nothing on stdout; a CGI response starts with headers such as \"Content-Type: text/plain\", then a blank line, then the body")
	}
	resp := &cgiResponse{header: http.Header{}}
	hasStatus, hasLocation := false, false
	rest := out
	for {
		if len(out)-len(rest) > maxCGIHeader {
			return nil, fmt.Errorf("CGI header block is longer than %d KB", maxCGIHeader>>10)
		}
		nl := bytes.IndexByte(rest, '\n')
		if nl < 0 {
			return nil, fmt.Errorf("CGI output has no blank line after its headers (write the headers, an empty line, then the body)")
		}
		line := rest[:nl]
		rest = rest[nl+1:]
		line = bytes.TrimSuffix(line, []byte{'\r'})
		if len(line) == 0 {
			break
		}
		colon := bytes.IndexByte(line, ':')
		if colon < 0 {
			return nil, fmt.Errorf("CGI header line %q has no colon (headers are \"Name: value\", then a blank line before the body)", clip(line))
		}
		name := line[:colon]
		if len(name) == 0 {
			return nil, fmt.Errorf("CGI header line %q has no name before its colon", clip(line))
		}
		for _, c := range name {
			if !isTokenChar(c) {
				return nil, fmt.Errorf("CGI header name %q is not a valid HTTP field name", clip(name))
			}
		}
		value := bytes.TrimSpace(line[colon+1:])
		for _, c := range value {
			if c == 0 || c == '\r' {
				return nil, fmt.Errorf("CGI header %q has a control character in its value", clip(name))
			}
		}
		key := http.CanonicalHeaderKey(string(name))
		switch key {
		case "Status":
			if hasStatus {
				return nil, fmt.Errorf("CGI output has more than one Status header")
			}
			code, err := parseStatus(value)
			if err != nil {
				return nil, err
			}
			resp.status, hasStatus = code, true
			continue
		case "Location":
			hasLocation = true
		}
		resp.header[key] = append(resp.header[key], string(value))
	}
	if !hasStatus {
		resp.status = http.StatusOK
		if hasLocation {
			resp.status = http.StatusFound
		}
	}
	resp.body = rest
	return resp, nil
}

// parseStatus parses a CGI Status value: a three-digit code, optionally
// followed by a space and a reason phrase.
func parseStatus(v []byte) (int, error) {
	bad := func() (int, error) {
		return 0, fmt.Errorf("CGI Status %q is not a three-digit code from 100 to 599 such as \"404 Not Found\"", clip(v))
	}
	if len(v) < 3 || (len(v) > 3 && v[3] != ' ') {
		return bad()
	}
	code, err := strconv.Atoi(string(v[:3]))
	if err != nil || code < 100 || code > 599 {
		return bad()
	}
	return code, nil
}

func clip(b []byte) string {
	if len(b) > 80 {
		return string(b[:80]) + "…"
	}
	return string(b)
}
