package graphql

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"time"

	gql "github.com/99designs/gqlgen/graphql"

	"github.com/tether-iot/tether"
)

// The Duration scalar is a Go duration string ("30s", "1h"), as the
// REST API writes durations. gqlgen binds it to time.Duration (arguments)
// and to tether.Duration (the domain's fields) through the Marshal and
// Unmarshal functions below, named after the scalar's models in
// gqlgen.yml.

// MarshalDuration writes d as a duration string.
func MarshalDuration(d time.Duration) gql.Marshaler {
	return gql.WriterFunc(func(w io.Writer) { _, _ = io.WriteString(w, strconv.Quote(d.String())) })
}

// UnmarshalDuration reads a duration string.
func UnmarshalDuration(v any) (time.Duration, error) {
	s, ok := v.(string)
	if !ok {
		return 0, fmt.Errorf("a Duration is a string such as \"30s\" or \"1h\", not %T", v)
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("duration %q: want a string such as \"30s\" or \"1h\"", s)
	}
	return d, nil
}

// MarshalTetherDuration writes d as a duration string.
func MarshalTetherDuration(d tether.Duration) gql.Marshaler { return MarshalDuration(time.Duration(d)) }

// UnmarshalTetherDuration reads a duration string.
func UnmarshalTetherDuration(v any) (tether.Duration, error) {
	d, err := UnmarshalDuration(v)
	return tether.Duration(d), err
}

// MarshalRawJSON writes a JSON document as it is (null when empty): a
// command's parameters and result, a rule action's parameters.
func MarshalRawJSON(m json.RawMessage) gql.Marshaler {
	return gql.WriterFunc(func(w io.Writer) {
		if len(bytes.TrimSpace(m)) == 0 {
			_, _ = io.WriteString(w, "null")
			return
		}
		_, _ = w.Write(m)
	})
}

// UnmarshalRawJSON reads any JSON value.
func UnmarshalRawJSON(v any) (json.RawMessage, error) {
	if v == nil {
		return nil, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("not a JSON value: %w", err)
	}
	return b, nil
}
