package coap_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	piondtls "github.com/pion/dtls/v3"
	dtlsnet "github.com/pion/dtls/v3/pkg/net"
	"github.com/plgd-dev/go-coap/v3/dtls"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/udp"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/coap"
	"github.com/tether-iot/tether/internal/ingest"
)

func dialUDP(t *testing.T, e *env) *udpClient.Conn {
	t.Helper()
	cc, err := udp.Dial(e.g.Addr())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// dialDTLS opens a DTLS session with a pre-shared key.
func dialDTLS(t *testing.T, e *env, identity, key string) (*udpClient.Conn, error) {
	t.Helper()
	return dialDTLSWith(t, e,
		piondtls.WithPSK(func([]byte) ([]byte, error) { return []byte(key), nil }),
		piondtls.WithPSKIdentityHint([]byte(identity)),
		piondtls.WithCipherSuites(piondtls.TLS_PSK_WITH_AES_128_CCM_8),
	)
}

// dialDTLSWith opens a DTLS session, completing the handshake before
// handing the connection to go-coap. Left to go-coap, the handshake would
// run on the first read or write, and a failed one (DTLS has no alert for a
// wrong key: the server drops what it cannot decrypt) can leave the
// client's reader holding pion's handshake lock with no deadline.
func dialDTLSWith(t *testing.T, e *env, opts ...piondtls.ClientOption) (*udpClient.Conn, error) {
	t.Helper()
	raddr, err := net.ResolveUDPAddr("udp", e.g.DTLSAddr())
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.DialUDP("udp", nil, raddr)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := piondtls.ClientWithOptions(dtlsnet.PacketConnFromConn(pc), raddr, opts...)
	if err != nil {
		_ = pc.Close()
		return nil, err
	}
	c, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := conn.HandshakeContext(c); err != nil {
		_ = conn.Close()
		_ = pc.Close()
		return nil, err
	}
	cc := dtls.Client(conn, options.WithErrors(func(error) {}), options.WithCloseSocket())
	t.Cleanup(func() { _ = cc.Close() })
	return cc, nil
}

// handshake opens a DTLS session and posts telemetry on it.
func handshake(t *testing.T, e *env, identity, key string) error {
	t.Helper()
	cc, err := dialDTLS(t, e, identity, key)
	if err != nil {
		return err
	}
	resp, err := cc.Post(ctx(t), "/telemetry", message.AppJSON, bytes.NewReader([]byte(`{"temp":1}`)))
	if err != nil {
		return err
	}
	if resp.Code() != codes.Changed {
		return fmt.Errorf("code %v", resp.Code())
	}
	return nil
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

// maxAge returns a response's Max-Age, -1 when it has none.
func maxAge(m *pool.Message) int {
	v, err := m.GetOptionUint32(message.MaxAge)
	if err != nil {
		return -1
	}
	return int(v)
}

func body(t *testing.T, m *pool.Message) string {
	t.Helper()
	b, err := m.ReadBody()
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return string(b)
}

func TestTelemetry(t *testing.T) {
	const noCF = message.MediaType(65535)
	busDown := errors.Join(ingest.ErrBus, tether.Errorf(tether.EUNAVAILABLE, "the message could not be stored; send it again"))
	tests := []struct {
		name       string
		setup      func(*env)
		method     codes.Code
		path       string
		opts       []message.Option
		cf         message.MediaType
		payload    string
		wantCode   codes.Code
		wantMaxAge int // -1: no Max-Age
		wantDiag   string
		wantStored string // the payload ingest accepted, "" for none
	}{
		{
			name: "a JSON payload with the device token is answered 2.04 and reaches ingest", method: codes.POST, path: "/telemetry",
			opts: []message.Option{query("t=" + token)}, cf: message.AppJSON, payload: `{"temp":21.5}`,
			wantCode: codes.Changed, wantMaxAge: -1, wantStored: `{"temp":21.5}`,
		},
		{
			name: "a payload without Content-Format is read as JSON", method: codes.POST, path: "/telemetry",
			opts: []message.Option{query("t=" + token)}, cf: noCF, payload: `{"temp":21.5}`,
			wantCode: codes.Changed, wantMaxAge: -1, wantStored: `{"temp":21.5}`,
		},
		{
			name: "a CBOR payload is converted to JSON in key order", method: codes.POST, path: "/telemetry",
			opts: []message.Option{query("t=" + token)}, cf: message.AppCBOR,
			payload:  "\xa2\x64temp\xf9\x4d\x60\x62on\xf5", // {"temp": 21.5 (half float), "on": true}
			wantCode: codes.Changed, wantMaxAge: -1, wantStored: `{"temp":21.5,"on":true}`,
		},
		{
			name: "a request without a token is refused 4.01", method: codes.POST, path: "/telemetry",
			cf: message.AppJSON, payload: `{"temp":21.5}`,
			wantCode: codes.Unauthorized, wantMaxAge: -1, wantDiag: "t=<device>.<secret>",
		},
		{
			name: "a wrong token is refused 4.01", method: codes.POST, path: "/telemetry",
			opts: []message.Option{query("t=sensor-1.wrong")}, cf: message.AppJSON, payload: `{"temp":21.5}`,
			wantCode: codes.Unauthorized, wantMaxAge: -1, wantDiag: "wrong",
		},
		{
			name: "an unknown query parameter is refused 4.00", method: codes.POST, path: "/telemetry",
			opts: []message.Option{query("token=" + token)}, cf: message.AppJSON, payload: `{"temp":21.5}`,
			wantCode: codes.BadRequest, wantMaxAge: -1, wantDiag: `unknown query parameter "token"`,
		},
		{
			name: "a token given twice is refused 4.00", method: codes.POST, path: "/telemetry",
			opts: []message.Option{query("t=" + token), query("t=" + token)}, cf: message.AppJSON, payload: `{"temp":21.5}`,
			wantCode: codes.BadRequest, wantMaxAge: -1, wantDiag: "twice",
		},
		{
			name: "malformed JSON is refused 4.00 with the decoder's reason", method: codes.POST, path: "/telemetry",
			opts: []message.Option{query("t=" + token)}, cf: message.AppJSON, payload: `{"temp":`,
			wantCode: codes.BadRequest, wantMaxAge: -1, wantDiag: "malformed_json",
		},
		{
			name: "a payload that breaks the payload rules is refused 4.00", method: codes.POST, path: "/telemetry",
			opts: []message.Option{query("t=" + token)}, cf: message.AppJSON, payload: `{"temp":null}`,
			wantCode: codes.BadRequest, wantMaxAge: -1, wantDiag: "bad_value",
		},
		{
			name: "malformed CBOR is refused 4.00", method: codes.POST, path: "/telemetry",
			opts: []message.Option{query("t=" + token)}, cf: message.AppCBOR, payload: "\xa1\x64te",
			wantCode: codes.BadRequest, wantMaxAge: -1, wantDiag: "malformed_cbor",
		},
		{
			name: "a CBOR byte string is refused 4.00 naming where it is", method: codes.POST, path: "/telemetry",
			opts: []message.Option{query("t=" + token)}, cf: message.AppCBOR, payload: "\xa1\x63raw\x42\x01\x02",
			wantCode: codes.BadRequest, wantMaxAge: -1, wantDiag: `byte string is not a value; send a number, a boolean or text at "raw"`,
		},
		{
			name: "text/plain is refused 4.15", method: codes.POST, path: "/telemetry",
			opts: []message.Option{query("t=" + token)}, cf: message.TextPlain, payload: `temp=21.5`,
			wantCode: codes.UnsupportedMediaType, wantMaxAge: -1, wantDiag: "Content-Format 0",
		},
		{
			name: "a device over its publish rate is refused 4.29 with Max-Age", setup: func(e *env) { e.in.deny = 1500 * time.Millisecond },
			method: codes.POST, path: "/telemetry",
			opts: []message.Option{query("t=" + token)}, cf: message.AppJSON, payload: `{"temp":21.5}`,
			wantCode: codes.TooManyRequests, wantMaxAge: 2, wantDiag: "publish rate",
		},
		{
			name: "a bus failure is answered 5.03 with Max-Age", setup: func(e *env) { e.in.busErr = busDown },
			method: codes.POST, path: "/telemetry",
			opts: []message.Option{query("t=" + token)}, cf: message.AppJSON, payload: `{"temp":21.5}`,
			wantCode: codes.ServiceUnavailable, wantMaxAge: 5, wantDiag: "send it again",
		},
		{
			name: "a credential that cannot be checked is answered 5.03", setup: func(e *env) { e.auth.err = errors.New("store down") },
			method: codes.POST, path: "/telemetry",
			opts: []message.Option{query("t=" + token)}, cf: message.AppJSON, payload: `{"temp":21.5}`,
			wantCode: codes.ServiceUnavailable, wantMaxAge: 5, wantDiag: "could not be checked",
		},
		{
			name: "a payload over the limit is refused 4.13", setup: func(e *env) { e.in.limits.MaxPayload = 64 },
			method: codes.POST, path: "/telemetry",
			opts: []message.Option{query("t=" + token)}, cf: message.AppJSON, payload: `{"temp":21.5,"padding":"` + strings.Repeat("x", 100) + `"}`,
			wantCode: codes.RequestEntityTooLarge, wantMaxAge: -1, wantDiag: "at most 64 bytes",
		},
		{
			name: "PUT /telemetry is refused 4.05", method: codes.PUT, path: "/telemetry",
			opts: []message.Option{query("t=" + token)}, cf: message.AppJSON, payload: `{"temp":21.5}`,
			wantCode: codes.MethodNotAllowed, wantMaxAge: -1, wantDiag: "POST",
		},
		{
			name: "an unknown path is refused 4.04", method: codes.GET, path: "/nothing",
			wantCode: codes.NotFound, wantMaxAge: -1, wantDiag: ".well-known/core",
		},
		{
			name: "GET /latest of a device over its publish rate is refused 4.29 with Max-Age", setup: func(e *env) { e.in.deny = 1500 * time.Millisecond },
			method: codes.GET, path: "/latest", opts: []message.Option{query("t=" + token)},
			wantCode: codes.TooManyRequests, wantMaxAge: 2, wantDiag: "publish rate",
		},
		{
			name: "GET /latest with an Accept other than JSON or CBOR is refused 4.06", method: codes.GET, path: "/latest",
			opts:     []message.Option{query("t=" + token), {ID: message.Accept, Value: []byte{0}}},
			wantCode: codes.NotAcceptable, wantMaxAge: -1, wantDiag: "application/json",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := start(t, func(e *env) {
				if tt.setup != nil {
					tt.setup(e)
				}
			})
			cc := dialUDP(t, e)
			req := cc.AcquireMessage(ctx(t))
			defer cc.ReleaseMessage(req)
			tok, _ := cc.GetToken()
			req.SetCode(tt.method)
			req.SetToken(tok)
			req.ResetOptionsTo(tt.opts)
			if err := req.SetPath(tt.path); err != nil {
				t.Fatal(err)
			}
			if tt.payload != "" {
				req.SetBody(bytes.NewReader([]byte(tt.payload)))
			}
			if tt.cf != noCF && tt.payload != "" {
				req.SetContentFormat(tt.cf)
			}
			resp, err := cc.Do(req)
			if err != nil {
				t.Fatalf("request: %v", err)
			}
			if resp.Code() != tt.wantCode {
				t.Fatalf("code %v %q, want %v", resp.Code(), body(t, resp), tt.wantCode)
			}
			if got := maxAge(resp); got != tt.wantMaxAge {
				t.Errorf("Max-Age %d, want %d", got, tt.wantMaxAge)
			}
			if got := body(t, resp); !strings.Contains(got, tt.wantDiag) {
				t.Errorf("diagnostic %q does not contain %q", got, tt.wantDiag)
			}
			if tt.wantCode >= codes.BadRequest && resp.HasOption(message.ContentFormat) {
				t.Errorf("the diagnostic has a Content-Format; RFC 7252 §5.5.2 gives it none")
			}
			var want []acceptedMsg
			if tt.wantStored != "" {
				want = []acceptedMsg{{deviceID, tt.wantStored}}
			}
			if got := e.in.got(); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("ingest accepted %v, want %v", got, want)
			}
		})
	}
}

func TestTelemetryIsAnsweredOnlyOnceTheBusHasIt(t *testing.T) {
	for _, tt := range []struct {
		name     string
		typ      message.Type
		wantType message.Type
	}{
		{"a confirmable request gets a piggybacked 2.04 after Accept returned", message.Confirmable, message.Acknowledgement},
		{"a non-confirmable request gets a non-confirmable 2.04 after Accept returned", message.NonConfirmable, message.NonConfirmable},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := start(t, func(e *env) { e.in.hold = true })
			c := dialRaw(t, e.g.Addr())
			mid := c.send(message.Message{
				Type: tt.typ, Code: codes.POST, Token: []byte{1, 2, 3, 4},
				Options: message.Options{
					{ID: message.URIPath, Value: []byte("telemetry")},
					{ID: message.ContentFormat, Value: []byte{byte(message.AppJSON)}},
					{ID: message.URIQuery, Value: []byte("t=" + token)},
				},
				Payload: []byte(`{"temp":21.5}`),
			})
			select {
			case <-e.in.entered:
			case <-time.After(5 * time.Second):
				t.Fatal("Accept was not called")
			}
			if m, ok := c.recv(500 * time.Millisecond); ok {
				t.Fatalf("answered before Accept returned: %v", m.String())
			}
			close(e.in.release)
			m := c.must(5 * time.Second)
			if m.Code != codes.Changed || m.Type != tt.wantType || !bytes.Equal(m.Token, []byte{1, 2, 3, 4}) {
				t.Fatalf("got %v, want 2.04 of type %v", m.String(), tt.wantType)
			}
			if tt.typ == message.Confirmable && m.MessageID != mid {
				t.Errorf("ACK message ID %d, want %d", m.MessageID, mid)
			}
			select {
			case <-e.in.returned:
			default:
				t.Error("answered although Accept has not returned")
			}
		})
	}
}

func TestConfirmableAndNonConfirmableRequests(t *testing.T) {
	for _, tt := range []struct {
		name     string
		typ      message.Type
		wantType message.Type
	}{
		{"a confirmable POST from go-coap is acknowledged with 2.04", message.Confirmable, message.Acknowledgement},
		{"a non-confirmable POST from go-coap is answered non-confirmable", message.NonConfirmable, message.NonConfirmable},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := start(t)
			cc := dialUDP(t, e)
			req, err := cc.NewPostRequest(ctx(t), "/telemetry", message.AppJSON, bytes.NewReader([]byte(`{"n":1}`)), query("t="+token))
			if err != nil {
				t.Fatal(err)
			}
			defer cc.ReleaseMessage(req)
			req.SetType(tt.typ)
			resp, err := cc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			if resp.Code() != codes.Changed || resp.Type() != tt.wantType {
				t.Fatalf("got %v %v, want 2.04 %v", resp.Code(), resp.Type(), tt.wantType)
			}
			if got := e.in.got(); len(got) != 1 {
				t.Fatalf("ingest accepted %v", got)
			}
		})
	}
}

// bigJSON returns a valid telemetry payload of about n bytes.
func bigJSON(n int) string {
	var b strings.Builder
	b.WriteString("{")
	for i := 0; b.Len() < n-20; i++ {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `"key%04d":%d`, i, i)
	}
	b.WriteString("}")
	return b.String()
}

func TestBlockwiseTelemetry(t *testing.T) {
	t.Run("a body of several blocks under the limit is reassembled and accepted", func(t *testing.T) {
		e := start(t)
		cc := dialUDP(t, e)
		payload := bigJSON(5000)
		resp, err := cc.Post(ctx(t), "/telemetry", message.AppJSON, bytes.NewReader([]byte(payload)), query("t="+token))
		if err != nil {
			t.Fatal(err)
		}
		if resp.Code() != codes.Changed {
			t.Fatalf("code %v %q", resp.Code(), body(t, resp))
		}
		if got := e.in.got(); len(got) != 1 || got[0].payload != payload {
			t.Fatalf("ingest did not get the reassembled payload (%d messages)", len(got))
		}
	})
	t.Run("a body over the limit is refused 4.13 with Size1 as soon as Size1 announces it", func(t *testing.T) {
		e := start(t, func(e *env) { e.in.limits.MaxPayload = 4096 })
		cc := dialUDP(t, e)
		resp, err := cc.Post(ctx(t), "/telemetry", message.AppJSON, bytes.NewReader([]byte(bigJSON(6000))), query("t="+token))
		if err != nil {
			t.Fatal(err)
		}
		if resp.Code() != codes.RequestEntityTooLarge {
			t.Fatalf("code %v %q, want 4.13", resp.Code(), body(t, resp))
		}
		if s, err := resp.GetOptionUint32(message.Size1); err != nil || s != 4096 {
			t.Errorf("Size1 %d (%v), want 4096", s, err)
		}
		if got := e.in.got(); len(got) != 0 {
			t.Errorf("ingest got %d messages", len(got))
		}
	})
	t.Run("blocks without Size1 are refused 4.13 once they pass the limit", func(t *testing.T) {
		e := start(t, func(e *env) { e.in.limits.MaxPayload = 2500 })
		c := dialRaw(t, e.g.Addr())
		payload := []byte(bigJSON(4000))
		for num := 0; ; num++ {
			end := min((num+1)*1024, len(payload))
			more := end < len(payload)
			block, _ := blockwise.EncodeBlockOption(blockwise.SZX1024, int64(num), more)
			c.send(message.Message{
				Type: message.Confirmable, Code: codes.POST, Token: []byte{9},
				Options: message.Options{
					{ID: message.URIPath, Value: []byte("telemetry")},
					{ID: message.ContentFormat, Value: []byte{byte(message.AppJSON)}},
					{ID: message.URIQuery, Value: []byte("t=" + token)},
					{ID: message.Block1, Value: uintOption(block)},
				},
				Payload: payload[num*1024 : end],
			})
			m := c.must(5 * time.Second)
			if end <= 2500 {
				if m.Code != codes.Continue {
					t.Fatalf("block %d: %v, want 2.31 Continue", num, m.String())
				}
				continue
			}
			if m.Code != codes.RequestEntityTooLarge {
				t.Fatalf("block %d ending at %d: %v, want 4.13", num, end, m.String())
			}
			if s, err := m.Options.GetUint32(message.Size1); err != nil || s != 2500 {
				t.Errorf("Size1 %d (%v), want 2500", s, err)
			}
			break
		}
		if got := e.in.got(); len(got) != 0 {
			t.Errorf("ingest got %d messages", len(got))
		}
	})
	t.Run("the first block of a transfer without a credential is refused 4.01", func(t *testing.T) {
		e := start(t)
		c := dialRaw(t, e.g.Addr())
		block, _ := blockwise.EncodeBlockOption(blockwise.SZX1024, 0, true)
		c.send(message.Message{
			Type: message.Confirmable, Code: codes.POST, Token: []byte{7},
			Options: message.Options{
				{ID: message.URIPath, Value: []byte("telemetry")},
				{ID: message.Block1, Value: uintOption(block)},
			},
			Payload: bytes.Repeat([]byte{' '}, 1024),
		})
		if m := c.must(5 * time.Second); m.Code != codes.Unauthorized {
			t.Fatalf("got %v, want 4.01", m.String())
		}
	})
}

// uintOption encodes an option value as CoAP's minimal big-endian uint.
func uintOption(v uint32) []byte {
	b := []byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
	for len(b) > 0 && b[0] == 0 {
		b = b[1:]
	}
	return b
}

func latestValues(n int) []tether.Latest {
	ts := time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)
	out := make([]tether.Latest, n)
	for i := range out {
		out[i] = tether.Latest{Key: fmt.Sprintf("key%03d", i), Time: ts, Value: float64(i)}
	}
	return out
}

func TestLatest(t *testing.T) {
	t.Run("GET /latest returns the device's own latest values as JSON", func(t *testing.T) {
		e := start(t)
		e.latest.set(deviceID, latestValues(2)...)
		e.latest.set(otherID, tether.Latest{Key: "secret", Value: 1.0})
		cc := dialUDP(t, e)
		resp, err := cc.Get(ctx(t), "/latest", query("t="+token))
		if err != nil {
			t.Fatal(err)
		}
		if cf, _ := resp.ContentFormat(); resp.Code() != codes.Content || cf != message.AppJSON {
			t.Fatalf("got %v %v", resp.Code(), cf)
		}
		if got, want := body(t, resp), compactJSON(t, latestValues(2)); got != want {
			t.Errorf("body %s, want %s", got, want)
		}
	})
	t.Run("GET /latest of a device without values is an empty array", func(t *testing.T) {
		e := start(t)
		cc := dialUDP(t, e)
		resp, err := cc.Get(ctx(t), "/latest", query("t="+token))
		if err != nil {
			t.Fatal(err)
		}
		if got := body(t, resp); got != "[]" {
			t.Errorf("body %q, want []", got)
		}
	})
	t.Run("GET /latest with Accept 60 returns CBOR with tag 0 times", func(t *testing.T) {
		e := start(t)
		e.latest.set(deviceID, tether.Latest{Key: "on", Time: time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC), Value: true})
		cc := dialUDP(t, e)
		resp, err := cc.Get(ctx(t), "/latest", query("t="+token), message.Option{ID: message.Accept, Value: []byte{60}})
		if err != nil {
			t.Fatal(err)
		}
		if cf, _ := resp.ContentFormat(); cf != message.AppCBOR {
			t.Fatalf("Content-Format %v", cf)
		}
		var got []struct {
			Key   string    `cbor:"key"`
			TS    time.Time `cbor:"ts"`
			Value any       `cbor:"value"`
		}
		b, _ := resp.ReadBody()
		if err := cbor.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0].Key != "on" || got[0].Value != true || !got[0].TS.Equal(time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)) {
			t.Errorf("got %+v", got)
		}
		if b[1]>>5 != 5 || !bytes.Contains(b, []byte{0xc0}) {
			t.Errorf("not an array of maps with a tag 0 time: %x", b)
		}
	})
	t.Run("a large /latest is sent block by block", func(t *testing.T) {
		e := start(t)
		e.latest.set(deviceID, latestValues(100)...)
		cc := dialUDP(t, e)
		resp, err := cc.Get(ctx(t), "/latest", query("t="+token))
		if err != nil {
			t.Fatal(err)
		}
		want := compactJSON(t, latestValues(100))
		if len(want) < 3000 {
			t.Fatalf("representation of %d bytes is too small for this test", len(want))
		}
		if got := body(t, resp); got != want {
			t.Errorf("reassembled body differs: %d bytes, want %d", len(got), len(want))
		}
	})
}

func TestObserve(t *testing.T) {
	t.Run("an observer is notified after Stored and deregisters with Observe 1", func(t *testing.T) {
		e := start(t)
		e.latest.set(deviceID, latestValues(1)...)
		cc := dialUDP(t, e)
		got := make(chan *pool.Message, 16)
		obs, err := cc.Observe(ctx(t), "/latest", func(m *pool.Message) {
			b, _ := m.ReadBody()
			c := cc.AcquireMessage(context.Background())
			c.SetCode(m.Code())
			c.SetBody(bytes.NewReader(b))
			got <- c
		}, query("t="+token))
		if err != nil {
			t.Fatal(err)
		}
		first := <-got
		if b := body(t, first); b != compactJSON(t, latestValues(1)) {
			t.Fatalf("first representation %s", b)
		}
		eventually(t, "the observer", func() bool { return e.g.Observers(deviceID) == 1 })

		e.latest.set(deviceID, latestValues(2)...)
		e.g.Stored([]tether.Message{{DeviceID: otherID}, {DeviceID: deviceID}})
		select {
		case m := <-got:
			if b := body(t, m); b != compactJSON(t, latestValues(2)) {
				t.Errorf("notification %s", b)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no notification after Stored")
		}
		if err := obs.Cancel(ctx(t), query("t="+token)); err != nil {
			t.Fatalf("cancel: %v", err)
		}
		eventually(t, "the deregistration", func() bool { return e.g.Observers(deviceID) == 0 })
	})
	t.Run("a reset to a notification ends the observation", func(t *testing.T) {
		e := start(t)
		c := dialRaw(t, e.g.Addr())
		c.send(observeRequest(0, []byte{5}, "t="+token))
		if m := c.must(5 * time.Second); m.Code != codes.Content || !hasObserve(m) {
			t.Fatalf("registration answered %v", m.String())
		}
		e.g.Stored([]tether.Message{{DeviceID: deviceID}})
		n := c.must(5 * time.Second)
		if n.Type != message.Confirmable || !hasObserve(n) || !bytes.Equal(n.Token, []byte{5}) {
			t.Fatalf("notification %v", n.String())
		}
		c.send(message.Message{Type: message.Reset, Code: codes.Empty, MessageID: n.MessageID})
		eventually(t, "the observation to end", func() bool { return e.g.Observers(deviceID) == 0 })
	})
	t.Run("notifications increase their Observe number and are confirmable", func(t *testing.T) {
		e := start(t)
		c := dialRaw(t, e.g.Addr())
		c.send(observeRequest(0, []byte{6}, "t="+token))
		r := c.must(5 * time.Second)
		last, _ := r.Options.Observe()
		for i := range 3 {
			e.g.Stored([]tether.Message{{DeviceID: deviceID}})
			n := c.must(5 * time.Second)
			seq, err := n.Options.Observe()
			if err != nil || seq <= last || n.Type != message.Confirmable {
				t.Fatalf("notification %d: %v (Observe %d after %d)", i, n.String(), seq, last)
			}
			last = seq
			c.send(message.Message{Type: message.Acknowledgement, Code: codes.Empty, MessageID: n.MessageID})
		}
	})
	t.Run("a ninth observation of a device ends the oldest", func(t *testing.T) {
		e := start(t)
		c := dialRaw(t, e.g.Addr())
		for i := range 9 {
			c.send(observeRequest(0, []byte{byte(10 + i)}, "t="+token))
			want := 1
			if i == 8 {
				// The ending of the oldest comes too, before or after
				// the ninth registration's response.
				want = 2
			}
			for range want {
				m := c.must(5 * time.Second)
				switch {
				case hasObserve(m) && bytes.Equal(m.Token, []byte{byte(10 + i)}):
				case i == 8 && m.Code == codes.ServiceUnavailable && bytes.Equal(m.Token, []byte{10}):
				default:
					t.Fatalf("registration %d: got %v", i, m.String())
				}
			}
		}
		if n := e.g.Observers(deviceID); n != 8 {
			t.Errorf("%d observers, want 8", n)
		}
	})
	t.Run("Disconnect ends a device's observations with a final 4.01", func(t *testing.T) {
		e := start(t)
		c := dialRaw(t, e.g.Addr())
		c.send(observeRequest(0, []byte{8}, "t="+token))
		c.must(5 * time.Second)
		if n := e.g.Disconnect(deviceID); n != 1 {
			t.Errorf("Disconnect ended %d, want 1", n)
		}
		m := c.must(5 * time.Second)
		if m.Code != codes.Unauthorized || hasObserve(m) || !bytes.Equal(m.Token, []byte{8}) {
			t.Errorf("final message %v", m.String())
		}
		if n := e.g.Observers(deviceID); n != 0 {
			t.Errorf("%d observers left", n)
		}
	})
	t.Run("a large notification carries its first block and go-coap fetches the rest", func(t *testing.T) {
		e := start(t)
		cc := dialUDP(t, e)
		got := make(chan string, 16)
		_, err := cc.Observe(ctx(t), "/latest", func(m *pool.Message) {
			b, _ := m.ReadBody()
			got <- string(b)
		}, query("t="+token))
		if err != nil {
			t.Fatal(err)
		}
		<-got
		eventually(t, "the observer", func() bool { return e.g.Observers(deviceID) == 1 })
		e.latest.set(deviceID, latestValues(100)...)
		e.g.Stored([]tether.Message{{DeviceID: deviceID}})
		select {
		case b := <-got:
			if want := compactJSON(t, latestValues(100)); b != want {
				t.Errorf("notification of %d bytes, want %d", len(b), len(want))
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no notification")
		}
	})
}

func observeRequest(obs uint32, tok []byte, q string) message.Message {
	return message.Message{
		Type: message.Confirmable, Code: codes.GET, Token: tok,
		Options: message.Options{
			{ID: message.Observe, Value: uintOption(obs)},
			{ID: message.URIPath, Value: []byte("latest")},
			{ID: message.URIQuery, Value: []byte(q)},
		},
	}
}

func hasObserve(m message.Message) bool { return m.Options.HasOption(message.Observe) }

func TestDTLS(t *testing.T) {
	t.Run("the right pre-shared key is accepted and names the device without a token", func(t *testing.T) {
		e := start(t)
		cc, err := dialDTLS(t, e, deviceID, pskKey)
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		resp, err := cc.Post(ctx(t), "/telemetry", message.AppJSON, bytes.NewReader([]byte(`{"temp":1}`)))
		if err != nil {
			t.Fatal(err)
		}
		if resp.Code() != codes.Changed {
			t.Fatalf("code %v %q", resp.Code(), body(t, resp))
		}
		if got := e.in.got(); len(got) != 1 || got[0].device != deviceID {
			t.Fatalf("ingest got %v", got)
		}
	})
	t.Run("a wrong key fails the handshake", func(t *testing.T) {
		e := start(t)
		if err := handshake(t, e, deviceID, "not-the-key"); err == nil {
			t.Fatal("handshake succeeded")
		}
		if got := e.in.got(); len(got) != 0 {
			t.Errorf("ingest got %v", got)
		}
	})
	t.Run("an unknown identity fails the handshake", func(t *testing.T) {
		e := start(t)
		if err := handshake(t, e, "nobody", pskKey); err == nil {
			t.Fatal("handshake succeeded")
		}
	})
	t.Run("a token of another device in the query is refused 4.03", func(t *testing.T) {
		e := start(t)
		cc, err := dialDTLS(t, e, deviceID, pskKey)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := cc.Post(ctx(t), "/telemetry", message.AppJSON, bytes.NewReader([]byte(`{"temp":1}`)), query("t="+other))
		if err != nil {
			t.Fatal(err)
		}
		if resp.Code() != codes.Forbidden {
			t.Fatalf("code %v %q, want 4.03", resp.Code(), body(t, resp))
		}
	})
	t.Run("Disconnect closes the device's DTLS session", func(t *testing.T) {
		e := start(t)
		cc, err := dialDTLS(t, e, deviceID, pskKey)
		if err != nil {
			t.Fatal(err)
		}
		if resp, err := cc.Get(ctx(t), "/latest"); err != nil || resp.Code() != codes.Content {
			t.Fatalf("GET /latest: %v %v", resp, err)
		}
		if n := e.g.Disconnect(deviceID); n != 1 {
			t.Fatalf("Disconnect ended %d, want 1", n)
		}
		select {
		case <-cc.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("the client's session is still open")
		}
	})
}

// selfSigned returns a fresh self-signed ECDSA certificate.
func selfSigned(t *testing.T) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "tether"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func TestDTLSWithCertificate(t *testing.T) {
	cert := selfSigned(t)
	loaded := make(chan struct{}, 16)
	e := start(t, func(e *env) {
		e.cert = func() (*tls.Certificate, error) {
			loaded <- struct{}{}
			return cert, nil
		}
	})
	t.Run("a certificate session authenticates its requests with t=", func(t *testing.T) {
		cc, err := dialDTLSWith(t, e,
			piondtls.WithInsecureSkipVerify(true),
			piondtls.WithCipherSuites(piondtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256),
		)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := cc.Post(ctx(t), "/telemetry", message.AppJSON, bytes.NewReader([]byte(`{"temp":1}`)))
		if err != nil {
			t.Fatal(err)
		}
		if resp.Code() != codes.Unauthorized {
			t.Errorf("without t=: %v, want 4.01", resp.Code())
		}
		resp, err = cc.Post(ctx(t), "/telemetry", message.AppJSON, bytes.NewReader([]byte(`{"temp":1}`)), query("t="+other))
		if err != nil {
			t.Fatal(err)
		}
		if resp.Code() != codes.Changed {
			t.Errorf("with t=: %v %q, want 2.04", resp.Code(), body(t, resp))
		}
		if got := e.in.got(); len(got) != 1 || got[0].device != otherID {
			t.Errorf("ingest got %v", got)
		}
		select {
		case <-loaded:
		default:
			t.Error("the certificate was not asked for")
		}
	})
	t.Run("pre-shared keys still work beside the certificate", func(t *testing.T) {
		if err := handshake(t, e, deviceID, pskKey); err != nil {
			t.Fatal(err)
		}
	})
}

func TestIdleEndpoints(t *testing.T) {
	t.Run("a silent endpoint without observations is forgotten", func(t *testing.T) {
		e := start(t, func(e *env) { e.before = func(g *coap.Gateway) { g.SetTimings(time.Second, time.Hour, 2*time.Second) } })
		c := dialRaw(t, e.g.Addr())
		c.send(message.Message{Type: message.Confirmable, Code: codes.GET, Token: []byte{1},
			Options: message.Options{{ID: message.URIPath, Value: []byte(".well-known")}, {ID: message.URIPath, Value: []byte("core")}}})
		c.must(5 * time.Second)
		if n := e.g.Endpoints(); n != 1 {
			t.Fatalf("%d endpoints, want 1", n)
		}
		eventually(t, "the endpoint to be forgotten", func() bool { return e.g.Endpoints() == 0 })
	})
	t.Run("a silent observer is sent the current state and kept when it acknowledges", func(t *testing.T) {
		e := start(t, func(e *env) {
			e.before = func(g *coap.Gateway) { g.SetTimings(time.Second, time.Second, 2*time.Second) }
		})
		e.latest.set(deviceID, latestValues(1)...)
		c := dialRaw(t, e.g.Addr())
		c.send(observeRequest(0, []byte{3}, "t="+token))
		c.must(5 * time.Second)
		for range 2 {
			n := c.must(5 * time.Second)
			if n.Type != message.Confirmable || !hasObserve(n) || string(n.Payload) != compactJSON(t, latestValues(1)) {
				t.Fatalf("refresh %v", n.String())
			}
			c.send(message.Message{Type: message.Acknowledgement, Code: codes.Empty, MessageID: n.MessageID})
		}
		if e.g.Observers(deviceID) != 1 || e.g.Endpoints() != 1 {
			t.Errorf("%d observers on %d endpoints, want 1 on 1", e.g.Observers(deviceID), e.g.Endpoints())
		}
	})
	t.Run("an observer that does not acknowledge a notification is removed after the retransmissions", func(t *testing.T) {
		e := start(t, func(e *env) {
			e.before = func(g *coap.Gateway) { g.SetTimings(time.Hour, time.Hour, 50*time.Millisecond) }
		})
		c := dialRaw(t, e.g.Addr())
		c.send(observeRequest(0, []byte{4}, "t="+token))
		c.must(5 * time.Second)
		e.g.Stored([]tether.Message{{DeviceID: deviceID}})
		first := c.must(5 * time.Second)
		for i := range 4 {
			if n := c.must(5 * time.Second); n.MessageID != first.MessageID {
				t.Fatalf("retransmission %d has message ID %d, want %d", i+1, n.MessageID, first.MessageID)
			}
		}
		eventually(t, "the observation to end", func() bool { return e.g.Observers(deviceID) == 0 })
		if m, ok := c.recv(time.Second); ok {
			t.Errorf("sent after the last retransmission: %v", m.String())
		}
	})
}

func TestClose(t *testing.T) {
	t.Run("Close lets an in-flight publish finish and refuses new ones with 5.03", func(t *testing.T) {
		e := start(t, func(e *env) { e.in.hold = true })
		c := dialRaw(t, e.g.Addr())
		post := func(tok byte) {
			c.send(message.Message{
				Type: message.Confirmable, Code: codes.POST, Token: []byte{tok},
				Options: message.Options{
					{ID: message.URIPath, Value: []byte("telemetry")},
					{ID: message.URIQuery, Value: []byte("t=" + token)},
				},
				Payload: []byte(`{"temp":1}`),
			})
		}
		post(1)
		<-e.in.entered
		closed := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			closed <- e.g.Close(ctx)
		}()
		time.Sleep(200 * time.Millisecond)
		select {
		case err := <-closed:
			t.Fatalf("Close returned (%v) while a publish was in flight", err)
		default:
		}
		// A second endpoint: the first one's requests are served in order.
		c2 := dialRaw(t, e.g.Addr())
		c2.send(message.Message{
			Type: message.Confirmable, Code: codes.POST, Token: []byte{2},
			Options: message.Options{
				{ID: message.URIPath, Value: []byte("telemetry")},
				{ID: message.URIQuery, Value: []byte("t=" + token)},
			},
			Payload: []byte(`{"temp":2}`),
		})
		if m := c2.must(5 * time.Second); m.Code != codes.ServiceUnavailable {
			t.Errorf("a publish during Close got %v, want 5.03", m.String())
		}
		close(e.in.release)
		if m := c.must(5 * time.Second); m.Code != codes.Changed {
			t.Errorf("the in-flight publish got %v, want 2.04", m.String())
		}
		if err := <-closed; err != nil {
			t.Errorf("Close: %v", err)
		}
	})
}

func TestLogsHoldNoSecrets(t *testing.T) {
	e := start(t)
	cc := dialUDP(t, e)
	for _, q := range []string{"t=" + token, "t=sensor-1.SECRETwrongSECRET", "x=SECRET"} {
		for _, p := range []string{`{"temp":`, `{"temp":1}`, "SECRET"} {
			if _, err := cc.Post(ctx(t), "/telemetry", message.AppJSON, bytes.NewReader([]byte(p)), query(q)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := handshake(t, e, deviceID, "SECRET"); err == nil {
		t.Fatal("wrong key accepted")
	}
	logs := e.logs.String()
	if !strings.Contains(logs, "coap request refused") {
		t.Fatalf("no refusal logged at debug:\n%s", logs)
	}
	if strings.Contains(logs, "SECRET") {
		t.Errorf("a secret or payload is in the log:\n%s", logs)
	}
}

func TestDiscovery(t *testing.T) {
	e := start(t)
	cc := dialUDP(t, e)
	resp, err := cc.Get(ctx(t), "/.well-known/core")
	if err != nil {
		t.Fatal(err)
	}
	if b := body(t, resp); !strings.Contains(b, "</telemetry>") || !strings.Contains(b, "</latest>") || !strings.Contains(b, ";obs") {
		t.Errorf("link format %q", b)
	}
}
