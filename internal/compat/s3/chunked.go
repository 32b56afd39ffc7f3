package s3

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"strconv"
	"strings"

	"github.com/minio/crc64nvme"
)

// aws-chunked bodies: the payload arrives as chunks
//
//	hex-size[;chunk-signature=sig]\r\n data \r\n … 0[;chunk-signature=sig]\r\n [trailers\r\n] \r\n
//
// Signed chunks chain their signatures from the seed (the request's own
// signature); each is checked before its data is passed on, so a stored
// object never holds chunk framing or unverified bytes.

const maxChunkBytes = 16 << 20

type chunkedReader struct {
	br      *bufio.Reader
	signed  bool   // chunk signatures present and checked
	trailer bool   // trailers follow the last chunk
	key     []byte // signing key (signed)
	date    string // x-amz-date (signed)
	scope   string
	prevSig string
	// checksum verifies the trailer's x-amz-checksum-* over the decoded data.
	sum       *checksum
	buf       []byte
	off       int
	done      bool
	err       error
	total     int64
	wantTotal int64 // x-amz-decoded-content-length, -1 unknown
}

func (c *chunkedReader) fail(code, format string, args ...any) error {
	c.err = &Error{Code: code, Message: fmt.Sprintf(format, args...)}
	return c.err
}

func (c *chunkedReader) Read(p []byte) (int, error) {
	for c.off == len(c.buf) {
		if c.err != nil {
			return 0, c.err
		}
		if c.done {
			return 0, io.EOF
		}
		c.next()
	}
	n := copy(p, c.buf[c.off:])
	c.off += n
	return n, nil
}

// next reads one chunk into buf (or finishes the body).
func (c *chunkedReader) next() {
	line, err := c.readLine()
	if err != nil {
		c.fail("IncompleteBody", "the chunked body ends early: %v", err)
		return
	}
	sizeHex, ext, _ := strings.Cut(line, ";")
	size, err := strconv.ParseInt(strings.TrimSpace(sizeHex), 16, 64)
	if err != nil || size < 0 || size > maxChunkBytes {
		c.fail("InvalidRequest", "bad chunk size %q", sizeHex)
		return
	}
	var sig string
	if c.signed {
		v, ok := strings.CutPrefix(strings.TrimSpace(ext), "chunk-signature=")
		if !ok {
			c.fail("SignatureDoesNotMatch", "a chunk has no chunk-signature")
			return
		}
		sig = v
	}
	if cap(c.buf) < int(size) {
		c.buf = make([]byte, size)
	}
	c.buf, c.off = c.buf[:size], 0
	if _, err := io.ReadFull(c.br, c.buf); err != nil {
		c.fail("IncompleteBody", "a chunk ends early: %v", err)
		return
	}
	if c.signed {
		sts := "AWS4-HMAC-SHA256-PAYLOAD\n" + c.date + "\n" + c.scope + "\n" + c.prevSig + "\n" + emptySHA256 + "\n" + sha256Hex(c.buf)
		want := signature(c.key, sts)
		if !hmac.Equal([]byte(want), []byte(sig)) {
			c.buf = c.buf[:0]
			c.fail("SignatureDoesNotMatch", "the signature of a chunk does not match")
			return
		}
		c.prevSig = sig
	}
	if size == 0 {
		c.finish()
		return
	}
	if crlf, err := c.readLine(); err != nil || crlf != "" {
		c.buf = c.buf[:0]
		c.fail("IncompleteBody", "a chunk is not followed by CRLF")
		return
	}
	c.total += size
	if c.wantTotal >= 0 && c.total > c.wantTotal {
		c.buf = c.buf[:0]
		c.fail("IncompleteBody", "the body is longer than x-amz-decoded-content-length")
		return
	}
	if c.sum != nil {
		c.sum.h.Write(c.buf)
	}
}

// finish reads the trailers (if any) and the final CRLF after the last chunk.
func (c *chunkedReader) finish() {
	c.buf = c.buf[:0]
	if c.wantTotal >= 0 && c.total != c.wantTotal {
		c.fail("IncompleteBody", "the body has %d bytes, x-amz-decoded-content-length says %d", c.total, c.wantTotal)
		return
	}
	var canon strings.Builder
	var trailerSig string
	trailers := map[string]string{}
	for {
		line, err := c.readLine()
		if err != nil {
			if err == io.EOF && (!c.trailer || trailerSig != "") {
				break // some clients end without the final CRLF
			}
			c.fail("IncompleteBody", "the body ends inside its trailers: %v", err)
			return
		}
		if line == "" {
			if c.signed && c.trailer && trailerSig == "" {
				continue // minio-go ends its trailer lines with LF and a blank CRLF before the signature
			}
			break
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			c.fail("InvalidRequest", "bad trailer line %q", line)
			return
		}
		k, v = strings.ToLower(strings.TrimSpace(k)), strings.TrimSpace(v)
		if k == "x-amz-trailer-signature" {
			trailerSig = v
			continue
		}
		trailers[k] = v
		canon.WriteString(k + ":" + v + "\n")
	}
	if c.signed && c.trailer {
		sts := "AWS4-HMAC-SHA256-TRAILER\n" + c.date + "\n" + c.scope + "\n" + c.prevSig + "\n" + sha256Hex([]byte(canon.String()))
		if !hmac.Equal([]byte(signature(c.key, sts)), []byte(trailerSig)) {
			c.fail("SignatureDoesNotMatch", "the trailer signature does not match")
			return
		}
	}
	if c.sum != nil {
		got, ok := trailers[c.sum.header]
		if !ok {
			c.fail("InvalidRequest", "the trailer %s announced in x-amz-trailer is missing", c.sum.header)
			return
		}
		if err := c.sum.verify(got); err != nil {
			c.err = err
			return
		}
	}
	c.done = true
}

func (c *chunkedReader) readLine() (string, error) {
	line, err := c.br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		return "", fmt.Errorf("line too long")
	}
	if err != nil {
		if err == io.EOF && len(line) == 0 {
			return "", io.EOF
		}
		return "", io.ErrUnexpectedEOF
	}
	return string(bytes.TrimRight(line, "\r\n")), nil
}

// checksum is an x-amz-checksum-* over a payload.
type checksum struct {
	header string // x-amz-checksum-crc32, …
	h      hash.Hash
}

func newChecksum(header string) *checksum {
	header = strings.ToLower(header)
	var h hash.Hash
	switch header {
	case "x-amz-checksum-crc32":
		h = crc32.NewIEEE()
	case "x-amz-checksum-crc32c":
		h = crc32.New(crc32.MakeTable(crc32.Castagnoli))
	case "x-amz-checksum-crc64nvme":
		h = crc64nvme.New()
	case "x-amz-checksum-sha1":
		h = sha1.New()
	case "x-amz-checksum-sha256":
		h = sha256.New()
	default:
		return nil
	}
	return &checksum{header: header, h: h}
}

func (c *checksum) verify(b64 string) error {
	want, err := base64.StdEncoding.DecodeString(b64)
	got := c.h.Sum(nil)
	if err != nil || !bytes.Equal(want, got) {
		return &Error{Code: "BadDigest", Message: fmt.Sprintf("the %s you specified did not match the calculated checksum", c.header)}
	}
	return nil
}

// verifyingReader checks a whole-payload SHA-256 (x-amz-content-sha256) and an
// optional x-amz-checksum-* header at EOF.
type verifyingReader struct {
	r       io.Reader
	sha     hash.Hash
	wantSHA string
	sum     *checksum
	sumWant string
	err     error
}

func (v *verifyingReader) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	n, err := v.r.Read(p)
	if v.sha != nil {
		v.sha.Write(p[:n])
	}
	if v.sum != nil {
		v.sum.h.Write(p[:n])
	}
	if err == io.EOF {
		if v.sha != nil && hex.EncodeToString(v.sha.Sum(nil)) != v.wantSHA {
			v.err = &Error{Code: "XAmzContentSHA256Mismatch", Message: "the provided x-amz-content-sha256 header does not match what was computed"}
			return 0, v.err
		}
		if v.sum != nil {
			if e := v.sum.verify(v.sumWant); e != nil {
				v.err = e
				return 0, e
			}
		}
	}
	return n, err
}

func bufioReader(r io.Reader) *bufio.Reader { return bufio.NewReaderSize(r, 64<<10) }
