package bundle

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/nimbusfn/nimbus/internal/runtime"
)

type entry struct {
	name, body, link string
	typ              byte // tar type flag
	mode             int64
}

func tarGz(t *testing.T, entries []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Linkname: e.link}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write([]byte(e.body))
		}
	}
	tw.Close()
	gz.Close()
	return buf.Bytes()
}

func zipOf(t *testing.T, entries []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range entries {
		h := &zip.FileHeader{Name: e.name, Method: zip.Deflate}
		mode := fs.FileMode(e.mode)
		if mode == 0 {
			mode = 0o644
		}
		body := e.body
		if e.typ == tar.TypeSymlink {
			mode |= fs.ModeSymlink
			body = e.link
		}
		if e.typ == tar.TypeDir {
			mode |= fs.ModeDir
		}
		h.SetMode(mode)
		w, err := zw.CreateHeader(h)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(body))
	}
	zw.Close()
	return buf.Bytes()
}

func wantBadCode(t *testing.T, err error, contains string) {
	t.Helper()
	if runtime.KindOf(err) != runtime.BadCode {
		t.Fatalf("want BadCode error containing %q, got %v", contains, err)
	}
	if !strings.Contains(err.Error(), contains) {
		t.Fatalf("error %q does not say %q", err, contains)
	}
}

func TestUnpackSingleFile(t *testing.T) {
	dir := t.TempDir()
	if err := Unpack([]byte("#!/bin/sh\necho hi\n"), dir, "fn", Limits{}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "fn"))
	if err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("single file: %v %v", fi, err)
	}
	wantBadCode(t, Unpack([]byte("x"), dir, "../x", Limits{}), "file name")
	wantBadCode(t, Unpack([]byte("too big"), dir, "f", Limits{MaxBytes: 3}), "over the limit")
}

func TestUnpackArchives(t *testing.T) {
	entries := []entry{
		{name: "app/", typ: tar.TypeDir, mode: 0o755},
		{name: "app/server", body: "binary", mode: 0o700},
		{name: "./app/data.txt", body: "data"},
		{name: "app/link", typ: tar.TypeSymlink, link: "data.txt"},
		{name: "top", typ: tar.TypeSymlink, link: "app/../app/server"},
	}
	for _, tc := range []struct {
		name string
		code []byte
	}{{"tar.gz", tarGz(t, entries)}, {"zip", zipOf(t, entries)}} {
		t.Run(tc.name, func(t *testing.T) {
			if Kind(tc.code) != tc.name {
				t.Fatalf("Kind = %s", Kind(tc.code))
			}
			dir := t.TempDir()
			if err := Unpack(tc.code, dir, "ignored", Limits{}); err != nil {
				t.Fatal(err)
			}
			fi, err := os.Stat(filepath.Join(dir, "app/server"))
			if err != nil || fi.Mode().Perm() != 0o755 {
				t.Fatalf("app/server: %v %v", fi, err)
			}
			b, err := os.ReadFile(filepath.Join(dir, "app/link"))
			if err != nil || string(b) != "data" {
				t.Fatalf("app/link: %q %v", b, err)
			}
			b, err = os.ReadFile(filepath.Join(dir, "top"))
			if err != nil || string(b) != "binary" {
				t.Fatalf("top: %q %v", b, err)
			}
		})
	}
}

func TestUnpackHostile(t *testing.T) {
	cases := []struct {
		name    string
		entries []entry
		want    string
	}{
		{"dotdot", []entry{{name: "../evil", body: "x"}}, "'..'"},
		{"nested dotdot", []entry{{name: "a/../../evil", body: "x"}}, "'..'"},
		{"absolute", []entry{{name: "/etc/evil", body: "x"}}, "absolute path"},
		{"symlink absolute", []entry{{name: "l", typ: tar.TypeSymlink, link: "/etc/passwd"}}, "absolute path"},
		{"symlink up", []entry{{name: "a/l", typ: tar.TypeSymlink, link: "../../etc"}}, "outside the bundle"},
		{"symlink chain", []entry{
			{name: "s", typ: tar.TypeSymlink, link: "."},
			{name: "t", typ: tar.TypeSymlink, link: "s/.."},
		}, "outside the bundle"},
		{"write through link", []entry{
			{name: "l", typ: tar.TypeSymlink, link: "sub"},
			{name: "l/x", body: "x"},
		}, "through links"},
	}
	for _, tc := range cases {
		for _, format := range []string{"tar.gz", "zip"} {
			t.Run(tc.name+"/"+format, func(t *testing.T) {
				code := tarGz(t, tc.entries)
				if format == "zip" {
					code = zipOf(t, tc.entries)
				}
				parent := t.TempDir()
				dir := filepath.Join(parent, "b")
				os.Mkdir(dir, 0o755)
				wantBadCode(t, Unpack(code, dir, "f", Limits{}), tc.want)
				if _, err := os.Stat(filepath.Join(parent, "evil")); err == nil {
					t.Fatal("wrote outside the bundle")
				}
			})
		}
	}
	t.Run("device", func(t *testing.T) {
		code := tarGz(t, []entry{{name: "dev", typ: tar.TypeChar}})
		wantBadCode(t, Unpack(code, t.TempDir(), "f", Limits{}), "device file")
	})
	t.Run("hardlink outside", func(t *testing.T) {
		code := tarGz(t, []entry{{name: "h", typ: tar.TypeLink, link: "../../etc/passwd"}})
		wantBadCode(t, Unpack(code, t.TempDir(), "f", Limits{}), "'..'")
		code = tarGz(t, []entry{{name: "h", typ: tar.TypeLink, link: "missing"}})
		wantBadCode(t, Unpack(code, t.TempDir(), "f", Limits{}), "not a file")
	})
	t.Run("not an archive", func(t *testing.T) {
		wantBadCode(t, Unpack([]byte{0x1f, 0x8b, 1, 2, 3}, t.TempDir(), "f", Limits{}), "not a valid .tar.gz")
		wantBadCode(t, Unpack([]byte("PK\x03\x04garbage"), t.TempDir(), "f", Limits{}), "not a valid .zip")
	})
}

func TestUnpackBombs(t *testing.T) {
	// 16 MB of zeros compresses to ~16 KB; the limit is counted on the bytes written.
	big := strings.Repeat("\x00", 16<<20)
	for _, format := range []string{"tar.gz", "zip"} {
		t.Run(format, func(t *testing.T) {
			entries := []entry{{name: "zeros", body: big}}
			code := tarGz(t, entries)
			if format == "zip" {
				code = zipOf(t, entries)
			}
			if len(code) > 1<<20 {
				t.Fatalf("bomb is %d bytes", len(code))
			}
			dir := t.TempDir()
			wantBadCode(t, Unpack(code, dir, "f", Limits{MaxBytes: 2 << 20}), "more than 2097152 bytes")
			if fi, err := os.Stat(filepath.Join(dir, "zeros")); err == nil && fi.Size() > 2<<20+1 {
				t.Fatalf("wrote %d bytes past the limit", fi.Size())
			}
		})
	}
	t.Run("too many files", func(t *testing.T) {
		var entries []entry
		for i := 0; i < 20; i++ {
			entries = append(entries, entry{name: strings.Repeat("f", i+1), body: "x"})
		}
		wantBadCode(t, Unpack(tarGz(t, entries), t.TempDir(), "f", Limits{MaxFiles: 10}), "more than 10 files")
		wantBadCode(t, Unpack(zipOf(t, entries), t.TempDir(), "f", Limits{MaxFiles: 10}), "more than 10 files")
	})
}

func TestCached(t *testing.T) {
	root := filepath.Join(t.TempDir(), "cache")
	code := tarGz(t, []entry{{name: "server", body: "bin", mode: 0o755}})
	sum := sha256.Sum256(code)
	digest := "sha256:" + hex.EncodeToString(sum[:])

	var wg sync.WaitGroup
	dirs := make([]string, 8)
	errs := make([]error, 8)
	for i := range dirs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dirs[i], errs[i] = Cached(root, digest, code, "f", Limits{})
		}()
	}
	wg.Wait()
	for i := range dirs {
		if errs[i] != nil || dirs[i] != filepath.Join(root, hex.EncodeToString(sum[:])) {
			t.Fatalf("caller %d: %q %v", i, dirs[i], errs[i])
		}
	}
	fi, err := os.Stat(dirs[0])
	if err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("cache dir mode: %v %v", fi, err)
	}
	ents, _ := os.ReadDir(root)
	if len(ents) != 1 {
		t.Fatalf("cache root holds %d entries, want 1 (no temp dirs left)", len(ents))
	}

	if _, err := Cached(root, digest, []byte("other"), "f", Limits{}); err == nil {
		t.Fatal("mismatched digest accepted")
	}
	bad := tarGz(t, []entry{{name: "../x", body: "x"}})
	bsum := sha256.Sum256(bad)
	_, err = Cached(root, "sha256:"+hex.EncodeToString(bsum[:]), bad, "f", Limits{})
	wantBadCode(t, err, "'..'")
	ents, _ = os.ReadDir(root)
	if len(ents) != 1 {
		t.Fatalf("failed unpack left %d entries", len(ents))
	}
}
