package engine

import (
	"time"
)

// Trace is one input's way through a rule, with the value of every step.
// A step that did not run is empty (a nil Where: the rule has no WHERE,
// or evaluation stopped before it).
type Trace struct {
	// At is when the input was evaluated (processing time).
	At    time.Time  `json:"at"`
	Input TraceInput `json:"input"`
	// Stateful are the values of the input-stage anomaly and prediction
	// calls, by call (for example "zscore(vibration)"); nil for a call
	// without a value yet.
	Stateful map[string]any `json:"stateful,omitempty"`
	Where    *bool          `json:"where,omitempty"`
	// Skipped says why the input gave no result although nothing failed,
	// for example a function still warming up.
	Skipped string `json:"skipped,omitempty"`
	// GroupKey and Late are a windowed rule's: the input's group and
	// whether it came too late for its window (and was dropped).
	GroupKey string `json:"group_key,omitempty"`
	Late     bool   `json:"late,omitempty"`
	// Projections and Having are a per-input rule's.
	Projections map[string]any `json:"projections,omitempty"`
	Having      *bool          `json:"having,omitempty"`
	// Windows are the windows the input closed.
	Windows []WindowTrace `json:"windows,omitempty"`
	// Results is how many results the input produced.
	Results int    `json:"results"`
	Error   string `json:"error,omitempty"`
}

// TraceInput is the input of a trace.
type TraceInput struct {
	Kind      string         `json:"kind"`
	DeviceID  string         `json:"device_id,omitempty"`
	Time      time.Time      `json:"ts"`
	MessageID string         `json:"message_id,omitempty"`
	Topic     string         `json:"topic,omitempty"`
	Values    map[string]any `json:"values,omitempty"`
	Event     map[string]any `json:"event,omitempty"`
}

// WindowTrace is one closed window's evaluation.
type WindowTrace struct {
	Key   string    `json:"key"`
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	// Aggregates are the window's aggregate values by call, for example
	// "avg(vibration)".
	Aggregates  map[string]any `json:"aggregates"`
	Stateful    map[string]any `json:"stateful,omitempty"`
	Projections map[string]any `json:"projections,omitempty"`
	Having      *bool          `json:"having,omitempty"`
	Skipped     string         `json:"skipped,omitempty"`
	Error       string         `json:"error,omitempty"`
}

func traceInput(in *Input) TraceInput {
	ti := TraceInput{Kind: in.Kind, DeviceID: in.deviceID(), Time: in.Time, MessageID: in.MessageID,
		Topic: in.Topic, Values: in.Values, Event: in.Event}
	if in.Kind == KindMQTT {
		p := in.Payload
		if len(p) > maxTracedPayload {
			p = p[:maxTracedPayload]
		}
		ti.Values = map[string]any{"payload": string(p)}
	}
	return ti
}

// maxTracedPayload bounds the MQTT payload a trace keeps of each input, so
// that a rule's trace stays small whatever its inputs carry.
const maxTracedPayload = 1 << 10

var (
	yes = true
	no  = false
)

func boolPtr(b bool) *bool {
	if b {
		return &yes
	}
	return &no
}

// traceRing keeps the last n traces of a rule in a fixed array.
type traceRing struct {
	buf  []Trace
	next int
	full bool
}

func newTraceRing(n int) *traceRing { return &traceRing{buf: make([]Trace, n)} }

func (r *traceRing) add(t Trace) {
	if len(r.buf) == 0 {
		return
	}
	r.buf[r.next] = t
	r.next++
	if r.next == len(r.buf) {
		r.next, r.full = 0, true
	}
}

// list returns the traces, oldest first.
func (r *traceRing) list() []Trace {
	if !r.full {
		return append([]Trace(nil), r.buf[:r.next]...)
	}
	out := make([]Trace, 0, len(r.buf))
	out = append(out, r.buf[r.next:]...)
	return append(out, r.buf[:r.next]...)
}
