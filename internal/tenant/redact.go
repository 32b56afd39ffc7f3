package tenant

import (
	"bytes"
	"context"
	"sort"
)

// Redacted replaces a secret value in captured output.
const Redacted = "[REDACTED]"

// MinRedactLen is the shortest value a Redactor hides: shorter values (a
// secret "1" or "on") would blank out ordinary text, and are no secret.
const MinRedactLen = 4

// Redactor hides a tenant's secret values in captured function output.
// It is immutable and safe for concurrent use.
type Redactor struct {
	values [][]byte
}

// NewRedactor builds a Redactor for values (empty and short ones skipped).
func NewRedactor(values []string) *Redactor {
	r := &Redactor{}
	seen := map[string]bool{}
	for _, v := range values {
		if len(v) < MinRedactLen || seen[v] {
			continue
		}
		seen[v] = true
		r.values = append(r.values, []byte(v))
	}
	// Longest first only matters for readability of the code below: matches
	// are merged as ranges, so overlapping secrets are all hidden.
	sort.Slice(r.values, func(i, j int) bool { return len(r.values[i]) > len(r.values[j]) })
	return r
}

// Empty reports whether the Redactor hides nothing.
func (r *Redactor) Empty() bool { return r == nil || len(r.values) == 0 }

type span struct{ lo, hi int }

// Redact returns p with every occurrence of a secret value replaced by
// [REDACTED]. When nothing matches it returns p itself and allocates
// nothing; each value is searched with bytes.Index (vectorised), so the cost
// for the usual handful of secrets is a few fast scans of p.
func (r *Redactor) Redact(p []byte) []byte {
	if r.Empty() {
		return p
	}
	var spans []span
	for _, v := range r.values {
		for off := 0; off <= len(p)-len(v); {
			i := bytes.Index(p[off:], v)
			if i < 0 {
				break
			}
			spans = append(spans, span{off + i, off + i + len(v)})
			off += i + 1
		}
	}
	if len(spans) == 0 {
		return p
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i].lo < spans[j].lo })
	out := make([]byte, 0, len(p))
	pos := 0
	for i := 0; i < len(spans); {
		lo, hi := spans[i].lo, spans[i].hi
		for i++; i < len(spans) && spans[i].lo <= hi; i++ {
			hi = max(hi, spans[i].hi)
		}
		out = append(out, p[pos:lo]...)
		out = append(out, Redacted...)
		pos = hi
	}
	return append(out, p[pos:]...)
}

// Redactor returns a Redactor for all of tenant's secrets (for the log
// capture of its functions).
func (v *Vault) Redactor(ctx context.Context, tenant string) (*Redactor, error) {
	list, err := v.List(ctx, tenant)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(list))
	for i, s := range list {
		names[i] = s.Name
	}
	vals, err := v.Resolve(ctx, tenant, names)
	if err != nil {
		return nil, err
	}
	values := make([]string, 0, len(vals))
	for _, val := range vals {
		values = append(values, val)
	}
	return NewRedactor(values), nil
}
