package github_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/github"
	"github.com/kilnci/kiln/internal/github/fakegithub"
)

const headSHA = "0123456789abcdef0123456789abcdef01234567"

// A check run's life through the client: created queued, moved to
// in_progress, completed with a conclusion and output, as an App
// installation; a personal token is refused (GitHub lets only Apps write
// check runs); bad arguments fail before any request.
func TestCheckRuns(t *testing.T) {
	ctx := context.Background()
	s := newFake(t)
	c := newClient(t, appConfig(s))
	started := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	id, err := c.CreateCheckRun(ctx, "acme", "app", github.CheckRun{Name: "kiln/test", HeadSHA: headSHA, Status: github.CheckQueued,
		DetailsURL: "https://kiln.example/builds/7", ExternalID: "7", Title: "queued", Summary: "The job is queued."})
	if err != nil || id == 0 {
		t.Fatalf("create: %d, %v", id, err)
	}
	if err := c.UpdateCheckRun(ctx, "acme", "app", id, github.CheckRun{Name: "kiln/test", Status: github.CheckInProgress, StartedAt: started}); err != nil {
		t.Fatalf("in progress: %v", err)
	}
	if err := c.UpdateCheckRun(ctx, "acme", "app", id, github.CheckRun{Name: "kiln/test", Status: github.CheckCompleted, Conclusion: github.ConclusionFailure,
		CompletedAt: started.Add(time.Minute), Title: "failed at step 'test'", Summary: "last lines", Text: "more"}); err != nil {
		t.Fatalf("completed: %v", err)
	}
	var seq []string
	for _, e := range s.CheckRunEvents() {
		seq = append(seq, e.Run.Status+"/"+e.Run.Conclusion)
	}
	if got := strings.Join(seq, " "); got != "queued/ in_progress/ completed/failure" {
		t.Errorf("states %q", got)
	}
	runs := s.CheckRuns()
	if len(runs) != 1 {
		t.Fatalf("runs: %+v", runs)
	}
	r := runs[0]
	if r.ID != id || r.Name != "kiln/test" || r.HeadSHA != headSHA || r.DetailsURL != "https://kiln.example/builds/7" || r.ExternalID != "7" ||
		r.Title != "failed at step 'test'" || r.Summary != "last lines" || r.Text != "more" || !r.CompletedAt.Equal(started.Add(time.Minute)) || !r.StartedAt.Equal(started) {
		t.Errorf("run: %+v", r)
	}

	if err := c.UpdateCheckRun(ctx, "acme", "app", id+1000, github.CheckRun{Name: "kiln", Status: github.CheckQueued}); !errors.Is(err, github.ErrNotFound) {
		t.Errorf("a check run that does not exist: %v, want ErrNotFound", err)
	}

	tok := newClient(t, github.Config{BaseURL: s.URL(), Token: pat})
	_, err = tok.CreateCheckRun(ctx, "acme", "app", github.CheckRun{Name: "kiln", HeadSHA: headSHA})
	if !errors.Is(err, github.ErrForbidden) || !strings.Contains(err.Error(), "GitHub App") {
		t.Errorf("with a personal token: %v, want ErrForbidden", err)
	}

	before := s.Calls(fakegithub.EndpointCreateCheckRun)
	for name, r := range map[string]github.CheckRun{
		"no name":                {HeadSHA: headSHA},
		"short sha":              {Name: "kiln", HeadSHA: "0123456"},
		"bad status":             {Name: "kiln", HeadSHA: headSHA, Status: "running"},
		"bad conclusion":         {Name: "kiln", HeadSHA: headSHA, Status: github.CheckCompleted, Conclusion: "canceled"},
		"completed, no verdict":  {Name: "kiln", HeadSHA: headSHA, Status: github.CheckCompleted},
		"verdict, not completed": {Name: "kiln", HeadSHA: headSHA, Status: github.CheckQueued, Conclusion: github.ConclusionSuccess},
		"title without summary":  {Name: "kiln", HeadSHA: headSHA, Title: "t"},
		"summary too long":       {Name: "kiln", HeadSHA: headSHA, Title: "t", Summary: strings.Repeat("x", github.CheckOutputMax+1)},
	} {
		if _, err := c.CreateCheckRun(ctx, "acme", "app", r); !errors.Is(err, github.ErrValidation) {
			t.Errorf("%s: %v, want ErrValidation", name, err)
		}
	}
	if _, err := c.CreateCheckRun(ctx, "acme", "", github.CheckRun{Name: "kiln", HeadSHA: headSHA}); !errors.Is(err, github.ErrValidation) {
		t.Errorf("no repository: %v, want ErrValidation", err)
	}
	if n := s.Calls(fakegithub.EndpointCreateCheckRun); n != before {
		t.Errorf("%d requests for bad arguments", n-before)
	}
}

// A 5xx and a rate limit come back retryable, as every call's do.
func TestCheckRunErrorsRetryable(t *testing.T) {
	ctx := context.Background()
	s := newFake(t)
	c := newClient(t, appConfig(s))
	s.FailNext(fakegithub.EndpointCreateCheckRun, http.StatusBadGateway, 1)
	if _, err := c.CreateCheckRun(ctx, "acme", "app", github.CheckRun{Name: "kiln", HeadSHA: headSHA}); !errors.Is(err, github.ErrServer) || !github.Retryable(err) {
		t.Errorf("502: %v", err)
	}
	s.SecondaryRateLimit(1, http.StatusForbidden, 30*time.Second)
	_, err := c.CreateCheckRun(ctx, "acme", "app", github.CheckRun{Name: "kiln", HeadSHA: headSHA})
	if rl, ok := errors.AsType[*github.RateLimitError](err); !ok || rl.RetryAfter != 30*time.Second {
		t.Errorf("rate limited: %v", err)
	}
}
