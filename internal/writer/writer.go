// Package writer is the storage writer: it consumes accepted telemetry from
// the bus through a durable consumer and writes it to the store in
// batches, many messages per transaction, acknowledging each message only
// after its transaction has committed. A crash between commit and
// acknowledgement redelivers the batch, and the store drops the messages
// it already has (by message ID), so every message is stored exactly once.
package writer

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/telemetry"
)

// Store is where telemetry goes.
type Store interface {
	WriteMessages(ctx context.Context, msgs []tether.Message) (int, error)
	PruneDedup(ctx context.Context, before time.Time) (int64, error)
}

// Delivery is one message from the bus. The writer acknowledges (or
// refuses) each exactly once.
type Delivery interface {
	Data() []byte
	Ack() error
	Nak(delay time.Duration) error
}

// Source starts delivering telemetry to handle, from one goroutine, and
// returns a function that stops it: it first keeps delivering, until ctx
// ends, while the bus holds messages for this consumer (so a graceful
// shutdown writes what the gateways accepted), then stops and returns once
// no handle call runs.
type Source func(ctx context.Context, maxPending int, handle func(Delivery)) (stop func(ctx context.Context), err error)

// Options configure a [Writer].
type Options struct {
	Batch    int           // most messages per transaction
	MaxDelay time.Duration // longest a message waits for its batch to fill
	// DedupRetention is how long message IDs are remembered for
	// deduplication; it must exceed the longest a message can wait for
	// redelivery. Default 24h.
	DedupRetention time.Duration
	Logger         *slog.Logger
	// Observe, if set, is called after each committed batch. Benchmarks
	// use it to measure publish-to-stored latency.
	Observe func(msgs []tether.Message, committed time.Time)
}

// Writer is a running storage writer.
type Writer struct {
	store Store
	o     Options
	in    chan Delivery
	stop  func(context.Context)
	done  chan struct{}

	// abandon is closed when Close runs out of time: a batch the store
	// keeps refusing is then left unacknowledged on the bus, to be
	// delivered again after the restart, instead of holding up shutdown.
	abandon chan struct{}

	stored  atomic.Uint64
	batches atomic.Uint64
	closeMu sync.Once
}

// Start consumes from src and writes to store until Close.
func Start(ctx context.Context, store Store, src Source, o Options) (*Writer, error) {
	if o.DedupRetention == 0 {
		o.DedupRetention = 24 * time.Hour
	}
	w := &Writer{store: store, o: o, in: make(chan Delivery, o.Batch), done: make(chan struct{}), abandon: make(chan struct{})}
	// Twice the batch may be unacknowledged: one being written, one
	// filling. (The bus counts its own messages, each of which may carry
	// several deliveries; the channel is what bounds the writer.)
	stop, err := src(ctx, 2*o.Batch, func(d Delivery) {
		select {
		case w.in <- d:
		case <-w.abandon:
			// Shutting down past its deadline: leave it on the bus.
		}
	})
	if err != nil {
		return nil, fmt.Errorf("start storage writer: %w", err)
	}
	w.stop = stop
	go w.loop()
	return w, nil
}

// Close writes what the bus holds for the writer, stops consuming, and
// returns once all it received is committed and acknowledged, or when ctx
// ends: what is not written by then stays on the bus, unacknowledged, and
// is written after the next start.
func (w *Writer) Close(ctx context.Context) error {
	var err error
	w.closeMu.Do(func() {
		// When ctx ends, give up: a store that keeps failing must not hold
		// the process, and a consumer blocked on a full channel must not
		// keep the source from stopping.
		giveUp := make(chan struct{})
		go func() {
			select {
			case <-ctx.Done():
				close(w.abandon)
			case <-giveUp:
			}
		}()
		w.stop(ctx)
		close(w.in)
		<-w.done
		close(giveUp)
		if ctx.Err() != nil {
			err = fmt.Errorf("storage writer: stopped before everything was written; the rest stays on the bus: %w", ctx.Err())
		}
	})
	return err
}

// Stored returns the number of points written since start.
func (w *Writer) Stored() uint64 { return w.stored.Load() }

func (w *Writer) loop() {
	defer close(w.done)
	batch := make([]Delivery, 0, w.o.Batch)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	prune := time.NewTicker(time.Hour)
	defer prune.Stop()
	w.prune()
	for {
		select {
		case d, ok := <-w.in:
			if !ok {
				w.flush(batch)
				return
			}
			if len(batch) == 0 {
				timer.Reset(w.o.MaxDelay)
			}
			batch = append(batch, d)
			if len(batch) < w.o.Batch {
				continue
			}
			timer.Stop()
		case <-timer.C:
		case <-prune.C:
			w.prune()
			continue
		}
		w.flush(batch)
		batch = batch[:0]
	}
}

// flush writes a batch, retrying while the store fails: the messages stay
// on the bus meanwhile, so a failing store slows the writer down and never
// loses data.
func (w *Writer) flush(batch []Delivery) {
	if len(batch) == 0 {
		return
	}
	msgs := make([]tether.Message, 0, len(batch))
	keep := batch[:0:0]
	for _, d := range batch {
		m, err := telemetry.UnmarshalMessage(d.Data())
		if err != nil {
			// No retry can fix a message that does not decode; it cannot
			// have come from a Tether gateway.
			w.o.Logger.Error("storage writer: dropping undecodable bus message", "err", err, "bytes", len(d.Data()))
			_ = d.Ack()
			continue
		}
		msgs = append(msgs, m)
		keep = append(keep, d)
	}
	for attempt := 0; ; attempt++ {
		t0 := time.Now()
		n, err := w.store.WriteMessages(context.Background(), msgs)
		w.o.Logger.Debug("storage writer: batch", "messages", len(msgs), "points", n, "took", time.Since(t0))
		if err == nil {
			now := time.Now()
			w.stored.Add(uint64(n))
			w.batches.Add(1)
			for _, d := range keep {
				// A lost ack means a redelivery, which the store drops.
				_ = d.Ack()
			}
			if w.o.Observe != nil {
				w.o.Observe(msgs, now)
			}
			return
		}
		delay := min(time.Duration(1<<min(attempt, 6))*100*time.Millisecond, 5*time.Second)
		w.o.Logger.Error("storage writer: write failed; retrying", "err", err, "messages", len(msgs), "retry_in", delay)
		select {
		case <-time.After(delay):
		case <-w.abandon:
			return
		}
	}
}

func (w *Writer) prune() {
	n, err := w.store.PruneDedup(context.Background(), time.Now().Add(-w.o.DedupRetention))
	if err != nil {
		w.o.Logger.Warn("storage writer: prune dedup ids", "err", err)
	} else if n > 0 {
		w.o.Logger.Debug("storage writer: pruned dedup ids", "count", n)
	}
}
