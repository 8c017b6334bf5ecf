package simulate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"

	"github.com/eclipse/paho.golang/paho"

	"github.com/tether-iot/tether"
)

// mqttLink is a device's MQTT 5 connection: username the device ID,
// password its token, client ID the device ID (a reconnection takes the
// old session over).
type mqttLink struct {
	cli  *paho.Client
	conn net.Conn
	base string // devices/<id>/
	log  *slog.Logger
	in   chan incoming

	stop      chan struct{} // closed by close
	lost      chan struct{} // closed when the connection fails
	closeOnce sync.Once
	lostOnce  sync.Once
	mu        sync.Mutex
	cause     error
}

// mqttKeepAlive is the devices' keep-alive, in seconds.
const mqttKeepAlive = 30

func dialMQTT(ctx context.Context, addr string, d Device, log *slog.Logger) (*mqttLink, error) {
	var nd net.Dialer
	conn, err := nd.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial MQTT %s: %w", addr, err)
	}
	l := &mqttLink{conn: conn, base: "devices/" + d.ID + "/", log: log, in: make(chan incoming, 16),
		stop: make(chan struct{}), lost: make(chan struct{})}
	l.cli = paho.NewClient(paho.ClientConfig{
		Conn:               conn,
		OnPublishReceived:  []func(paho.PublishReceived) (bool, error){l.received},
		OnClientError:      func(err error) { l.fail(err) },
		OnServerDisconnect: func(dc *paho.Disconnect) { l.fail(fmt.Errorf("the server disconnected: reason %#x", dc.ReasonCode)) },
	})
	ca, err := l.cli.Connect(ctx, &paho.Connect{
		ClientID: d.ID, KeepAlive: mqttKeepAlive, CleanStart: true,
		Username: d.ID, UsernameFlag: true, Password: []byte(d.Token), PasswordFlag: true,
	})
	if err != nil {
		_ = conn.Close()
		if ca != nil && ca.ReasonCode >= 0x80 {
			reason := ""
			if ca.Properties != nil {
				reason = ca.Properties.ReasonString
			}
			return nil, fmt.Errorf("MQTT connect refused: reason %#x %s", ca.ReasonCode, reason)
		}
		return nil, fmt.Errorf("MQTT connect: %w", err)
	}
	go func() {
		select {
		case <-l.cli.Done():
			l.fail(errors.New("MQTT connection closed"))
		case <-l.stop:
		}
	}()
	sa, err := l.cli.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: l.base + "commands/+", QoS: 1},
		{Topic: l.base + "shadow/delta", QoS: 1},
		{Topic: l.base + "shadow/get/accepted", QoS: 1},
	}})
	if err == nil {
		for _, code := range sa.Reasons {
			if code >= 0x80 {
				err = fmt.Errorf("subscription refused: reason %#x", code)
			}
		}
	}
	if err != nil {
		l.close()
		return nil, fmt.Errorf("MQTT subscribe: %w", err)
	}
	// The answer brings the desired state, maybe set while the device was away.
	if err := l.sync(ctx); err != nil {
		l.close()
		return nil, err
	}
	return l, nil
}

// sync asks for the device's shadow; the answer comes on
// shadow/get/accepted, as an incoming with the desired and reported
// states.
func (l *mqttLink) sync(ctx context.Context) error {
	refused, err := l.publish(ctx, l.base+"shadow/get", []byte("{}"))
	if err != nil {
		return fmt.Errorf("MQTT shadow get: %w", err)
	}
	if refused != "" {
		l.log.Debug("simulated shadow get refused", "reason", refused)
	}
	return nil
}

// received takes a message from the node (on paho's goroutine) and hands
// it to the device's, waiting while the device is busy: a command is
// acknowledged (delivered) only once the device has it.
func (l *mqttLink) received(pr paho.PublishReceived) (bool, error) {
	rest, ok := strings.CutPrefix(pr.Packet.Topic, l.base)
	if !ok {
		return false, nil
	}
	var (
		in  incoming
		err error
	)
	switch {
	case strings.HasPrefix(rest, "commands/"):
		var c command
		if c, err = decodeCommand(pr.Packet.Payload); err == nil {
			in.command = &c
		}
	case rest == "shadow/delta":
		in.desired, err = decodeDelta(pr.Packet.Payload)
		in.delta = true
	case rest == "shadow/get/accepted":
		// Even with no desired state: its reported state tells the device
		// whether its last report was stored.
		in.desired, in.reported, err = decodeShadow(pr.Packet.Payload)
	default:
		return false, nil
	}
	if err != nil {
		l.log.Warn("simulated device got a message it cannot read", "topic", pr.Packet.Topic, "err", err)
		return true, nil
	}
	select {
	case l.in <- in:
	case <-l.stop:
	case <-l.lost:
	}
	return true, nil
}

func (l *mqttLink) publish(ctx context.Context, topic string, payload []byte) (refused string, err error) {
	resp, err := l.cli.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: payload})
	if resp != nil && resp.ReasonCode >= 0x80 {
		refused = fmt.Sprintf("reason %#x", resp.ReasonCode)
		if resp.Properties != nil && resp.Properties.ReasonString != "" {
			refused += " " + resp.Properties.ReasonString
		}
		return refused, nil
	}
	if err != nil {
		return "", fmt.Errorf("MQTT publish: %w", err)
	}
	return "", nil
}

func (l *mqttLink) telemetry(ctx context.Context, payload []byte) (string, error) {
	return l.publish(ctx, l.base+"telemetry", payload)
}

func (l *mqttLink) report(ctx context.Context, reported map[string]any) error {
	b, err := json.Marshal(map[string]any{"state": map[string]any{"reported": reported}})
	if err != nil {
		return err
	}
	refused, err := l.publish(ctx, l.base+"shadow/update", b)
	if refused != "" {
		l.log.Debug("simulated shadow report refused", "reason", refused)
	}
	return err
}

func (l *mqttLink) reply(ctx context.Context, id string, r tether.CommandReply) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	refused, err := l.publish(ctx, l.base+"commands/"+id+"/reply", b)
	if refused != "" {
		// A reply after the command timed out, for instance.
		l.log.Debug("simulated command reply refused", "command", id, "reason", refused)
	}
	return err
}

func (l *mqttLink) incoming() <-chan incoming { return l.in }
func (l *mqttLink) done() <-chan struct{}     { return l.lost }

func (l *mqttLink) err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cause
}

func (l *mqttLink) fail(err error) {
	l.lostOnce.Do(func() {
		l.mu.Lock()
		l.cause = err
		l.mu.Unlock()
		close(l.lost)
	})
}

// close disconnects cleanly (the node records a clean disconnect).
func (l *mqttLink) close() {
	l.closeOnce.Do(func() {
		close(l.stop)
		_ = l.cli.Disconnect(&paho.Disconnect{ReasonCode: 0})
		_ = l.conn.Close()
	})
}
