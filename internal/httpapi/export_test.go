package httpapi

// Polling reports whether a long poll of the device is waiting, so that
// tests can hand it a command without sleeping.
func (s *Server) Polling(tenant, device string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.polls[deviceKey{tenant, device}]) > 0
}

// OfferAgain is offerAgain, for tests.
var OfferAgain = offerAgain
