// Package secret makes and hashes Tether's credentials: random secrets
// and IDs, and the SHA-256 under which a credential (device token, API
// key, provisioning key) is stored. It is the one place that knows their
// format, for the registry and for provisioning alike. Standard library
// only.
package secret

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
)

// New returns a 256-bit random secret, URL-safe base64 without padding.
func New() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on Linux (Go 1.24+ panics instead)
	return base64.RawURLEncoding.EncodeToString(b)
}

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// ID returns a random 80-bit ID of 16 lowercase letters and digits, valid
// as a tether ID.
func ID() string {
	b := make([]byte, 10)
	_, _ = rand.Read(b)
	return idEncoding.EncodeToString(b)
}

// Token returns a new credential named by id: "<id>.<secret>". The part
// before the dot tells the server which record to compare its hash with.
func Token(id string) string { return id + "." + New() }

// Hash is the SHA-256 of a whole credential, which is all that is stored.
func Hash(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}
