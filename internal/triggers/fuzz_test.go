package triggers

import (
	"net/http"
	"testing"
)

func FuzzParseStructuredEvent(f *testing.F) {
	f.Add([]byte(`{"specversion":"1.0","id":"1","source":"/s","type":"t","data":{"a":1}}`))
	f.Add([]byte(`{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":"text/plain","data":"x"}`))
	f.Add([]byte(`{"specversion":"1.0","id":"1","source":"/s","type":"t","data_base64":"AAE="}`))
	f.Add([]byte(`{"specversion":1}`))
	f.Add([]byte(`[`))
	f.Fuzz(func(t *testing.T, body []byte) {
		h := http.Header{"Content-Type": {"application/cloudevents+json"}}
		ce, err := parseHTTPEvent(h, body)
		if err != nil {
			return
		}
		if ce.Validate() != nil {
			t.Fatalf("accepted an invalid event %+v", ce)
		}
		// What was accepted survives the NATS binding.
		back := cloudEventFromNATS(ce.natsMsg("x").Header, ce.Data)
		if back.ID != ce.ID || back.Source != ce.Source || back.Type != ce.Type || back.Subject != ce.Subject {
			t.Fatalf("NATS round trip: %+v → %+v", ce, back)
		}
	})
}

func FuzzSchedule(f *testing.F) {
	for _, s := range []string{"@every 1s", "0 3 * * *", "*/5 * * * * *", "CRON_TZ=Europe/Paris 0 9 * * 1-5", "@daily", "61 * * * *", "@every 0s", ""} {
		f.Add(s, "")
	}
	f.Add("0 9 * * *", "Asia/Tokyo")
	f.Fuzz(func(t *testing.T, spec, tz string) {
		sched, err := parseSchedule(&Schedule{Cron: spec, Timezone: tz})
		if err != nil {
			return
		}
		_ = sched.Next(fixedNow)
	})
}

func FuzzMQTTFilter(f *testing.F) {
	for _, s := range []string{"sensors/+/temp", "a/#", "#", "+/x", "a//b", "nimbus/x", "$SYS/x", "a/b.c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, filter string) {
		subj, err := mqttSubject(filter)
		if err != nil {
			return
		}
		if subj == "" || subj[0] == '$' || subj == ">" || subj[0] == '*' || len(subj) >= 7 && subj[:7] == "nimbus." {
			t.Fatalf("filter %q maps to a reserved or global subject %q", filter, subj)
		}
	})
}

var fixedNow = mustTime("2026-03-29T01:30:00Z")
