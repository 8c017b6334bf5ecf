package user

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"

	"github.com/tether-iot/tether"
)

// Params are argon2id's costs: Memory in KiB, Time (passes over the
// memory) and Threads (lanes, computed in parallel).
type Params struct {
	Memory  uint32
	Time    uint32
	Threads uint8
}

// DefaultParams costs 64 MiB and one pass on two lanes: above OWASP's
// minimum for argon2id (46 MiB, one pass, one lane); 40 to 90 ms on the
// two cores of the development machine. The service runs at most a few at once (see
// Options.MaxConcurrentHashes), so a storm of sign-ins costs time, not
// memory.
func DefaultParams() Params { return Params{Memory: 64 << 10, Time: 1, Threads: 2} }

const (
	saltLen = 16
	keyLen  = 32

	// MinPasswordRunes and MaxPasswordBytes bound a password: long
	// enough to resist guessing, short enough that hashing it costs
	// nothing extra.
	MinPasswordRunes = 12
	MaxPasswordBytes = 256
)

var b64 = base64.RawStdEncoding

// HashPassword returns password's argon2id hash with a random salt, as a
// PHC string: $argon2id$v=19$m=<KiB>,t=<passes>,p=<lanes>$<salt>$<hash>,
// salt and hash in unpadded standard base64. The parameters travel in
// the string, so they can change without invalidating stored hashes.
func HashPassword(password string, p Params) string {
	salt := make([]byte, saltLen)
	_, _ = rand.Read(salt) // crypto/rand.Read never fails on Linux
	return formatHash(p, salt, argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, keyLen))
}

func formatHash(p Params, salt, key []byte) string {
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.Memory, p.Time, p.Threads,
		b64.EncodeToString(salt), b64.EncodeToString(key))
}

// VerifyPassword reports whether password is the one hash was made of,
// comparing in constant time. A hash that is not a PHC argon2id string
// with sane parameters is an error.
func VerifyPassword(password, hash string) (bool, error) {
	p, salt, key, err := ParseHash(hash)
	if err != nil {
		return false, err
	}
	got := argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, uint32(len(key)))
	return subtle.ConstantTimeCompare(got, key) == 1, nil
}

// Bounds on what ParseHash accepts, so that a damaged or planted hash
// cannot make a sign-in allocate gigabytes or spin for minutes.
const (
	maxMemory  = 1 << 20 // KiB: 1 GiB
	maxTime    = 16
	minSaltLen = 8
	maxSaltLen = 64
	minKeyLen  = 16
	maxKeyLen  = 64
)

// ParseHash reads a PHC argon2id string into its parameters, salt and
// key. It accepts only version 19 and parameters within bounds.
func ParseHash(hash string) (Params, []byte, []byte, error) {
	var p Params
	bad := func(what string) (Params, []byte, []byte, error) {
		return Params{}, nil, nil, fmt.Errorf("password hash: %s", what)
	}
	parts := strings.Split(hash, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return bad("not a PHC argon2id string")
	}
	if parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return bad("version is not 19")
	}
	params := strings.Split(parts[3], ",")
	if len(params) != 3 {
		return bad("want parameters m, t and p")
	}
	for i, name := range []string{"m", "t", "p"} {
		v, ok := strings.CutPrefix(params[i], name+"=")
		// Digits only: ParseUint would also take a sign or leading
		// zeros, which would make two strings for one hash.
		if !ok || v == "" || (len(v) > 1 && v[0] == '0') || strings.Trim(v, "0123456789") != "" {
			return bad("parameter " + name + " is not a number")
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return bad("parameter " + name + " is out of range")
		}
		switch name {
		case "m":
			p.Memory = uint32(n)
		case "t":
			p.Time = uint32(n)
		case "p":
			if n > 255 {
				return bad("parameter p is out of range")
			}
			p.Threads = uint8(n)
		}
	}
	if p.Threads < 1 || p.Time < 1 || p.Time > maxTime || p.Memory < 8*uint32(p.Threads) || p.Memory > maxMemory {
		return bad("parameters out of bounds")
	}
	salt, ok := decodeB64(parts[4])
	if !ok || len(salt) < minSaltLen || len(salt) > maxSaltLen {
		return bad("bad salt")
	}
	key, ok := decodeB64(parts[5])
	if !ok || len(key) < minKeyLen || len(key) > maxKeyLen {
		return bad("bad hash")
	}
	return p, salt, key, nil
}

// decodeB64 decodes unpadded standard base64 in its one canonical form:
// the decoder alone would skip line breaks and, without Strict, ignore
// stray bits in the last character.
func decodeB64(s string) ([]byte, bool) {
	b, err := b64.Strict().DecodeString(s)
	return b, err == nil && b64.EncodeToString(b) == s
}

// CheckPassword returns an EINVALID error if password breaks the rules:
// at least MinPasswordRunes characters, at most MaxPasswordBytes bytes.
func CheckPassword(password string) error {
	if n := utf8.RuneCountInString(password); n < MinPasswordRunes {
		return tether.Errorf(tether.EINVALID, "a password needs at least %d characters; this one has %d", MinPasswordRunes, n)
	}
	if len(password) > MaxPasswordBytes {
		return tether.Errorf(tether.EINVALID, "a password may have at most %d bytes; this one has %d", MaxPasswordBytes, len(password))
	}
	return nil
}
