// Command pipeline is a data pipeline on Nimbus: a CSV file uploaded to the
// object bucket "uploads" triggers it (objects trigger, object.created,
// suffix .csv). It reads the file, writes each row as a JSON document to the
// KV bucket "rows" under "FILE/ROW" (row numbers from 1, header excluded),
// and a summary to the object bucket "reports" as "FILE.json": the row count,
// the columns, and count/sum/min/max/mean of every numeric column.
//
// The request body is the event envelope Nimbus sends for trigger events:
// {"kind":"objects","type":"object.created","subject":"KEY","data":{"bucket":…,"key":…},…}.
package main

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	nimbus "github.com/nimbusfn/nimbus/sdk/go"
)

// envelope is the part of the trigger event this function reads.
type envelope struct {
	Kind string `json:"kind"`
	Type string `json:"type"`
	Data struct {
		Bucket string `json:"bucket"`
		Key    string `json:"key"`
	} `json:"data"`
}

// Column is the summary of one numeric column.
type Column struct {
	Count int     `json:"count"`
	Sum   float64 `json:"sum"`
	Min   float64 `json:"min"`
	Max   float64 `json:"max"`
	Mean  float64 `json:"mean"`
}

// Report is what lands in the reports bucket.
type Report struct {
	Source  string             `json:"source"` // bucket/key of the CSV
	Rows    int                `json:"rows"`
	Columns []string           `json:"columns"`
	Numeric map[string]*Column `json:"numeric"`
}

func main() {
	nimbus.Handle(http.HandlerFunc(handle))
}

func handle(w http.ResponseWriter, r *http.Request) {
	var ev envelope
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&ev); err != nil {
		http.Error(w, "body must be a Nimbus event envelope: "+err.Error(), http.StatusBadRequest)
		return
	}
	if ev.Type != "object.created" || !strings.HasSuffix(ev.Data.Key, ".csv") {
		nimbus.Log("info", "event ignored", "type", ev.Type, "key", ev.Data.Key)
		w.WriteHeader(http.StatusNoContent)
		return
	}
	rep, err := process(r, ev.Data.Bucket, ev.Data.Key)
	if err != nil {
		// A 5xx makes Nimbus retry the event; a bad file is not worth retrying.
		status := http.StatusInternalServerError
		if errors.Is(err, errBadCSV) || errors.Is(err, nimbus.ErrNotFound) {
			status = http.StatusUnprocessableEntity
		}
		nimbus.Log("error", "csv not processed", "key", ev.Data.Key, "error", err)
		http.Error(w, err.Error(), status)
		return
	}
	nimbus.Log("info", "csv processed", "key", ev.Data.Key, "rows", rep.Rows)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(rep)
}

var errBadCSV = errors.New("bad csv")

func process(r *http.Request, bucket, key string) (*Report, error) {
	ctx := r.Context()
	data, err := nimbus.Objects(bucket).Get(ctx, key)
	if err != nil {
		return nil, err
	}
	cr := csv.NewReader(bytes.NewReader(data))
	cr.FieldsPerRecord = 0 // every row as long as the header
	records, err := cr.ReadAll()
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", errBadCSV, key, err)
	}
	if len(records) == 0 {
		return nil, fmt.Errorf("%w: %s is empty: the first line must name the columns", errBadCSV, key)
	}
	header := records[0]
	rep := &Report{Source: bucket + "/" + key, Columns: header, Numeric: map[string]*Column{}}
	numeric := make([]bool, len(header))
	for i := range numeric {
		numeric[i] = true
	}
	rows := nimbus.KV("rows")
	for n, rec := range records[1:] {
		doc := make(map[string]any, len(header))
		for i, v := range rec {
			if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
				doc[header[i]] = f
			} else {
				doc[header[i]] = v
				numeric[i] = false
			}
		}
		b, _ := json.Marshal(doc)
		if err := rows.Put(ctx, key+"/"+strconv.Itoa(n+1), b); err != nil {
			return nil, err
		}
	}
	rep.Rows = len(records) - 1
	for i, name := range header {
		if !numeric[i] || rep.Rows == 0 {
			continue
		}
		c := &Column{}
		for _, rec := range records[1:] {
			f, _ := strconv.ParseFloat(strings.TrimSpace(rec[i]), 64)
			if c.Count == 0 || f < c.Min {
				c.Min = f
			}
			if c.Count == 0 || f > c.Max {
				c.Max = f
			}
			c.Sum += f
			c.Count++
		}
		c.Mean = c.Sum / float64(c.Count)
		rep.Numeric[name] = c
	}
	out, _ := json.MarshalIndent(rep, "", "  ")
	name := strings.TrimSuffix(key, ".csv") + ".json"
	if err := nimbus.Objects("reports").Put(ctx, name, out, "application/json"); err != nil {
		return nil, err
	}
	return rep, nil
}
