package secret_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/secret"
)

func TestCredentials(t *testing.T) {
	t.Run("secrets and IDs differ each time and IDs are valid tether IDs", func(t *testing.T) {
		s1, s2, id1, id2 := secret.New(), secret.New(), secret.ID(), secret.ID()
		if s1 == s2 || id1 == id2 {
			t.Error("two calls gave the same value")
		}
		if id := secret.ID(); !tether.ValidID(id) || len(id) != 16 {
			t.Errorf("ID %q", id)
		}
		if s := secret.New(); len(s) != 43 {
			t.Errorf("secret %q is %d characters, want 43 (256 bits)", s, len(s))
		}
	})
	t.Run("a token is named by its ID", func(t *testing.T) {
		if tok := secret.Token("dev-1"); !strings.HasPrefix(tok, "dev-1.") || len(tok) != len("dev-1.")+43 {
			t.Errorf("token %q", tok)
		}
	})
	t.Run("the hash is SHA-256 of the whole credential", func(t *testing.T) {
		if h := secret.Hash("a.b"); len(h) != 32 || bytes.Equal(h, secret.Hash("a.c")) {
			t.Errorf("hash %x", h)
		}
	})
}
