package simulate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/client"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/udp"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/tether-iot/tether"
)

// coapRenew is how long a CoAP session lasts before the device starts a
// fresh one. UDP has no connection to lose: a node that restarted
// between two requests has forgotten the device's observations of
// /commands and /shadow without the device noticing, so it registers
// them again now and then, as RFC 7641 clients do.
const coapRenew = 2 * time.Minute

// coapLink is a device's CoAP "connection" over UDP: every request
// carries the token (?t=), and the device observes /commands (each
// notification a command) and /shadow (each notification the shadow,
// whose delta it follows).
type coapLink struct {
	cc    *udpclient.Conn
	query message.Option
	log   *slog.Logger
	in    chan incoming
	obs   []client.Observation

	stop      chan struct{}
	lost      chan struct{}
	closeOnce sync.Once
	lostOnce  sync.Once
	mu        sync.Mutex
	cause     error
	renew     *time.Timer
}

func dialCoAP(ctx context.Context, addr string, d Device, log *slog.Logger) (*coapLink, error) {
	cc, err := udp.Dial(addr, options.WithErrors(func(error) {}))
	if err != nil {
		return nil, fmt.Errorf("dial CoAP %s: %w", addr, err)
	}
	l := &coapLink{cc: cc, query: message.Option{ID: message.URIQuery, Value: []byte("t=" + url.QueryEscape(d.Token))},
		log: log, in: make(chan incoming, 16), stop: make(chan struct{}), lost: make(chan struct{})}
	go func() {
		select {
		case <-cc.Done():
			l.fail(errors.New("CoAP connection closed"))
		case <-l.stop:
		}
	}()
	// The first answer of /shadow is the shadow as it is, with the
	// desired state, maybe set while the device was away.
	for _, o := range []struct {
		path   string
		decode func([]byte) (incoming, error)
	}{
		{"/shadow", func(b []byte) (incoming, error) {
			d, r, err := decodeShadow(b)
			return incoming{desired: d, reported: r}, err
		}},
		{"/commands", func(b []byte) (incoming, error) {
			c, err := decodeCommand(b)
			return incoming{command: &c}, err
		}},
	} {
		obs, err := cc.Observe(ctx, o.path, func(m *pool.Message) { l.notified(o.path, m, o.decode) }, l.query)
		if err != nil {
			l.close()
			return nil, fmt.Errorf("CoAP observe %s: %w", o.path, err)
		}
		l.obs = append(l.obs, obs)
	}
	l.renew = time.AfterFunc(coapRenew, func() { l.fail(errRenew) })
	return l, nil
}

// notified hands a notification to the device's goroutine; the answer
// registering /commands is empty, and so is a shadow without a desired
// state.
func (l *coapLink) notified(path string, m *pool.Message, decode func([]byte) (incoming, error)) {
	if m.Code() != codes.Content {
		return
	}
	b, err := m.ReadBody()
	if err != nil || len(b) == 0 {
		return
	}
	in, err := decode(b)
	if err != nil {
		l.log.Warn("simulated device got a notification it cannot read", "path", path, "err", err)
		return
	}
	if in.command == nil && len(in.desired) == 0 && in.reported == nil {
		return
	}
	select {
	case l.in <- in:
	case <-l.stop:
	case <-l.lost:
	}
}

// post sends a JSON body and returns the answer's code and diagnostic.
func (l *coapLink) post(ctx context.Context, path string, v any) (codes.Code, string, error) {
	var b []byte
	switch v := v.(type) {
	case []byte:
		b = v
	default:
		var err error
		if b, err = json.Marshal(v); err != nil {
			return 0, "", err
		}
	}
	resp, err := l.cc.Post(ctx, path, message.AppJSON, bytes.NewReader(b), l.query)
	if err != nil {
		return 0, "", fmt.Errorf("CoAP POST %s: %w", path, err)
	}
	defer l.cc.ReleaseMessage(resp)
	var diag string
	if resp.Code() != codes.Changed {
		body, _ := resp.ReadBody()
		diag = string(body)
	}
	return resp.Code(), diag, nil
}

func (l *coapLink) telemetry(ctx context.Context, payload []byte) (string, error) {
	code, diag, err := l.post(ctx, "/telemetry", payload)
	switch {
	case err != nil:
		return "", err
	case code == codes.Unauthorized:
		return "", fmt.Errorf("CoAP telemetry: %v %s", code, diag)
	case code != codes.Changed:
		return fmt.Sprintf("%v %s", code, diag), nil
	}
	return "", nil
}

func (l *coapLink) report(ctx context.Context, reported map[string]any) error {
	code, diag, err := l.post(ctx, "/shadow", map[string]any{"state": map[string]any{"reported": reported}})
	if err == nil && code != codes.Changed {
		l.log.Debug("simulated shadow report refused", "code", code.String(), "reason", diag)
	}
	return err
}

func (l *coapLink) reply(ctx context.Context, id string, r tether.CommandReply) error {
	code, diag, err := l.post(ctx, "/commands/"+id+"/reply", r)
	if err == nil && code != codes.Changed {
		l.log.Debug("simulated command reply refused", "command", id, "code", code.String(), "reason", diag)
	}
	return err
}

// sync does nothing: the observation of /shadow notifies every change,
// and the session renewal (every coapRenew) reads the shadow again.
func (l *coapLink) sync(context.Context) error { return nil }

func (l *coapLink) incoming() <-chan incoming { return l.in }
func (l *coapLink) done() <-chan struct{}     { return l.lost }

func (l *coapLink) err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cause
}

func (l *coapLink) fail(err error) {
	l.lostOnce.Do(func() {
		l.mu.Lock()
		l.cause = err
		l.mu.Unlock()
		close(l.lost)
	})
}

// close ends the observations (telling the node, if it still listens)
// and the socket.
func (l *coapLink) close() {
	l.closeOnce.Do(func() {
		close(l.stop)
		if l.renew != nil {
			l.renew.Stop()
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		for _, o := range l.obs {
			_ = o.Cancel(ctx, l.query)
		}
		_ = l.cc.Close()
	})
}
