package alert

import (
	"io"
	"net/mail"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tether-iot/tether"
)

// FuzzEmailMessage checks that no alert field, whatever it holds, adds a
// header to a notification e-mail or breaks its form: the fields come
// from rules' results, the message goes to people.
func FuzzEmailMessage(f *testing.F) {
	f.Add("overheat", "pump-1", "critical", "temp", "r1")
	f.Add("x\r\nBcc: evil@example.com", "d\nSubject: hi", "warning", "\r\n.\r\n", "r\r\n")
	f.Add("ünïcödé", "", "info", "a\x00b", "")
	f.Fuzz(func(t *testing.T, typ, device, severity, key, rule string) {
		c := Channel{Kind: KindEmail, SMTPAddr: "mail:25", From: "a@example.com", To: []string{"b@example.com", "c@example.com"}}
		n := Notification{Event: "alert.raised", Delivery: "abc", Alert: tether.Alert{ID: "al_1", Type: typ, DeviceID: device,
			Severity: severity, RuleID: rule, Status: tether.AlertActive, Message: typ, Values: map[string]any{key: key}}}
		msg, err := mail.ReadMessage(strings.NewReader(string(emailMessage(c, n, time.Unix(0, 0)))))
		if err != nil {
			t.Fatalf("the message does not parse: %v", err)
		}
		var names []string
		for k := range msg.Header {
			names = append(names, k)
		}
		slices.Sort(names)
		want := []string{"Content-Transfer-Encoding", "Content-Type", "Date", "From", "Message-Id", "Mime-Version", "Subject", "To"}
		if !slices.Equal(names, want) {
			t.Errorf("headers %v, want %v", names, want)
		}
		if _, err := io.ReadAll(msg.Body); err != nil {
			t.Fatal(err)
		}
	})
}
