package anomaly_test

import (
	"testing"

	"github.com/tether-iot/tether/internal/rules/anomaly"
)

// FuzzRestore feeds stored bytes to Restore: it must never panic, and a
// State it accepts must update and snapshot to bytes it accepts again. The
// first byte of the input chooses the function.
func FuzzRestore(f *testing.F) {
	for i, fn := range everyFunction {
		s, err := anomaly.New(fn.fn, fn.params)
		if err != nil {
			f.Fatal(err)
		}
		for _, o := range series(40) {
			s.Update(at(o.sec), o.x)
		}
		b, err := anomaly.Snapshot(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(append([]byte{byte(i)}, b...))
	}
	f.Add([]byte("\x05{\"fn\":\"time_to_threshold\",\"params\":[50,300],\"state\":{\"latest\":0}}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) == 0 {
			return
		}
		fn := everyFunction[int(b[0])%len(everyFunction)]
		s, err := anomaly.Restore(fn.fn, fn.params, b[1:])
		if err != nil {
			return
		}
		for _, o := range series(5) {
			s.Update(at(o.sec+1e4), o.x)
		}
		again, err := anomaly.Snapshot(s)
		if err != nil {
			t.Fatalf("snapshot of a restored state: %v", err)
		}
		if _, err := anomaly.Restore(fn.fn, fn.params, again); err != nil {
			t.Fatalf("restore of its own snapshot: %v\n%s", err, again)
		}
	})
}
