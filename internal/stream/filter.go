package stream

import (
	"net/url"
	"strings"

	"github.com/tether-iot/tether"
)

const numKinds = 5

// kindIndex returns the bit of kind in a matcher's kinds, or -1.
func kindIndex(kind string) int {
	switch kind {
	case KindTelemetry:
		return 0
	case KindPresence:
		return 1
	case KindShadow:
		return 2
	case KindCommand:
		return 3
	case KindAlert:
		return 4
	}
	return -1
}

// matcher is a validated Filter, quick to apply.
type matcher struct {
	kinds   uint8               // bit kindIndex(k) set for each wanted kind
	devices map[string]struct{} // nil: every device
	labels  map[string]string
	profile string
}

// compile validates f.
func compile(f Filter) (matcher, error) {
	var m matcher
	for _, k := range f.Kinds {
		i := kindIndex(k)
		if i < 0 {
			return matcher{}, tether.Errorf(tether.EINVALID, "unknown event kind %q; the kinds are %s", k, strings.Join(Kinds, ", "))
		}
		m.kinds |= 1 << i
	}
	if len(f.Kinds) == 0 {
		m.kinds = 1<<numKinds - 1
	}
	if len(f.Devices) > maxFilterDevices {
		return matcher{}, tether.Errorf(tether.EINVALID, "%d devices; a live stream may name at most %d", len(f.Devices), maxFilterDevices)
	}
	if len(f.Devices) > 0 {
		m.devices = make(map[string]struct{}, len(f.Devices))
		for _, d := range f.Devices {
			if !tether.ValidID(d) {
				return matcher{}, tether.Errorf(tether.EINVALID, "device %q is not a valid device ID", d)
			}
			m.devices[d] = struct{}{}
		}
	}
	if len(f.Labels) > 64 {
		return matcher{}, tether.Errorf(tether.EINVALID, "%d labels; a selector may name at most 64", len(f.Labels))
	}
	for k := range f.Labels {
		if k == "" {
			return matcher{}, tether.Errorf(tether.EINVALID, "a label selector needs a key before each =")
		}
	}
	if len(f.Labels) > 0 {
		m.labels = f.Labels
	}
	if f.Profile != "" && !tether.ValidID(f.Profile) {
		return matcher{}, tether.Errorf(tether.EINVALID, "profile %q is not a valid profile ID", f.Profile)
	}
	m.profile = f.Profile
	return m, nil
}

// addKinds adds d to the count of each kind m wants.
func (m matcher) addKinds(counts *[numKinds]int, d int) {
	for i := range numKinds {
		if m.kinds&(1<<i) != 0 {
			counts[i] += d
		}
	}
}

// needsDevice reports whether matching needs the device's labels or
// profile.
func (m matcher) needsDevice() bool { return m.labels != nil || m.profile != "" }

// matchEvent applies the kind and device filters.
func (m matcher) matchEvent(kind int, device string) bool {
	if kind < 0 || m.kinds&(1<<kind) == 0 {
		return false
	}
	if m.devices != nil {
		if _, ok := m.devices[device]; !ok {
			return false
		}
	}
	return true
}

// matchDevice applies the label and profile filters to a device (nil:
// unknown, which matches neither).
func (m matcher) matchDevice(d *deviceInfo) bool {
	if d == nil {
		return false
	}
	if m.profile != "" && d.profile != m.profile {
		return false
	}
	for k, v := range m.labels {
		if got, ok := d.labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// ParseQuery reads a Filter from a live stream's query string:
// kinds=telemetry,presence&devices=a,b&labels=k=v,k2=v2&profile=id. Each
// parameter may appear once; any other is refused, so that a misspelt
// one does not silently select everything.
func ParseQuery(q url.Values) (Filter, error) {
	var f Filter
	for name, vals := range q {
		if len(vals) > 1 {
			return Filter{}, tether.Errorf(tether.EINVALID, "query parameter %s is given %d times; give it once, with its values separated by commas", name, len(vals))
		}
		v := vals[0]
		switch name {
		case "kinds":
			f.Kinds = splitList(v)
		case "devices":
			f.Devices = splitList(v)
		case "labels":
			if v == "" {
				continue
			}
			f.Labels = map[string]string{}
			for part := range strings.SplitSeq(v, ",") {
				k, val, ok := strings.Cut(part, "=")
				if !ok || k == "" {
					return Filter{}, tether.Errorf(tether.EINVALID, "labels %q must be key=value pairs separated by commas", v)
				}
				f.Labels[k] = val
			}
		case "profile":
			f.Profile = v
		default:
			known := []string{"kinds", "devices", "labels", "profile"}
			return Filter{}, tether.Errorf(tether.EINVALID, "unknown query parameter %q; a live stream takes %s", name, strings.Join(known, ", "))
		}
	}
	if _, err := compile(f); err != nil {
		return Filter{}, err
	}
	return f, nil
}

// splitList splits a comma-separated list, leaving out empty items.
func splitList(s string) []string {
	var out []string
	for p := range strings.SplitSeq(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
