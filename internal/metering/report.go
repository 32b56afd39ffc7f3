package metering

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbusfn/nimbus/internal/apierr"
	"github.com/nimbusfn/nimbus/internal/registry"
)

// UsageQuery selects usage. Tenant "" means every tenant (admin only).
type UsageQuery struct {
	Tenant, Function string
	// Since and Until select whole hours: an hour counts when it overlaps
	// [Since, Until). Zero Since means from the start, zero Until means now.
	Since, Until time.Time
	// By groups rows: "function" (default), "day", "hour" or "tenant".
	By string
}

// UsageRow is the usage of one group.
type UsageRow struct {
	Key               string  `json:"key"`
	Invocations       int64   `json:"invocations"`
	Errors            int64   `json:"errors"`
	Throttled         int64   `json:"throttled"`
	ColdStarts        int64   `json:"cold_starts"`
	BilledInvocations int64   `json:"billed_invocations"`
	BilledMS          int64   `json:"billed_ms"`
	GBSeconds         float64 `json:"gb_seconds"`
	Cost              float64 `json:"cost"`
	mbms              int64
}

func (u *UsageRow) add(r *Rollup) {
	u.Invocations += r.Invocations
	u.Errors += r.Errors
	u.Throttled += r.Throttled
	u.ColdStarts += r.ColdStarts
	u.BilledInvocations += r.BilledInvocations
	u.BilledMS += r.BilledMS
	u.mbms += r.MBMS
}

func (u *UsageRow) finish(p Prices) {
	u.GBSeconds = float64(u.mbms) / 1000 / 1024
	u.Cost = p.Cost(u.BilledInvocations, u.GBSeconds)
}

// UsageReport answers a UsageQuery. Costs use Prices (by default AWS Lambda's
// public x86 list prices; see DefaultPrices).
type UsageReport struct {
	Tenant string     `json:"tenant,omitempty"`
	Since  time.Time  `json:"since"`
	Until  time.Time  `json:"until"`
	By     string     `json:"by"`
	Prices Prices     `json:"prices"`
	Rows   []UsageRow `json:"rows"`
	Total  UsageRow   `json:"total"`
}

// Report sums the hourly rollups that match q.
func (m *Meter) Report(ctx context.Context, q UsageQuery) (UsageReport, error) {
	if q.By == "" {
		q.By = "function"
	}
	switch q.By {
	case "function", "day", "hour", "tenant":
	default:
		return UsageReport{}, fmt.Errorf("usage: by=%q: use function, day, hour or tenant", q.By)
	}
	filter := "*"
	if q.Tenant != "" {
		if err := registry.CheckName("tenant", q.Tenant); err != nil {
			return UsageReport{}, fmt.Errorf("usage: %w", err)
		}
		filter = q.Tenant
	}
	if q.Function != "" {
		if err := registry.CheckName("function", q.Function); err != nil {
			return UsageReport{}, fmt.Errorf("usage: %w", err)
		}
		filter += "." + q.Function + ".*"
	} else {
		filter += ".*.*"
	}
	if q.Until.IsZero() {
		q.Until = m.cfg.Now()
	}
	if m.kv == nil {
		return UsageReport{}, errors.New("usage: the meter is not started")
	}
	w, err := m.kv.Watch(ctx, filter, jetstream.IgnoreDeletes())
	if err != nil {
		return UsageReport{}, fmt.Errorf("usage: reading rollups: %w", err)
	}
	defer func() { _ = w.Stop() }()
	rows := map[string]*UsageRow{}
	rep := UsageReport{Tenant: q.Tenant, Since: q.Since, Until: q.Until, By: q.By, Prices: m.prices, Rows: []UsageRow{}}
	rep.Total.Key = "total"
	for {
		var e jetstream.KeyValueEntry
		var ok bool
		select {
		case <-ctx.Done():
			return UsageReport{}, fmt.Errorf("usage: %w", ctx.Err())
		case e, ok = <-w.Updates():
		}
		if !ok {
			return UsageReport{}, errors.New("usage: rollup watch closed")
		}
		if e == nil {
			break
		}
		tenant, function, hour, ok := parseRollupKey(e.Key())
		if !ok || hour.Add(time.Hour).Before(q.Since) || hour.Add(time.Hour).Equal(q.Since) || !hour.Before(q.Until) {
			continue
		}
		var r Rollup
		if json.Unmarshal(e.Value(), &r) != nil {
			continue
		}
		var key string
		switch q.By {
		case "function":
			key = function
			if q.Tenant == "" {
				key = tenant + "/" + function
			}
		case "tenant":
			key = tenant
		case "day":
			key = hour.Format("2006-01-02")
		case "hour":
			key = hour.Format("2006-01-02T15:00Z")
		}
		row := rows[key]
		if row == nil {
			row = &UsageRow{Key: key}
			rows[key] = row
		}
		row.add(&r)
		rep.Total.add(&r)
	}
	for _, r := range rows {
		r.finish(m.prices)
		rep.Rows = append(rep.Rows, *r)
	}
	sort.Slice(rep.Rows, func(i, j int) bool { return rep.Rows[i].Key < rep.Rows[j].Key })
	rep.Total.finish(m.prices)
	return rep, nil
}

// ParseSince reads "30d", "12h", "90m" (ago, from now) or an RFC 3339 time.
func ParseSince(s string, now time.Time) (time.Time, error) {
	if strings.HasSuffix(s, "d") {
		if n, err := strconv.Atoi(strings.TrimSuffix(s, "d")); err == nil && n >= 0 {
			return now.Add(-time.Duration(n) * 24 * time.Hour), nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is not a duration (30d, 12h) or an RFC 3339 time", s)
	}
	return t, nil
}

// Routes mounts GET /api/v1/usage on mux. tenantOf names the caller's tenant
// (after authentication); isAdmin, when not nil, says whether the caller may
// ask for every tenant with ?all=true. Query parameters: since (default 30d),
// until, by (function|day|hour|tenant), function.
func (m *Meter) Routes(mux *http.ServeMux, tenantOf func(*http.Request) string, isAdmin func(*http.Request) bool) {
	mux.HandleFunc("GET /api/v1/usage", func(w http.ResponseWriter, r *http.Request) {
		qv := r.URL.Query()
		now := m.cfg.Now()
		q := UsageQuery{Tenant: tenantOf(r), Function: qv.Get("function"), By: qv.Get("by"), Since: now.Add(-30 * 24 * time.Hour)}
		if v := qv.Get("all"); v == "1" || v == "true" {
			if isAdmin == nil || !isAdmin(r) {
				apierr.Write(w, apierr.New(apierr.Forbidden, "all=true needs an admin key: other keys see their own tenant's usage"))
				return
			}
			q.Tenant = ""
		} else if q.Tenant == "" {
			apierr.Write(w, apierr.New(apierr.Unauthorized, "no tenant for this request: send an API key"))
			return
		}
		for _, p := range []struct {
			name string
			dst  *time.Time
		}{{"since", &q.Since}, {"until", &q.Until}} {
			if v := qv.Get(p.name); v != "" {
				t, err := ParseSince(v, now)
				if err != nil {
					apierr.Write(w, apierr.New(apierr.BadRequest, "%s=%s", p.name, err))
					return
				}
				*p.dst = t
			}
		}
		if q.Function != "" && !registry.ValidName(q.Function) {
			apierr.Write(w, apierr.New(apierr.InvalidName, "%v", registry.CheckName("function", q.Function)))
			return
		}
		switch q.By {
		case "", "function", "day", "hour", "tenant":
		default:
			apierr.Write(w, apierr.New(apierr.BadRequest, "by=%q: use function, day, hour or tenant", q.By))
			return
		}
		rep, err := m.Report(r.Context(), q)
		if err != nil {
			apierr.Write(w, apierr.New(apierr.Internal, "usage report: %v", err))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(rep)
	})
}
