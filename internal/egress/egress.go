// Package egress makes the connections Tether opens on behalf of tenants
// (rule webhooks, alert webhooks and e-mail): a dialer that refuses
// addresses no tenant has business reaching, whatever a host name
// resolves to, and an HTTP client that follows no redirect. Standard
// library only.
//
// Refused: link-local addresses (169.254.0.0/16, where cloud metadata
// services answer, and fe80::/10), multicast, and the unspecified
// address. Loopback and private networks stay reachable, for webhooks to
// services next to Tether; a deployment whose tenants must not reach its
// private network restricts egress around it (an allow-list setting is
// future work).
package egress

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"
)

// Allowed reports whether an address may be dialled on a tenant's behalf.
func Allowed(ip netip.Addr) bool {
	ip = ip.Unmap()
	return ip.IsValid() && !ip.IsUnspecified() && !ip.IsLinkLocalUnicast() &&
		!ip.IsLinkLocalMulticast() && !ip.IsInterfaceLocalMulticast() && !ip.IsMulticast()
}

// Dialer returns a dialer that refuses what Allowed refuses, checked on
// the address actually dialled (after name resolution, so a host name
// that resolves to a refused address is refused too).
func Dialer(timeout time.Duration) *net.Dialer {
	return &net.Dialer{Timeout: timeout, Control: func(_, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return fmt.Errorf("egress: %q: %w", address, err)
		}
		if !Allowed(ap.Addr()) {
			return fmt.Errorf("egress: %s is not an address Tether connects to for tenants (link-local, multicast or unspecified)", ap.Addr())
		}
		return nil
	}}
}

// Client returns an HTTP client with that dialer, a timeout, and no
// redirects (a redirect could lead to an address or scheme the target's
// check did not see): a 3xx answer is the response.
func Client(timeout time.Duration) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DialContext = Dialer(timeout).DialContext
	tr.Proxy = nil
	return &http.Client{
		Timeout:       timeout,
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}
