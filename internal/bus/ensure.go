package bus

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/nats-io/nats.go/jetstream"
)

// EnsureStream creates the stream, or updates it only when a setting Nimbus
// chooses differs: every node starts with this call, and an update that
// changes nothing still rewrites the stream's store configuration.
func (b *Bus) EnsureStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	if cfg.Replicas == 0 {
		cfg.Replicas = b.Replicas()
	}
	st, err := b.JS.Stream(ctx, cfg.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		st, err = b.JS.CreateStream(ctx, cfg)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			st, err = b.JS.Stream(ctx, cfg.Name)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", cfg.Name, err)
	}
	have := st.CachedInfo().Config
	if slices.Equal(have.Subjects, cfg.Subjects) && have.MaxMsgs == cfg.MaxMsgs && have.MaxBytes == cfg.MaxBytes &&
		have.MaxAge == cfg.MaxAge && have.Discard == cfg.Discard && (cfg.Duplicates == 0 || have.Duplicates == cfg.Duplicates) {
		return st, nil
	}
	if st, err = b.JS.UpdateStream(ctx, cfg); err != nil {
		return nil, fmt.Errorf("stream %s: %w", cfg.Name, err)
	}
	return st, nil
}

// OpenKeyValue opens a bucket, creating it when missing.
func (b *Bus) OpenKeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := b.JS.KeyValue(ctx, cfg.Bucket)
	if err == nil {
		return kv, nil
	}
	if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("bucket %s: %w", cfg.Bucket, err)
	}
	return b.KeyValue(ctx, cfg)
}
