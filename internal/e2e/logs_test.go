package e2e

import (
	"fmt"
	"strings"
	"testing"

	"github.com/kilnci/kiln/internal/agent"
	"github.com/kilnci/kiln/internal/store"
	"github.com/kilnci/kiln/internal/testenv"
)

// In a real sandbox on each engine: a secret printed on stdout in two
// pieces around a line on stderr is masked (each stream has its own
// masker and line splitter, so the stderr line neither splits the secret
// nor lands inside the unfinished stdout line); a multi-line secret is
// masked whole and line by line; and a flood past the job's line limit is
// cut with a [kiln] line that names the limit, the job itself succeeding.
func TestLogStreamsMaskedAndLimited(t *testing.T) {
	const maxLines = 300
	forEachEngine(t, func(t *testing.T, e testenv.Engine) {
		h := startServer(t, e)
		h.agentConfig = func(c *agent.Config) { c.LogMaxLines = maxLines }
		h.startAgent("a1", nil)
		repo, _ := newRepo(t, map[string]string{".kiln.yml": pipelineFile("",
			// 'E: hunter2-', a line on stderr, then 'supersecret\n', without
			// the pieces in the command (its text is logged).
			`printf 'E: %s' "${SPLIT%???????????}"; echo progress >&2; printf '%s\n' "${SPLIT#????????}"`,
			`printf '%s\n' "$MULTI"; echo "second alone: $(printf '%s\n' "$MULTI" | tail -n 1)"`,
			`i=0; while [ $i -lt 2000 ]; do echo "flood line $i"; i=$((i+1)); done`,
			`echo after the flood`)})
		h.addProject("app", repo, projectOpts{secrets: map[string]string{
			"SPLIT": "hunter2-supersecret",
			"MULTI": "first-line-of-key\nsecond-line-of-key",
		}})
		id := h.trigger("app", "main")
		b := h.waitDone(id)
		log := h.logText(id)
		if b.Status != store.StatusSuccess {
			t.Fatalf("build %s:\n%s", b.Status, log)
		}
		for _, leak := range []string{"hunter2", "supersecret", "first-line-of-key", "second-line-of-key"} {
			if strings.Contains(log, leak) {
				t.Errorf("secret piece %q in the log:\n%s", leak, log)
			}
		}
		for _, want := range []string{"[test] E: ***\n", "[test] progress\n", "second alone: ***\n", "[kiln] log limit reached (", fmt.Sprint(maxLines)} {
			if !strings.Contains(log, want) {
				t.Errorf("log lacks %q:\n%s", want, head(log, 60))
			}
		}
		if strings.Contains(log, "flood line 1999") || strings.Contains(log, "[test] after the flood") {
			t.Errorf("output past the job's limit was kept:\n%s", tail(log, 20))
		}
		if n := strings.Count(log, "\n[test] flood line "); n > maxLines {
			t.Errorf("%d flood lines kept, limit %d", n, maxLines)
		}
	})
}

func head(s string, n int) string {
	lines := strings.SplitAfter(s, "\n")
	return strings.Join(lines[:min(n, len(lines))], "")
}

func tail(s string, n int) string {
	lines := strings.SplitAfter(s, "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "")
}
