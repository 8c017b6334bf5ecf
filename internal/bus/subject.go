package bus

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// parseDeviceSubject returns the tenant and device of a subject
// tether.<tenant>.devices.<device>.<kind>.
func parseDeviceSubject(s string) (tenant, device string, ok bool) {
	p := strings.Split(s, ".")
	if len(p) != 5 || p[0] != "tether" || p[2] != "devices" {
		return "", "", false
	}
	return p[1], p[3], true
}

func splitHostPort(addr string) (string, int, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("nats listen address %q: %w", addr, err)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		return "", 0, fmt.Errorf("nats listen address %q: bad port", addr)
	}
	return host, n, nil
}
