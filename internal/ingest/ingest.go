// Package ingest is the one path every gateway (MQTT now; CoAP and HTTP
// later) sends device telemetry through: decode and validate the payload,
// put the accepted message on the bus and return only once the bus has
// stored it, and count and log what was refused. Keeping it in one place
// is what makes the payload rules and the delivery guarantee the same on
// every protocol.
package ingest

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/limit"
	"github.com/tether-iot/tether/internal/telemetry"
)

// Publisher stores an encoded message durably on the bus. It must not use
// data after it returns: the Ingestor reuses the buffer.
type Publisher interface {
	PublishTelemetry(ctx context.Context, tenant, device, msgID string, data []byte) error
}

// Checker looks at the decoded points of a device's message before they
// go on the bus, and marks those that break the device's profile by
// setting their Quarantine reason. It must return at once for a device
// without a profile: it runs on every message.
type Checker interface {
	Check(ctx context.Context, d *tether.Device, pts []tether.Point)
}

// hooks are what [Ingestor.Use] adds to the accept path.
type hooks struct {
	check Checker
	seen  func(d *tether.Device)
}

// logEvery is how often a device's refused messages are logged: once per
// device per period, with the count of those not logged, so a device that
// sends garbage a thousand times a second cannot flood the log.
const logEvery = time.Minute

// Ingestor accepts telemetry from gateways.
type Ingestor struct {
	pub    Publisher
	hooks  atomic.Pointer[hooks]
	limits telemetry.Limits
	rate   *limit.Keyed // per device, every protocol's publishes together
	log    *slog.Logger
	now    func() time.Time
	ids    idSource
	// bufs holds encoding buffers (*[]byte): a message is encoded, handed
	// to the bus, which copies it, and the buffer is used again.
	bufs sync.Pool

	accepted atomic.Uint64
	points   atomic.Uint64
	failed   atomic.Uint64 // the bus did not take an accepted message
	// failLogged is when a bus failure was last logged (unix ns): at most
	// one a second, as a full or absent bus fails every message.
	failLogged atomic.Int64

	mu      sync.Mutex
	devices map[string]*deviceRejects
	reasons map[string]uint64
}

type deviceRejects struct {
	total      uint64
	lastLog    time.Time
	suppressed uint64
}

// New returns an Ingestor that publishes to pub and lets each device
// publish at most publishRate messages per second (bursts of one second's
// worth); 0 means no limit.
func New(pub Publisher, limits telemetry.Limits, publishRate int, log *slog.Logger) *Ingestor {
	var rate *limit.Keyed
	if publishRate > 0 {
		rate = limit.New(float64(publishRate), publishRate)
	}
	in := &Ingestor{
		pub: pub, limits: limits, rate: rate, log: log, now: time.Now,
		devices: map[string]*deviceRejects{},
		reasons: map[string]uint64{},
	}
	_, _ = rand.Read(in.ids.prefix[:])
	return in
}

// Use makes every accepted message go through c (if not nil) after it is
// decoded and before it is published, so that points breaking the
// device's profile cross the bus marked as quarantined; and calls seen
// (if not nil) with the device after each message the bus took, for
// presence. A message refused by the decoder or the bus is not seen.
// Call it before the gateways start; a later call replaces both.
func (in *Ingestor) Use(c Checker, seen func(d *tether.Device)) {
	in.hooks.Store(&hooks{check: c, seen: seen})
}

// Limits returns the payload limits in force.
func (in *Ingestor) Limits() telemetry.Limits { return in.limits }

// ErrBus wraps a failure to put an accepted message on the bus: the
// message is not stored and the device must send it again.
var ErrBus = errors.New("bus unavailable")

// Accept decodes payload as telemetry of d and returns once the bus has
// stored it, with the number of points. A refused payload returns a
// *telemetry.Error (counted and logged here); a bus failure returns an
// error wrapping [ErrBus] and a *tether.Error with EUNAVAILABLE.
func (in *Ingestor) Accept(ctx context.Context, d *tether.Device, payload []byte) (int, error) {
	return in.accept(ctx, d, payload, telemetry.Decode)
}

// AcceptCBOR is [Ingestor.Accept] for a CBOR payload (RFC 8949):
// [telemetry.DecodeCBOR] converts it and applies the same rules, and a
// refusal of either the conversion or the rules is counted the same way.
func (in *Ingestor) AcceptCBOR(ctx context.Context, d *tether.Device, payload []byte) (int, error) {
	return in.accept(ctx, d, payload, telemetry.DecodeCBOR)
}

type decodeFunc func(payload []byte, now time.Time, lim telemetry.Limits) ([]tether.Point, error)

func (in *Ingestor) accept(ctx context.Context, d *tether.Device, payload []byte, decode decodeFunc) (int, error) {
	now := in.now()
	points, err := decode(payload, now, in.limits)
	if err != nil {
		in.reject(d, err)
		return 0, err
	}
	h := in.hooks.Load()
	if h != nil && h.check != nil {
		h.check.Check(ctx, d, points)
	}
	m := tether.Message{ID: in.ids.next(), TenantID: d.TenantID, DeviceID: d.ID, ReceivedAt: now.UTC(), Points: points}
	buf, _ := in.bufs.Get().(*[]byte)
	if buf == nil {
		buf = new([]byte)
	}
	data, err := telemetry.AppendMessage((*buf)[:0], m)
	if err != nil {
		return 0, fmt.Errorf("encode message: %w", err)
	}
	err = in.pub.PublishTelemetry(ctx, d.TenantID, d.ID, m.ID, data)
	if cap(data) <= maxPooledBuffer {
		*buf = data
		in.bufs.Put(buf)
	}
	if err != nil {
		n := in.failed.Add(1)
		if last := in.failLogged.Load(); now.UnixNano()-last >= int64(time.Second) && in.failLogged.CompareAndSwap(last, now.UnixNano()) {
			in.log.Warn("telemetry not accepted: bus failed", "device", d.ID, "err", err, "bus_failures_total", n)
		}
		return 0, errors.Join(ErrBus, tether.Errorf(tether.EUNAVAILABLE, "the message could not be stored; send it again"), err)
	}
	in.accepted.Add(1)
	in.points.Add(uint64(len(points)))
	if h != nil && h.seen != nil {
		h.seen(d)
	}
	return len(points), nil
}

// ReasonRateLimited is the refusal reason counted for a message over its
// device's publish rate.
const ReasonRateLimited = "rate_limited"

// Allow takes one message from the device's publish budget. Every gateway
// calls it for every message a device publishes (telemetry or not) before
// anything else; when it says no, the message is dropped, counted as
// refused with reason [ReasonRateLimited], and the device should be told
// to wait retryAfter where its protocol can say so.
func (in *Ingestor) Allow(d *tether.Device) (ok bool, retryAfter time.Duration) {
	if in.rate == nil || in.rate.Allow(d.ID) {
		return true, 0
	}
	in.count(d, ReasonRateLimited, tether.Errorf(tether.ETOOMANY, "over the device's publish rate"))
	return false, in.rate.RetryAfter(d.ID)
}

// Throttle is Allow for a protocol that cannot say "no" to a message it
// must acknowledge (an MQTT 3.1.1 QoS 1 or 2 publish): it waits for the
// device's next token if that comes within most, which slows the device
// down without dropping what it sent. It returns false, counted as a
// refusal, when the wait would be longer; the caller must then not
// acknowledge the message.
func (in *Ingestor) Throttle(ctx context.Context, d *tether.Device, most time.Duration) bool {
	if in.rate == nil || in.rate.Wait(ctx, d.ID, most) {
		return true
	}
	in.count(d, ReasonRateLimited, tether.Errorf(tether.ETOOMANY, "over the device's publish rate"))
	return false
}

func (in *Ingestor) reject(d *tether.Device, err error) {
	reason := "invalid"
	var te *telemetry.Error
	if errors.As(err, &te) {
		reason = te.Reason
	}
	in.count(d, reason, err)
}

// count records one refused message of a device and logs it, at most once
// per device per minute.
func (in *Ingestor) count(d *tether.Device, reason string, err error) {
	now := in.now()
	in.mu.Lock()
	in.reasons[reason]++
	r := in.devices[d.ID]
	if r == nil {
		r = &deviceRejects{}
		in.devices[d.ID] = r
	}
	r.total++
	logIt := now.Sub(r.lastLog) >= logEvery
	suppressed := r.suppressed
	if logIt {
		r.lastLog, r.suppressed = now, 0
	} else {
		r.suppressed++
	}
	in.mu.Unlock()
	if logIt {
		in.log.Warn("telemetry refused", "device", d.ID, "tenant", d.TenantID, "reason", reason,
			"err", tether.ErrorMessage(err), "refused_since_last_log", suppressed)
	}
}

// Stats are counters since the process started.
type Stats struct {
	Accepted  uint64            `json:"accepted_messages"`
	Points    uint64            `json:"accepted_points"`
	BusFailed uint64            `json:"bus_failures"`
	Refused   map[string]uint64 `json:"refused_by_reason"`
}

// Stats returns the counters.
func (in *Ingestor) Stats() Stats {
	s := Stats{Accepted: in.accepted.Load(), Points: in.points.Load(), BusFailed: in.failed.Load(), Refused: map[string]uint64{}}
	in.mu.Lock()
	for k, v := range in.reasons {
		s.Refused[k] = v
	}
	in.mu.Unlock()
	return s
}

// Refused returns how many messages of a device were refused since the
// process started.
func (in *Ingestor) Refused(deviceID string) uint64 {
	in.mu.Lock()
	defer in.mu.Unlock()
	if r := in.devices[deviceID]; r != nil {
		return r.total
	}
	return 0
}

// Forget drops a deleted device's counters.
func (in *Ingestor) Forget(deviceID string) {
	in.mu.Lock()
	delete(in.devices, deviceID)
	in.mu.Unlock()
}

// maxPooledBuffer is the largest encoding buffer kept for reuse, so that
// one large payload does not keep its buffer for good.
const maxPooledBuffer = 64 << 10

// idSource makes message IDs: 32 hexadecimal digits, a random half drawn
// once per Ingestor and a counter. The random half keeps the IDs of
// different processes and nodes apart; the counter makes each ID cheap
// (crypto/rand per message cost a system call), and because it is written
// big-endian a process's IDs sort in the order they were made, so the
// store's dedupe table takes them at the end of its index instead of on a
// random page each.
type idSource struct {
	prefix [8]byte // random, drawn by New
	seq    atomic.Uint64
}

func (s *idSource) next() string {
	var raw [16]byte
	copy(raw[:8], s.prefix[:])
	binary.BigEndian.PutUint64(raw[8:], s.seq.Add(1))
	var id [32]byte
	hex.Encode(id[:], raw[:])
	return string(id[:])
}
