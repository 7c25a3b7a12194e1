package pipeline

import (
	"os"
	"strings"
	"testing"
)

// TestDocsExamples parses every ```yaml block of the user reference, so the
// documentation cannot drift into examples that Kiln refuses.
func TestDocsExamples(t *testing.T) {
	doc, err := os.ReadFile("../../docs/pipeline.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := 0
	var block strings.Builder
	in, start := false, 0
	for i, line := range strings.Split(string(doc), "\n") {
		switch {
		case !in && line == "```yaml":
			in, start = true, i+2
			block.Reset()
		case in && line == "```":
			in = false
			blocks++
			if _, err := Parse("docs-example.yml", []byte(block.String())); err != nil {
				t.Errorf("example at docs/pipeline.md:%d does not parse:\n%v", start, err)
			}
		case in:
			block.WriteString(line + "\n")
		}
	}
	if blocks < 5 {
		t.Errorf("found %d yaml examples in docs/pipeline.md; the fence may have changed", blocks)
	}
}
