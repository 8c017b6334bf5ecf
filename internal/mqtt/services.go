package mqtt

import (
	"context"
	"sync"
	"time"

	"github.com/tether-iot/tether"
)

// Shadows reads and updates device shadows (the shadow service).
type Shadows interface {
	Get(ctx context.Context, tenant, deviceID, name string) (*tether.Shadow, error)
	Update(ctx context.Context, tenant, deviceID, name string, u tether.ShadowUpdate) (*tether.Shadow, error)
}

// Commands is the device side of the command service: the gateway says
// when a device can take commands, when one was delivered, and what the
// device replied. The gateway itself is the service's transport
// ([Gateway.Deliver]).
type Commands interface {
	// Ready offers the device its pending commands; resumed says that the
	// device's session (with the commands already sent to it) survived.
	Ready(ctx context.Context, tenant, deviceID string, resumed bool)
	Delivered(ctx context.Context, tenant, deviceID, id string) error
	Reply(ctx context.Context, tenant, deviceID, id string, r tether.CommandReply) (*tether.Command, error)
}

// Presence records when devices connect and disconnect. Connected returns
// the sequence number of the connection, which its Disconnected passes
// back, so that a late disconnect never overrides a newer connect.
type Presence interface {
	Connected(ctx context.Context, d *tether.Device, transport string) (seq int64, err error)
	Disconnected(ctx context.Context, d *tether.Device, seq int64, reason string) error
}

// Provisioner registers a device that presents a provisioning key and
// returns it with its new token.
type Provisioner interface {
	Register(ctx context.Context, key, deviceID, name string, labels map[string]string) (*tether.Device, string, error)
}

// Apps authenticates the API keys applications connect with to read
// their tenant's events.
type Apps interface {
	AuthenticateAPIKey(ctx context.Context, key string) (*tether.APIKey, error)
}

// serviceTimeout bounds a call to a service made off a client's packet
// loop; readyTimeout bounds Commands.Ready, which may deliver many
// commands.
const (
	serviceTimeout = 10 * time.Second
	readyTimeout   = 30 * time.Second
)

// queues runs functions one after another per key, each key on its own
// goroutine while it has work, so that the calls the gateway makes for a
// device (presence, command readiness and acknowledgements) keep their
// order without holding up the device's packet loop or any other device.
type queues struct {
	mu      sync.Mutex
	pending map[string][]func() // present while its goroutine runs
}

func newQueues() *queues { return &queues{pending: map[string][]func(){}} }

// do queues fn after what is queued for key.
func (s *queues) do(key string, fn func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q, running := s.pending[key]
	s.pending[key] = append(q, fn)
	if !running {
		go s.run(key)
	}
}

func (s *queues) run(key string) {
	for {
		s.mu.Lock()
		q := s.pending[key]
		if len(q) == 0 {
			delete(s.pending, key)
			s.mu.Unlock()
			return
		}
		fn := q[0]
		q[0] = nil
		s.pending[key] = q[1:]
		s.mu.Unlock()
		fn()
	}
}

// drain waits until nothing is queued or running, or ctx ends.
func (s *queues) drain(ctx context.Context) error {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		s.mu.Lock()
		n := len(s.pending)
		s.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}
