package triggers

import (
	"crypto/rand"
	"fmt"
	"net"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/nimbusfn/nimbus/internal/bus"
	"github.com/nimbusfn/nimbus/internal/registry"
)

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestMQTTMessageTriggersFunction(t *testing.T) {
	addr := freePort(t)
	b := openBus(t, bus.Config{MQTTListen: addr})
	inv := newInvoker()
	fn := inv.add("sensor", registry.Config{Runtime: "process"}, nil)
	n := startNode(t, b, inv)
	n.mustDo(t, "PUT", "/api/v1/functions/sensor/triggers/temps", `{"mqtt":{"filter":"sensors/+/temp"}}`, 201)

	// Garbage on the MQTT port must not disturb the server.
	for i := 0; i < 3; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		junk := make([]byte, 4096)
		_, _ = rand.Read(junk)
		_, _ = c.Write(junk)
		c.Close()
	}

	opts := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("device-1").SetConnectTimeout(10 * time.Second)
	client := mqtt.NewClient(opts)
	if tok := client.Connect(); !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
		t.Fatalf("mqtt connect: %v", tok.Error())
	}
	defer client.Disconnect(250)
	// The trigger's subscription starts asynchronously: publish until it is seen.
	eventually(t, 20*time.Second, func() error {
		tok := client.Publish("sensors/kitchen/temp", 1, false, `{"celsius":21.5}`)
		if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			return fmt.Errorf("publish: %v", tok.Error())
		}
		if fn.count() == 0 {
			time.Sleep(100 * time.Millisecond)
			if fn.count() == 0 {
				return fmt.Errorf("not invoked yet")
			}
		}
		return nil
	})
	// Not matching the filter: no invocation. Then a QoS 0 text message.
	tok := client.Publish("sensors/kitchen/humidity", 1, false, `50`)
	tok.WaitTimeout(5 * time.Second)
	tok = client.Publish("sensors/hall/temp", 0, false, `plain text`)
	tok.WaitTimeout(5 * time.Second)
	eventually(t, 10*time.Second, func() error {
		for _, e := range fn.envelopes(t) {
			if e.Subject == "sensors/hall/temp" {
				return nil
			}
		}
		return fmt.Errorf("hall message not delivered")
	})
	var kitchen, hall bool
	for _, e := range fn.envelopes(t) {
		if e.Kind != "mqtt" {
			t.Fatalf("envelope %+v", e)
		}
		switch e.Subject {
		case "sensors/kitchen/temp":
			kitchen = string(e.Data) == `{"celsius":21.5}`
		case "sensors/hall/temp":
			hall = string(e.Data) == `"plain text"`
		default:
			t.Errorf("unexpected topic %q", e.Subject)
		}
	}
	if !kitchen || !hall {
		t.Fatalf("envelopes %+v", fn.envelopes(t))
	}
}
