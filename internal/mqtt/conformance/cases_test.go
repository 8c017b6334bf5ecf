package conformance_test

import "testing"

// conformanceCase is one behaviour, checked with each protocol version
// that has it; a nil function marks a feature the version lacks.
type conformanceCase struct {
	name string
	v311 func(t *testing.T, b broker)
	v5   func(t *testing.T, b broker)
}

// run runs each case for 3.1.1 and 5.0, against each broker, all in
// parallel: case/version/broker.
func run(t *testing.T, cases []conformanceCase) {
	t.Helper()
	t.Parallel()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			if c.v311 != nil {
				t.Run("3.1.1", func(t *testing.T) { t.Parallel(); eachBroker(t, c.v311) })
			}
			if c.v5 != nil {
				t.Run("5.0", func(t *testing.T) { t.Parallel(); eachBroker(t, c.v5) })
			}
		})
	}
}
