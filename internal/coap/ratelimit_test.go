package coap_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"

	"github.com/tether-iot/tether/internal/ingest"
	"github.com/tether-iot/tether/internal/telemetry"
)

// nopPublisher is a bus that stores everything at once.
type nopPublisher struct{}

func (nopPublisher) PublishTelemetry(context.Context, string, string, string, []byte) error {
	return nil
}

// TestEveryRequestTakesFromTheDeviceBudget floods the gateway with reads
// through the real ingest path: GET /latest and Observe registrations take
// from the same per-device budget as telemetry, are answered 4.29 with
// Max-Age once it is spent, and every refusal is counted.
func TestEveryRequestTakesFromTheDeviceBudget(t *testing.T) {
	// One message a second, in bursts of one: within a second of the first
	// request every other one of the device is over its budget.
	const rate = 1
	in := ingest.New(nopPublisher{}, telemetry.Limits{}, rate, slog.New(slog.DiscardHandler))
	e := start(t, func(e *env) { e.ingestor = in })
	cc := dialUDP(t, e)

	var answers []codes.Code
	check := func(what string, resp *pool.Message) {
		t.Helper()
		switch resp.Code() {
		case codes.Content, codes.Changed:
		case codes.TooManyRequests:
			if got := maxAge(resp); got != 1 {
				t.Errorf("%s: 4.29 with Max-Age %d, want 1 (the seconds until the next token)", what, got)
			}
			if b := body(t, resp); !strings.Contains(b, "publish rate") {
				t.Errorf("%s: diagnostic %q", what, b)
			}
		default:
			t.Fatalf("%s answered %v %q", what, resp.Code(), body(t, resp))
		}
		answers = append(answers, resp.Code())
	}
	began := time.Now()
	for i := range 30 {
		resp, err := cc.Get(ctx(t), "/latest", query("t="+token))
		if err != nil {
			t.Fatalf("GET %d: %v", i, err)
		}
		check(fmt.Sprintf("GET %d", i), resp)
	}
	// An Observe registration, sent with Do to see its answer whatever it is.
	req := cc.AcquireMessage(ctx(t))
	defer cc.ReleaseMessage(req)
	tok, _ := cc.GetToken()
	req.SetCode(codes.GET)
	req.SetToken(tok)
	req.ResetOptionsTo([]message.Option{query("t=" + token)})
	if err := req.SetPath("/latest"); err != nil {
		t.Fatal(err)
	}
	req.SetObserve(0)
	resp, err := cc.Do(req)
	if err != nil {
		t.Fatalf("observe: %v", err)
	}
	check("the Observe registration", resp)
	// Telemetry, which shares the budget the reads spent.
	resp, err = cc.Post(ctx(t), "/telemetry", message.AppJSON, bytes.NewReader([]byte(`{"temp":1}`)), query("t="+token))
	if err != nil {
		t.Fatal(err)
	}
	check("POST /telemetry", resp)
	elapsed := time.Since(began)

	served, limited := 0, 0
	for _, c := range answers {
		if c == codes.TooManyRequests {
			limited++
		} else {
			served++
		}
	}
	if most := 1 + int(elapsed.Seconds()*rate); served > most || limited == 0 {
		t.Fatalf("in %v, %d requests served and %d refused 4.29 (%v); want at most %d served", elapsed, served, limited, answers, most)
	}
	if elapsed < time.Second/rate && (answers[len(answers)-2] != codes.TooManyRequests || answers[len(answers)-1] != codes.TooManyRequests) {
		t.Errorf("within a second the Observe registration and the POST were answered %v; want 4.29", answers[len(answers)-2:])
	}
	if answers[len(answers)-2] == codes.TooManyRequests {
		if n := e.g.Observers(deviceID); n != 0 {
			t.Errorf("%d observers after a refused registration", n)
		}
	}
	// Every 4.29 is counted, through the ingest path's one counter.
	if n := in.Refused(deviceID); n != uint64(limited) {
		t.Errorf("%d refusals counted for %s, want %d", n, deviceID, limited)
	}
	if n := in.Stats().Refused[ingest.ReasonRateLimited]; n != uint64(limited) {
		t.Errorf("%d refusals counted as %s, want %d", n, ingest.ReasonRateLimited, limited)
	}
	// The budget is the device's own: another device is served.
	resp, err = cc.Get(ctx(t), "/latest", query("t="+other))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Code() != codes.Content {
		t.Errorf("another device's GET got %v, want 2.05", resp.Code())
	}
}
