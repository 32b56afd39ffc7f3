package triggers

import (
	"encoding/base64"
	"encoding/json"
	"mime"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/nimbusfn/nimbus/internal/async"
)

// CloudEvent is a CloudEvents 1.0 event.
type CloudEvent struct {
	SpecVersion     string            `json:"specversion"`
	ID              string            `json:"id"`
	Source          string            `json:"source"`
	Type            string            `json:"type"`
	Subject         string            `json:"subject,omitempty"`
	Time            string            `json:"time,omitempty"`
	DataContentType string            `json:"datacontenttype,omitempty"`
	DataSchema      string            `json:"dataschema,omitempty"`
	Extensions      map[string]string `json:"extensions,omitempty"`
	// Data is the event's payload as bytes (JSON text for JSON data).
	Data []byte `json:"-"`
}

// Validate checks the required attributes and says which is wrong.
func (ce *CloudEvent) Validate() error {
	switch {
	case ce.SpecVersion == "":
		return bad("CloudEvent attribute specversion is missing (ce-specversion header or \"specversion\" field); use 1.0")
	case ce.SpecVersion != "1.0":
		return bad("CloudEvent specversion %q is not supported; use 1.0", ce.SpecVersion)
	case ce.ID == "":
		return bad("CloudEvent attribute id is missing (ce-id header or \"id\" field)")
	case ce.Source == "":
		return bad("CloudEvent attribute source is missing (ce-source header or \"source\" field)")
	case ce.Type == "":
		return bad("CloudEvent attribute type is missing (ce-type header or \"type\" field)")
	}
	if ce.Time != "" {
		if _, err := time.Parse(time.RFC3339Nano, ce.Time); err != nil {
			return bad("CloudEvent attribute time %q is not an RFC 3339 time", ce.Time)
		}
	}
	for _, v := range append([]string{ce.ID, ce.Source, ce.Type, ce.Subject, ce.Time, ce.DataContentType, ce.DataSchema}, values(ce.Extensions)...) {
		if strings.ContainsAny(v, "\r\n") {
			return bad("CloudEvent attributes may not contain line breaks")
		}
	}
	for k := range ce.Extensions {
		if !validExtName(k) {
			return bad("CloudEvent extension attribute name %q must be lower-case letters and digits", k)
		}
	}
	return nil
}

func values(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

func validExtName(k string) bool {
	if k == "" || len(k) > 64 {
		return false
	}
	for _, c := range k {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

var ceCore = map[string]bool{"specversion": true, "id": true, "source": true, "type": true, "subject": true, "time": true, "datacontenttype": true, "dataschema": true, "data": true, "data_base64": true}

// isStructured reports whether a request carries a structured-mode CloudEvent.
func isStructured(h http.Header) bool {
	mt, _, _ := mime.ParseMediaType(h.Get("Content-Type"))
	return mt == "application/cloudevents+json"
}

// parseHTTPEvent reads a CloudEvent from an HTTP request's headers and body,
// in binary or structured mode.
func parseHTTPEvent(h http.Header, body []byte) (*CloudEvent, error) {
	if isStructured(h) {
		return parseStructured(body)
	}
	ce := &CloudEvent{DataContentType: h.Get("Content-Type"), Data: body}
	for k, vs := range h {
		lk := strings.ToLower(k)
		name, ok := strings.CutPrefix(lk, "ce-")
		if !ok || len(vs) == 0 {
			continue
		}
		v := vs[0]
		switch name {
		case "specversion":
			ce.SpecVersion = v
		case "id":
			ce.ID = v
		case "source":
			ce.Source = v
		case "type":
			ce.Type = v
		case "subject":
			ce.Subject = v
		case "time":
			ce.Time = v
		case "dataschema":
			ce.DataSchema = v
		default:
			if ce.Extensions == nil {
				ce.Extensions = map[string]string{}
			}
			ce.Extensions[name] = v
		}
	}
	return ce, ce.Validate()
}

func parseStructured(body []byte) (*CloudEvent, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, bad("structured CloudEvent is not a JSON object: %v", err)
	}
	ce := &CloudEvent{}
	str := func(name string, dst *string) error {
		raw, ok := m[name]
		if !ok {
			return nil
		}
		if err := json.Unmarshal(raw, dst); err != nil {
			return bad("CloudEvent attribute %s must be a string", name)
		}
		return nil
	}
	for name, dst := range map[string]*string{
		"specversion": &ce.SpecVersion, "id": &ce.ID, "source": &ce.Source, "type": &ce.Type, "subject": &ce.Subject,
		"time": &ce.Time, "datacontenttype": &ce.DataContentType, "dataschema": &ce.DataSchema,
	} {
		if err := str(name, dst); err != nil {
			return nil, err
		}
	}
	for k, raw := range m {
		if ceCore[k] {
			continue
		}
		if ce.Extensions == nil {
			ce.Extensions = map[string]string{}
		}
		var s string
		if json.Unmarshal(raw, &s) == nil {
			ce.Extensions[k] = s
		} else {
			ce.Extensions[k] = string(raw)
		}
	}
	if raw, ok := m["data_base64"]; ok {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, bad("CloudEvent data_base64 must be a string")
		}
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, bad("CloudEvent data_base64 is not base64: %v", err)
		}
		ce.Data = b
	} else if raw, ok := m["data"]; ok {
		ct := strings.ToLower(ce.DataContentType)
		var s string
		if ct != "" && !strings.Contains(ct, "json") && json.Unmarshal(raw, &s) == nil {
			ce.Data = []byte(s) // text data of a non-JSON type
		} else {
			ce.Data = []byte(raw)
			if ce.DataContentType == "" {
				ce.DataContentType = "application/json"
			}
		}
	}
	return ce, ce.Validate()
}

// natsMsg is the event in the NATS protocol binding: ce-* headers, data body.
func (ce *CloudEvent) natsMsg(subject string) *nats.Msg {
	m := nats.NewMsg(subject)
	m.Data = ce.Data
	set := func(k, v string) {
		if v != "" {
			m.Header.Set(k, v)
		}
	}
	set("ce-specversion", ce.SpecVersion)
	set("ce-id", ce.ID)
	set("ce-source", ce.Source)
	set("ce-type", ce.Type)
	set("ce-subject", ce.Subject)
	set("ce-time", ce.Time)
	set("ce-dataschema", ce.DataSchema)
	set("content-type", ce.DataContentType)
	keys := make([]string, 0, len(ce.Extensions))
	for k := range ce.Extensions {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		set("ce-"+k, ce.Extensions[k])
	}
	return m
}

func cloudEventFromNATS(h nats.Header, data []byte) *CloudEvent {
	ce := &CloudEvent{Data: data}
	for k, vs := range h {
		if len(vs) == 0 {
			continue
		}
		lk := strings.ToLower(k)
		if lk == "content-type" {
			ce.DataContentType = vs[0]
			continue
		}
		name, ok := strings.CutPrefix(lk, "ce-")
		if !ok {
			continue
		}
		switch name {
		case "specversion":
			ce.SpecVersion = vs[0]
		case "id":
			ce.ID = vs[0]
		case "source":
			ce.Source = vs[0]
		case "type":
			ce.Type = vs[0]
		case "subject":
			ce.Subject = vs[0]
		case "time":
			ce.Time = vs[0]
		case "dataschema":
			ce.DataSchema = vs[0]
		default:
			if ce.Extensions == nil {
				ce.Extensions = map[string]string{}
			}
			ce.Extensions[name] = vs[0]
		}
	}
	return ce
}

// envelope is the event as a function receives it.
func (ce *CloudEvent) envelope() async.Envelope {
	ev := async.Envelope{
		Kind: KindTopic, ID: ce.ID, Source: ce.Source, Subject: ce.Subject, Type: ce.Type,
		DataContentType: ce.DataContentType, Extensions: ce.Extensions,
	}
	if t, err := time.Parse(time.RFC3339Nano, ce.Time); err == nil {
		ev.Time = t.UTC()
	}
	ev.SetData(ce.Data, ce.DataContentType)
	return ev
}
