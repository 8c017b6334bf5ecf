package coap

import "time"

// Exported for the tests of package coap_test.
var ParseQuery = parseQuery

// Observers returns how many observations a device has.
func (g *Gateway) Observers(deviceID string) int { return g.obs.count(deviceID) }

// SetTimings shortens a gateway's idle times, refresh interval and
// acknowledgement timeout; call it before Serve.
func (g *Gateway) SetTimings(idle, observeRefresh, ackTimeout time.Duration) {
	g.timing = timing{udpIdle: idle, dtlsIdle: idle, observeRefresh: observeRefresh, ackTimeout: ackTimeout}
}

// Endpoints returns how many plain-UDP endpoints the gateway holds.
func (g *Gateway) Endpoints() int {
	g.endpointsMu.Lock()
	defer g.endpointsMu.Unlock()
	return g.endpoints
}
