package wasm

import (
	"context"
	"errors"
	"time"
)

// Spares. A cold start's own work, beyond the first call, is instantiating
// the module: memory from the pool with the snapshot's image in it, globals,
// wazero's instance. A template keeps one spare instantiated ahead (package
// spare), so a cold start takes it instead. Only a module whose
// instantiation runs none of its code has spares: one served from its
// snapshot, or one without _initialize, nimbus_init and a start function.
// A spare has its memory but has never been called: it uses no CPU and
// bills nothing. The first spare is made when a template is prepared.

// errNoSpare: instantiating this module now would run its code.
var errNoSpare = errors.New("wasm: the module runs code when instantiated")

// buildSpare instantiates a spare instance.
func (t *template) buildSpare() (*reactor, error) {
	if _, snapshot, _ := t.current(); (t.hasInit || t.hasNimbusInit) && !snapshot {
		return nil, errNoSpare // it may have a snapshot by the next refill
	}
	if !t.acquire() {
		return nil, errClosed
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	in, err := t.newReactor(ctx)
	if err != nil {
		t.release()
		t.rt.log.Debug("making a spare instance failed", "function", t.spec.Function, "err", err)
		return nil, err
	}
	return in, nil
}
