// Package shadow keeps each device's shadow (its digital twin): the state
// the device last reported, the state apps want it in, the difference
// between the two (the delta), the time each field was last written, and a
// version for optimistic concurrency. A device may have several named
// shadows, one per component, besides its classic one (name "").
//
// An update is a JSON merge patch (RFC 7386) of either document, applied
// in one store transaction that compares and swaps the version, so that
// concurrent updates are never lost. After it commits the new shadow is
// published on the bus as an EventShadow event, which the gateways turn
// into delta messages and Observe notifications.
package shadow

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/tether-iot/tether"
)

// Defaults of Options.
const (
	DefaultMaxSize  = 16 << 10
	DefaultMaxDepth = 8
)

// Store keeps shadows.
type Store interface {
	// Shadow returns the shadow, a version 0 one with empty documents if
	// it was never written, or an ENOTFOUND error if the tenant has no
	// such device.
	Shadow(ctx context.Context, tenantID, deviceID, name string) (*tether.Shadow, error)
	// UpdateShadow calls apply with the current shadow (as Shadow returns
	// it) and stores what it returns with the next version, in one
	// transaction that fails with ECONFLICT if the version changed
	// meanwhile. An error from apply is returned as it is.
	UpdateShadow(ctx context.Context, tenantID, deviceID, name string,
		apply func(cur *tether.Shadow) (*tether.Shadow, error)) (*tether.Shadow, error)
	// ShadowNames returns the names of the device's named shadows.
	ShadowNames(ctx context.Context, tenantID, deviceID string) ([]string, error)
	// DeleteShadow deletes a shadow, or returns an ENOTFOUND error.
	DeleteShadow(ctx context.Context, tenantID, deviceID, name string) error
}

// Events publishes events on the bus.
type Events interface {
	PublishEvent(ctx context.Context, tenant, kind, device string, data []byte) error
}

// Options are the limits and helpers of a Service.
type Options struct {
	// MaxSize is the largest a document (desired or reported, as JSON)
	// may become, in bytes; DefaultMaxSize if 0.
	MaxSize int
	// MaxDepth is how deeply a document may nest objects and arrays;
	// DefaultMaxDepth if 0.
	MaxDepth int
	Logger   *slog.Logger
	// Now is the clock of the metadata timestamps; time.Now if nil.
	Now func() time.Time
}

// Service reads and updates shadows.
type Service struct {
	store    Store
	events   Events
	maxSize  int
	maxDepth int
	log      *slog.Logger
	now      func() time.Time
}

// New returns a shadow service over st that publishes every change to
// events.
func New(st Store, events Events, o Options) *Service {
	s := &Service{store: st, events: events, maxSize: o.MaxSize, maxDepth: o.MaxDepth, log: o.Logger, now: o.Now}
	if s.maxSize <= 0 {
		s.maxSize = DefaultMaxSize
	}
	if s.maxDepth <= 0 {
		s.maxDepth = DefaultMaxDepth
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	return s
}

// maxRetries bounds how often an unversioned update is retried when
// another update changed the shadow between its read and its write. The
// SQLite store reads and writes in one transaction on its one write
// connection, so there it never happens; a store with concurrent writers
// may see it.
const maxRetries = 10

func checkName(name string) error {
	if name != "" && !tether.ValidID(name) {
		return tether.Errorf(tether.EINVALID, "shadow name %q must be 1 to 64 letters, digits, '-' or '_'", truncate(name))
	}
	return nil
}

// Get returns a shadow with its delta. A shadow never written has version
// 0 and empty documents. It returns an ENOTFOUND error if the tenant has
// no such device.
func (s *Service) Get(ctx context.Context, tenant, deviceID, name string) (*tether.Shadow, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	sh, err := s.store.Shadow(ctx, tenant, deviceID, name)
	if err != nil {
		return nil, err
	}
	sh.State.Delta = delta(sh.State.Desired, sh.State.Reported)
	return sh, nil
}

// Update applies u to a shadow and returns the new one with its delta.
//
// u's desired and reported documents are merge patches (RFC 7386). If
// u.Version is not 0 it must be the shadow's current version, else the
// update is refused with ECONFLICT, its message naming the current
// version. It is refused with EINVALID for a bad name, an empty update or
// a document nested deeper than the limit, with ETOOLARGE if a document
// would outgrow the size limit, and with ENOTFOUND if the tenant has no
// such device. The new shadow is published as an EventShadow event.
func (s *Service) Update(ctx context.Context, tenant, deviceID, name string, u tether.ShadowUpdate) (*tether.Shadow, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	if u.Version < 0 {
		return nil, tether.Errorf(tether.EINVALID, "version %d is negative", u.Version)
	}
	if len(u.State.Desired) == 0 && len(u.State.Reported) == 0 {
		return nil, tether.Errorf(tether.EINVALID, "the update changes nothing: give state.desired or state.reported a field")
	}
	desired, err := s.checkPatch("desired", u.State.Desired)
	if err != nil {
		return nil, err
	}
	reported, err := s.checkPatch("reported", u.State.Reported)
	if err != nil {
		return nil, err
	}

	apply := func(cur *tether.Shadow) (*tether.Shadow, error) {
		if u.Version != 0 && u.Version != cur.Version {
			return nil, tether.Errorf(tether.ECONFLICT, "version %d is stale; the shadow is at version %d", u.Version, cur.Version)
		}
		now := s.now().UTC()
		at := now.Format(time.RFC3339Nano)
		next := &tether.Shadow{
			TenantID: tenant, DeviceID: deviceID, Name: name,
			State: tether.ShadowState{
				Desired:  copyDoc(cur.State.Desired),
				Reported: copyDoc(cur.State.Reported),
			},
			Metadata: tether.ShadowMetadata{
				Desired:  copyDoc(cur.Metadata.Desired),
				Reported: copyDoc(cur.Metadata.Reported),
			},
			Version:   cur.Version + 1,
			UpdatedAt: now,
		}
		merge(next.State.Desired, desired)
		stamp(next.Metadata.Desired, desired, at)
		merge(next.State.Reported, reported)
		stamp(next.Metadata.Reported, reported, at)
		if err := s.checkDoc("desired", next.State.Desired); err != nil {
			return nil, err
		}
		if err := s.checkDoc("reported", next.State.Reported); err != nil {
			return nil, err
		}
		return next, nil
	}

	var sh *tether.Shadow
	for try := 1; ; try++ {
		sh, err = s.store.UpdateShadow(ctx, tenant, deviceID, name, apply)
		// With u.Version 0 apply never refuses with ECONFLICT, so a
		// conflict is the store's compare-and-swap losing a race: read
		// again and reapply.
		if u.Version == 0 && tether.ErrorCode(err) == tether.ECONFLICT && try < maxRetries {
			continue
		}
		break
	}
	if err != nil {
		return nil, err
	}
	sh.State.Delta = delta(sh.State.Desired, sh.State.Reported)
	s.publish(ctx, sh)
	return sh, nil
}

// checkPatch returns a patch normalized to decoded JSON, or an EINVALID
// error naming the document.
func (s *Service) checkPatch(doc string, patch map[string]any) (map[string]any, error) {
	if d := depth(patch); d > s.maxDepth {
		return nil, tether.Errorf(tether.EINVALID, "state.%s nests %d levels deep; at most %d", doc, d, s.maxDepth)
	}
	p, err := normalize(patch)
	if err != nil {
		return nil, tether.Errorf(tether.EINVALID, "state.%s is not a JSON document: %v", doc, err)
	}
	return p, nil
}

// checkDoc checks a document an update would store against the limits.
func (s *Service) checkDoc(doc string, m map[string]any) error {
	if d := depth(m); d > s.maxDepth {
		return tether.Errorf(tether.EINVALID, "state.%s would nest %d levels deep; at most %d", doc, d, s.maxDepth)
	}
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode %s: %w", doc, err)
	}
	if len(b) > s.maxSize {
		return tether.Errorf(tether.ETOOLARGE, "state.%s would be %d bytes of JSON; the limit is %d bytes", doc, len(b), s.maxSize)
	}
	return nil
}

// publish announces a changed shadow. The change is stored already, so a
// bus failure is logged, not returned: the next update or a get brings
// the device and the apps up to date. The caller's cancellation is
// dropped: an app that hangs up after the commit must not cost the device
// its delta.
func (s *Service) publish(ctx context.Context, sh *tether.Shadow) {
	if s.events == nil {
		return
	}
	b, err := json.Marshal(sh)
	if err == nil {
		err = s.events.PublishEvent(context.WithoutCancel(ctx), sh.TenantID, tether.EventShadow, sh.DeviceID, b)
	}
	if err != nil {
		s.log.Warn("publish shadow event", "tenant", sh.TenantID, "device", sh.DeviceID, "shadow", sh.Name, "version", sh.Version, "err", err)
	}
}

// Names returns the names of the device's named shadows (not the classic
// one) in order. It returns an ENOTFOUND error if the tenant has no such
// device.
func (s *Service) Names(ctx context.Context, tenant, deviceID string) ([]string, error) {
	return s.store.ShadowNames(ctx, tenant, deviceID)
}

// Delete deletes a shadow. A later update starts it again at version 1.
// It returns an ENOTFOUND error if there is no such shadow.
func (s *Service) Delete(ctx context.Context, tenant, deviceID, name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	return s.store.DeleteShadow(ctx, tenant, deviceID, name)
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}
