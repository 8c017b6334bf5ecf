package tether

import "time"

// Kind is the type of a telemetry value.
type Kind uint8

// Value kinds. A bool is stored as a number 0 or 1 with kind KindBool so
// that it can be averaged (the share of time a switch was on).
const (
	KindNumber Kind = 1
	KindBool   Kind = 2
	KindString Kind = 3
)

// String returns the kind's JSON name.
func (k Kind) String() string {
	switch k {
	case KindNumber:
		return "number"
	case KindBool:
		return "bool"
	case KindString:
		return "string"
	}
	return "unknown"
}

// Point is one named value of one device at one time.
type Point struct {
	Key  string
	Time time.Time
	Kind Kind
	Num  float64 // KindNumber, and KindBool as 0 or 1
	Str  string  // KindString
	// Quarantine, if set, is why the point broke its device's profile (a
	// tether.Quarantine… reason): it is stored apart and kept out of
	// aggregates, latest values and rules.
	Quarantine string
}

// Value returns the point's value as a JSON-friendly Go value.
func (p Point) Value() any {
	switch p.Kind {
	case KindBool:
		return p.Num != 0
	case KindString:
		return p.Str
	}
	return p.Num
}

// Message is one accepted telemetry message of one device, as it crosses
// the bus from a gateway to the storage writer and the rules engine.
type Message struct {
	// ID is unique per message and assigned by the gateway that accepted
	// it. The bus and the stores deduplicate by it, so a message that is
	// delivered twice is stored once.
	ID         string
	TenantID   string
	DeviceID   string
	ReceivedAt time.Time
	Points     []Point
}

// Aggregations a telemetry query may ask for.
var Aggregations = []string{"avg", "min", "max", "sum", "count", "first", "last"}

// TelemetryQuery asks for the points of one device.
type TelemetryQuery struct {
	TenantID string
	DeviceID string
	Keys     []string  // empty means all keys
	From, To time.Time // half-open: From <= t < To
	// Agg and Bucket ask for bucketed values; both empty for raw points.
	Agg    string
	Bucket time.Duration
	// Limit caps the number of raw points or buckets per key.
	Limit int
}

// Sample is one raw point or one bucket of a series. For a bucket, Time is
// the bucket's start.
type Sample struct {
	Time  time.Time `json:"ts"`
	Value any       `json:"value"`
}

// Series is the samples of one key, in time order.
type Series struct {
	Key     string   `json:"key"`
	Samples []Sample `json:"samples"`
}

// Latest is the newest value of one key of a device.
type Latest struct {
	Key   string    `json:"key"`
	Time  time.Time `json:"ts"`
	Value any       `json:"value"`
}
