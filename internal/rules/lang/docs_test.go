package lang_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/tether-iot/tether/internal/rules/lang"
)

// TestDocsExamplesParse parses every ```sql block of docs/rules.md, so the
// reference never shows a statement that Tether would refuse.
func TestDocsExamplesParse(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "..", "docs", "rules.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := 0
	lines := strings.Split(string(b), "\n")
	for i := 0; i < len(lines); i++ {
		if strings.TrimSpace(lines[i]) != "```sql" {
			continue
		}
		start := i + 1
		var stmt []string
		for i++; i < len(lines) && strings.TrimSpace(lines[i]) != "```"; i++ {
			stmt = append(stmt, lines[i])
		}
		blocks++
		t.Run("the example at line "+strconv.Itoa(start), func(t *testing.T) {
			if _, err := lang.Parse(strings.Join(stmt, "\n")); err != nil {
				t.Errorf("docs/rules.md:%d: %v", start, err)
			}
		})
	}
	if blocks < 10 {
		t.Fatalf("found %d sql blocks in docs/rules.md, want the examples", blocks)
	}
}
