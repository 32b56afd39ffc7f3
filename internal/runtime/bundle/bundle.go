// Package bundle owns turning uploaded code into a directory on disk: a single
// file, or a .zip or .tar.gz archive extracted safely (no paths or links that
// leave the directory, no device files, bounded size and file count), cached
// once per code digest.
package bundle

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"

	"github.com/nimbusfn/nimbus/internal/runtime"
)

// Defaults for Limits' zero values.
const (
	DefaultMaxBytes = 512 << 20
	DefaultMaxFiles = 10000
)

// Limits bound what an archive may unpack to.
type Limits struct {
	// MaxBytes bounds the total unpacked size (default 512 MB). Bytes are
	// counted while copying; archive headers are not trusted.
	MaxBytes int64
	// MaxFiles bounds the number of entries (default 10000).
	MaxFiles int
}

func (l Limits) withDefaults() Limits {
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	if l.MaxFiles <= 0 {
		l.MaxFiles = DefaultMaxFiles
	}
	return l
}

// Kind reports how code will be unpacked: "zip", "tar.gz" or "file".
func Kind(code []byte) string {
	switch {
	case bytes.HasPrefix(code, []byte("PK\x03\x04")), bytes.HasPrefix(code, []byte("PK\x05\x06")):
		return "zip"
	case bytes.HasPrefix(code, []byte{0x1f, 0x8b}):
		return "tar.gz"
	}
	return "file"
}

func badCode(format string, args ...any) error {
	return runtime.Errorf(runtime.BadCode, format, args...)
}

// Unpack writes code into dir: a .zip or .tar.gz (detected by magic bytes) is
// extracted; anything else is written as the single file name (mode 0755).
// It refuses, with a *runtime.Error of kind BadCode that says what to fix,
// absolute paths, ".." components, links pointing outside dir, device files and
// totals over the limits. dir must exist; on error its content is undefined and
// the caller should remove it.
func Unpack(code []byte, dir, name string, lim Limits) error {
	lim = lim.withDefaults()
	switch Kind(code) {
	case "zip":
		return unpackZip(code, dir, lim)
	case "tar.gz":
		return unpackTarGz(code, dir, lim)
	}
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\\\x00") {
		return badCode("bundle: file name %q is invalid: use a plain name without slashes", name)
	}
	if int64(len(code)) > lim.MaxBytes {
		return badCode("bundle: code is %d bytes, over the limit of %d bytes", len(code), lim.MaxBytes)
	}
	if err := os.WriteFile(filepath.Join(dir, name), code, 0o755); err != nil {
		return fmt.Errorf("bundle: write %s: %w", name, err)
	}
	return os.Chmod(filepath.Join(dir, name), 0o755)
}

// extractor writes archive entries under root, enforcing the limits and the
// path rules.
type extractor struct {
	root     string
	lim      Limits
	bytes    int64
	files    int
	symlinks []string        // cleaned archive paths of symlinks created
	isLink   map[string]bool // same, as a set
}

func newExtractor(root string, lim Limits) *extractor {
	return &extractor{root: root, lim: lim, isLink: map[string]bool{}}
}

// clean validates an archive path and returns it cleaned and slash-separated,
// or "" for the root itself.
func (x *extractor) clean(name string) (string, error) {
	if strings.Contains(name, "\x00") {
		return "", badCode("bundle: entry name %q contains a NUL byte", name)
	}
	n := strings.ReplaceAll(name, "\\", "/")
	if strings.HasPrefix(n, "/") || (len(n) > 1 && n[1] == ':') {
		return "", badCode("bundle: entry %q has an absolute path: archives must use paths relative to the bundle root", name)
	}
	for _, part := range strings.Split(n, "/") {
		if part == ".." {
			return "", badCode("bundle: entry %q has a '..' component: archives may not write outside the bundle", name)
		}
	}
	c := path.Clean(n)
	if c == "." {
		return "", nil
	}
	// Refuse to write through a link made by an earlier entry.
	for p := path.Dir(c); p != "."; p = path.Dir(p) {
		if x.isLink[p] {
			return "", badCode("bundle: entry %q is inside the link %q: archives may not write through links", name, p)
		}
	}
	return c, nil
}

func (x *extractor) count() error {
	x.files++
	if x.files > x.lim.MaxFiles {
		return badCode("bundle: more than %d files: make the bundle smaller", x.lim.MaxFiles)
	}
	return nil
}

// prepare makes rel's parent directories and removes a non-directory already at
// rel (an archive may repeat an entry; the last one wins).
func (x *extractor) prepare(rel string) (string, error) {
	full := filepath.Join(x.root, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		return "", fmt.Errorf("bundle: create directory for %s: %w", rel, err)
	}
	if fi, err := os.Lstat(full); err == nil && !fi.IsDir() {
		if err := os.Remove(full); err != nil {
			return "", fmt.Errorf("bundle: replace %s: %w", rel, err)
		}
		delete(x.isLink, rel)
	}
	return full, nil
}

func (x *extractor) dir(name string) error {
	rel, err := x.clean(name)
	if err != nil || rel == "" {
		return err
	}
	if err := x.count(); err != nil {
		return err
	}
	full := filepath.Join(x.root, filepath.FromSlash(rel))
	if err := os.MkdirAll(full, 0o755); err != nil {
		return fmt.Errorf("bundle: create directory %s: %w", rel, err)
	}
	return nil
}

func (x *extractor) file(name string, mode fs.FileMode, r io.Reader) error {
	rel, err := x.clean(name)
	if err != nil {
		return err
	}
	if rel == "" {
		return badCode("bundle: entry %q is not a file name", name)
	}
	if err := x.count(); err != nil {
		return err
	}
	full, err := x.prepare(rel)
	if err != nil {
		return err
	}
	perm := fs.FileMode(0o644)
	if mode&0o111 != 0 {
		perm = 0o755
	}
	f, err := os.OpenFile(full, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscallNoFollow, perm)
	if err != nil {
		return fmt.Errorf("bundle: create %s: %w", rel, err)
	}
	left := x.lim.MaxBytes - x.bytes
	n, err := io.Copy(f, io.LimitReader(r, left+1))
	x.bytes += n
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if x.bytes > x.lim.MaxBytes {
		return badCode("bundle: unpacks to more than %d bytes: make the bundle smaller", x.lim.MaxBytes)
	}
	if err != nil {
		if errors.Is(err, zip.ErrChecksum) || errors.Is(err, gzip.ErrChecksum) || errors.Is(err, io.ErrUnexpectedEOF) {
			return badCode("bundle: entry %q is corrupt: %v", name, err)
		}
		return fmt.Errorf("bundle: write %s: %w", rel, err)
	}
	return os.Chmod(full, perm)
}

func (x *extractor) symlink(name, target string) error {
	rel, err := x.clean(name)
	if err != nil {
		return err
	}
	if rel == "" {
		return badCode("bundle: entry %q is not a link name", name)
	}
	if err := x.count(); err != nil {
		return err
	}
	if target == "" || strings.Contains(target, "\x00") {
		return badCode("bundle: link %q has an empty or invalid target", name)
	}
	if strings.HasPrefix(target, "/") {
		return badCode("bundle: link %q points to the absolute path %q: links must stay inside the bundle", name, target)
	}
	full, err := x.prepare(rel)
	if err != nil {
		return err
	}
	if err := os.Symlink(target, full); err != nil {
		return fmt.Errorf("bundle: create link %s: %w", rel, err)
	}
	x.symlinks = append(x.symlinks, rel)
	x.isLink[rel] = true
	return nil
}

func (x *extractor) hardlink(name, target string) error {
	rel, err := x.clean(name)
	if err != nil {
		return err
	}
	trel, err := x.clean(target)
	if err != nil {
		return err
	}
	if rel == "" || trel == "" {
		return badCode("bundle: hard link %q -> %q is invalid", name, target)
	}
	if err := x.count(); err != nil {
		return err
	}
	tfull := filepath.Join(x.root, filepath.FromSlash(trel))
	fi, err := os.Lstat(tfull)
	if err != nil || !fi.Mode().IsRegular() {
		return badCode("bundle: hard link %q points to %q, which is not a file earlier in the archive", name, target)
	}
	full, err := x.prepare(rel)
	if err != nil {
		return err
	}
	if err := os.Link(tfull, full); err != nil {
		return fmt.Errorf("bundle: create hard link %s: %w", rel, err)
	}
	return nil
}

// finish checks that every symlink, followed through the finished tree,
// stays inside root.
func (x *extractor) finish() error {
	for _, l := range x.symlinks {
		if err := resolveInside(x.root, l); err != nil {
			return err
		}
	}
	// Directories readable by the sandbox user whatever the umask.
	return filepath.WalkDir(x.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		return os.Chmod(p, 0o755)
	})
}

// resolveInside follows rel (slash-separated, relative to root) through the
// tree as the kernel would, and fails if any step leaves root.
func resolveInside(root, rel string) error {
	var stack []string
	todo := strings.Split(rel, "/")
	hops := 0
	for len(todo) > 0 {
		part := todo[0]
		todo = todo[1:]
		switch part {
		case "", ".":
			continue
		case "..":
			if len(stack) == 0 {
				return badCode("bundle: link %q points outside the bundle: links must stay inside it", rel)
			}
			stack = stack[:len(stack)-1]
			continue
		}
		stack = append(stack, part)
		full := filepath.Join(root, filepath.Join(stack...))
		fi, err := os.Lstat(full)
		if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			continue
		}
		hops++
		if hops > 40 {
			return badCode("bundle: link %q: too many levels of links", rel)
		}
		target, err := os.Readlink(full)
		if err != nil {
			return fmt.Errorf("bundle: read link %s: %w", rel, err)
		}
		if strings.HasPrefix(target, "/") {
			return badCode("bundle: link %q points to the absolute path %q: links must stay inside the bundle", rel, target)
		}
		stack = stack[:len(stack)-1]
		todo = append(strings.Split(target, "/"), todo...)
	}
	return nil
}

func unpackZip(code []byte, dir string, lim Limits) error {
	zr, err := zip.NewReader(bytes.NewReader(code), int64(len(code)))
	if err != nil && !errors.Is(err, zip.ErrInsecurePath) {
		return badCode("bundle: not a valid .zip archive: %v", err)
	}
	if len(zr.File) > lim.MaxFiles {
		return badCode("bundle: more than %d files: make the bundle smaller", lim.MaxFiles)
	}
	x := newExtractor(dir, lim)
	for _, f := range zr.File {
		mode := f.Mode()
		switch {
		case mode.IsDir():
			err = x.dir(f.Name)
		case mode&fs.ModeSymlink != 0:
			err = zipSymlink(x, f)
		case mode.IsRegular():
			err = zipFile(x, f, mode)
		default:
			err = badCode("bundle: entry %q is a %s: only files, directories and links are allowed", f.Name, typeName(mode))
		}
		if err != nil {
			return err
		}
	}
	return x.finish()
}

func zipFile(x *extractor, f *zip.File, mode fs.FileMode) error {
	rc, err := f.Open()
	if err != nil {
		return badCode("bundle: entry %q cannot be read: %v", f.Name, err)
	}
	defer rc.Close()
	return x.file(f.Name, mode, rc)
}

func zipSymlink(x *extractor, f *zip.File) error {
	rc, err := f.Open()
	if err != nil {
		return badCode("bundle: link %q cannot be read: %v", f.Name, err)
	}
	defer rc.Close()
	t, err := io.ReadAll(io.LimitReader(rc, 4097))
	if err != nil || len(t) > 4096 {
		return badCode("bundle: link %q has an invalid target", f.Name)
	}
	return x.symlink(f.Name, string(t))
}

func typeName(m fs.FileMode) string {
	switch {
	case m&fs.ModeDevice != 0:
		return "device file"
	case m&fs.ModeNamedPipe != 0:
		return "named pipe"
	case m&fs.ModeSocket != 0:
		return "socket"
	}
	return "special file"
}

func unpackTarGz(code []byte, dir string, lim Limits) error {
	gz, err := gzip.NewReader(bytes.NewReader(code))
	if err != nil {
		return badCode("bundle: not a valid .tar.gz archive: %v", err)
	}
	defer gz.Close()
	tr := tar.NewReader(gz)
	x := newExtractor(dir, lim)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil && !errors.Is(err, tar.ErrInsecurePath) {
			return badCode("bundle: not a valid .tar.gz archive: %v", err)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			err = x.dir(h.Name)
		case tar.TypeReg, tar.TypeRegA, tar.TypeGNUSparse:
			err = x.file(h.Name, fs.FileMode(h.Mode), tr)
		case tar.TypeSymlink:
			err = x.symlink(h.Name, h.Linkname)
		case tar.TypeLink:
			err = x.hardlink(h.Name, h.Linkname)
		case tar.TypeXGlobalHeader, tar.TypeXHeader, tar.TypeGNULongName, tar.TypeGNULongLink:
			continue
		case tar.TypeChar, tar.TypeBlock:
			err = badCode("bundle: entry %q is a device file: only files, directories and links are allowed", h.Name)
		default:
			err = badCode("bundle: entry %q has type %q: only files, directories and links are allowed", h.Name, string(h.Typeflag))
		}
		if err != nil {
			return err
		}
	}
	return x.finish()
}

var flights = struct {
	sync.Mutex
	m map[string]*flight
}{m: map[string]*flight{}}

type flight struct {
	done chan struct{}
	dir  string
	err  error
}

// Cached unpacks code once per digest into root/<digest-hex>/ and returns that
// directory. The unpack goes to a temporary directory that is renamed into
// place, so a directory under root is always complete; concurrent callers in
// this process for the same digest share one unpack. A digest "sha256:<hex>"
// is checked against code. Directories are mode 0755 so that an unprivileged
// sandbox user can read the code (but not change it).
func Cached(root, digest string, code []byte, name string, lim Limits) (string, error) {
	algo, hx, ok := strings.Cut(digest, ":")
	if !ok {
		hx, algo = digest, ""
	}
	if len(hx) < 8 || strings.Trim(hx, "0123456789abcdef") != "" {
		return "", fmt.Errorf("bundle: digest %q is not <algo>:<lower-case hex>", digest)
	}
	if algo == "sha256" {
		sum := sha256.Sum256(code)
		if hex.EncodeToString(sum[:]) != hx {
			return "", fmt.Errorf("bundle: code does not match digest %s", digest)
		}
	}
	final := filepath.Join(root, hx)

	flights.Lock()
	if f, ok := flights.m[final]; ok {
		flights.Unlock()
		<-f.done
		return f.dir, f.err
	}
	f := &flight{done: make(chan struct{})}
	flights.m[final] = f
	flights.Unlock()

	f.dir, f.err = unpackOnce(root, final, hx, code, name, lim)
	flights.Lock()
	delete(flights.m, final)
	flights.Unlock()
	close(f.done)
	return f.dir, f.err
}

func unpackOnce(root, final, hx string, code []byte, name string, lim Limits) (string, error) {
	if fi, err := os.Stat(final); err == nil && fi.IsDir() {
		return final, nil
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", fmt.Errorf("bundle: create cache directory %s: %w", root, err)
	}
	tmp, err := os.MkdirTemp(root, ".tmp-"+hx[:8]+"-")
	if err != nil {
		return "", fmt.Errorf("bundle: create temporary directory in %s: %w", root, err)
	}
	if err := Unpack(code, tmp, name, lim); err != nil {
		os.RemoveAll(tmp)
		return "", err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("bundle: %w", err)
	}
	if err := os.Rename(tmp, final); err != nil {
		os.RemoveAll(tmp)
		// Another process won the race: its directory is complete.
		if fi, serr := os.Stat(final); serr == nil && fi.IsDir() {
			return final, nil
		}
		return "", fmt.Errorf("bundle: move unpacked code into %s: %w", final, err)
	}
	return final, nil
}
