package profile_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tether-iot/tether"
	"github.com/tether-iot/tether/internal/profile"
)

func TestASchemaCannotReadTheServersFiles(t *testing.T) {
	secretFile := filepath.Join(t.TempDir(), "secret.json")
	if err := os.WriteFile(secretFile, []byte(`{"const": "s3cr3t-value"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{"file://" + secretFile, "file:///nonexistent", "https://example.com/schema.json"} {
		t.Run("a $ref to "+ref+" is refused without being loaded", func(t *testing.T) {
			_, err := profile.Compile(&tether.Profile{ID: "p", Commands: map[string]tether.CommandDef{
				"c": {Params: json.RawMessage(`{"$ref": "` + ref + `"}`)},
			}})
			if tether.ErrorCode(err) != tether.EINVALID {
				t.Fatalf("err = %v, want EINVALID", err)
			}
			if msg := err.Error(); strings.Contains(msg, "s3cr3t") || strings.Contains(msg, "no such file") {
				t.Errorf("the error tells about the file: %s", msg)
			}
		})
	}
}
