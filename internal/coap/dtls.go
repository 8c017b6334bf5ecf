package coap

import (
	"context"
	"crypto/rand"
	"fmt"
	"sync"

	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/tether-iot/tether"
)

// psk returns the pre-shared key of a PSK identity (a device ID) during a
// DTLS handshake. For an identity that is not a device with a key it
// returns a random key, so that the handshake fails at its end exactly as
// with a wrong key (RFC 4279 §2 allows this) and a client cannot tell which
// device IDs exist.
func (g *Gateway) psk(identity []byte) ([]byte, error) {
	id := string(identity)
	ctx, cancel := context.WithTimeout(g.ctx, authTimeout)
	defer cancel()
	_, key, err := g.auth.DevicePSK(ctx, id)
	switch {
	case err == nil && len(key) > 0:
		return key, nil
	case err != nil && tether.ErrorCode(err) != tether.EUNAUTHORIZED:
		g.log.Error("coap dtls psk", "err", err)
		return nil, fmt.Errorf("coap dtls psk: %w", err)
	}
	g.log.Debug("coap dtls handshake with an unknown psk identity", "identity", truncate(id))
	key = make([]byte, 32)
	_, _ = rand.Read(key)
	return key, nil
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// session is a DTLS session.
type session struct {
	cc *udpClient.Conn
	// identity is the PSK identity, "" for a certificate cipher suite.
	identity string
	// device is the device of identity, nil until it has been looked up
	// after the handshake; guarded by sessions.mu.
	device *tether.Device
}

// sessions holds the DTLS sessions, by endpoint and by device.
type sessions struct {
	mu       sync.Mutex
	byConn   map[*udpClient.Conn]*session
	byDevice map[string][]*session // oldest first
}

func newSessions() *sessions {
	return &sessions{byConn: map[*udpClient.Conn]*session{}, byDevice: map[string][]*session{}}
}

// add registers a session. It returns the sessions of the same device it
// pushed out (maxDTLSSessionsPerDevice), and false when there are
// maxDTLSSessions already.
func (ss *sessions) add(s *session) (evicted []*session, ok bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if len(ss.byConn) >= maxDTLSSessions {
		return nil, false
	}
	ss.byConn[s.cc] = s
	if s.identity == "" {
		return nil, true
	}
	list := append(ss.byDevice[s.identity], s)
	for len(list) > maxDTLSSessionsPerDevice {
		evicted = append(evicted, list[0])
		delete(ss.byConn, list[0].cc)
		list = list[1:]
	}
	ss.byDevice[s.identity] = list
	return evicted, true
}

// setDevice records the device of a session, unless it was removed.
func (ss *sessions) setDevice(s *session, d *tether.Device) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.byConn[s.cc] == s {
		s.device = d
	}
}

// get returns the session of an endpoint, nil for plain UDP or a session
// that ended.
func (ss *sessions) get(cc *udpClient.Conn) *session {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.byConn[cc]
}

// device returns the device of a session.
func (ss *sessions) device(s *session) *tether.Device {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return s.device
}

// remove forgets a session.
func (ss *sessions) remove(s *session) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.removeLocked(s)
}

func (ss *sessions) removeLocked(s *session) {
	if ss.byConn[s.cc] == s {
		delete(ss.byConn, s.cc)
	}
	s.device = nil
	list := ss.byDevice[s.identity]
	for i, x := range list {
		if x == s {
			list = append(list[:i:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(ss.byDevice, s.identity)
	} else {
		ss.byDevice[s.identity] = list
	}
}

// removeDevice forgets and returns the sessions of a device.
func (ss *sessions) removeDevice(deviceID string) []*session {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	list := append([]*session(nil), ss.byDevice[deviceID]...)
	for _, s := range list {
		ss.removeLocked(s)
	}
	return list
}
