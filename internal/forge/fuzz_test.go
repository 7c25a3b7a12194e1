package forge

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var updateSeeds = flag.Bool("update-seeds", false, "rewrite the fuzz seed corpora under testdata/fuzz from the fixtures")

// The fuzz targets sign whatever body the fuzzer makes with testSecret, so
// that it gets past verification and into the parser. Their seeds are the
// fixtures, written as go test fuzz v1 files under testdata/fuzz/<target>/
// by TestFuzzSeeds.

func FuzzParseGitHub(f *testing.F) {
	f.Add("push", []byte(`{"ref":"refs/heads/main","after":"`+helloSHA+`"}`))
	f.Add("push", []byte(`{"ref":"refs/tags/v1","after":"`+zeroSHA+`","deleted":true,"head_commit":null}`))
	f.Fuzz(func(t *testing.T, event string, body []byte) {
		ev, err := Parse("github", githubHeader(event, body), body, testSecret)
		checkParsed(t, ev, err)
	})
}

func FuzzParseGitLab(f *testing.F) {
	f.Add("Push Hook", []byte(`{"ref":"refs/heads/main","after":"`+gitlabSHA+`","checkout_sha":"`+gitlabSHA+`"}`))
	f.Add("Push Hook", []byte(`{"ref":"refs/heads/main","after":"`+zeroSHA+`","checkout_sha":null}`))
	f.Fuzz(func(t *testing.T, event string, body []byte) {
		ev, err := Parse("gitlab", gitlabHeader(event), body, testSecret)
		checkParsed(t, ev, err)
	})
}

func FuzzParseGitea(f *testing.F) {
	f.Add("pull_request", []byte(`{"action":"synchronized","number":1,"pull_request":{"head":{"ref":"a","sha":"`+helloSHA+`"},"base":{"ref":"main"}},"repository":{"full_name":"o/r"}}`))
	f.Fuzz(func(t *testing.T, event string, body []byte) {
		ev, err := Parse("gitea", giteaHeader(event, body), body, testSecret)
		checkParsed(t, ev, err)
	})
}

func FuzzParseWorkflowJob(f *testing.F) {
	f.Add("workflow_job", []byte(`{"action":"queued","workflow_job":{"id":1,"run_id":2,"status":"queued","labels":["self-hosted"]},"repository":{"full_name":"o/r"}}`))
	f.Fuzz(func(t *testing.T, event string, body []byte) {
		ev, err := Parse("github", githubHeader(event, body), body, testSecret)
		checkParsed(t, ev, err)
	})
}

// checkParsed holds Parse to its contract for a delivery that is properly
// signed: either a malformed-payload error, or an event whose push, if any,
// names a full ref and either is a deletion or has a valid commit.
func checkParsed(t *testing.T, ev *Event, err error) {
	t.Helper()
	if err != nil {
		if !errors.Is(err, ErrMalformed) || ev != nil {
			t.Fatalf("Parse = %+v, %v; want only ErrMalformed", ev, err)
		}
		return
	}
	if ev == nil || ev.DeliveryID == "" || ev.Name == "" {
		t.Fatalf("event = %+v", ev)
	}
	if (ev.Push != nil) != (ev.Kind == KindPush) {
		t.Fatalf("kind %s with push %+v", ev.Kind, ev.Push)
	}
	if (ev.PullRequest != nil) != (ev.Kind == KindPullRequest) {
		t.Fatalf("kind %s with pull request %+v", ev.Kind, ev.PullRequest)
	}
	if pr := ev.PullRequest; pr != nil {
		if pr.Number <= 0 || !isSHA(pr.Commit) || pr.HeadBranch == "" || pr.BaseBranch == "" || pr.BaseRepo == "" ||
			CheckRef(pr.Ref) != nil || strings.Contains(pr.Title, "\n") || len(pr.Title) > maxTitle || pr.Action == "" {
			t.Fatalf("pull request %+v", pr)
		}
	}
	if (ev.WorkflowJob != nil) != (ev.Kind == KindWorkflowJob) {
		t.Fatalf("kind %s with workflow job %+v", ev.Kind, ev.WorkflowJob)
	}
	if w := ev.WorkflowJob; w != nil {
		if w.ID <= 0 || w.RunID <= 0 || w.Status == "" || w.Action == "" || !validName(w.Owner) || !validName(w.Repo) || w.InstallationID < 0 || len(w.Labels) > MaxWorkflowJobLabels {
			t.Fatalf("workflow job %+v", w)
		}
		if (w.Status == "queued" || w.Status == "waiting") && (w.RunnerName != "" || w.RunnerID != 0) {
			t.Fatalf("queued workflow job with a runner: %+v", w)
		}
	}
	p := ev.Push
	if p == nil {
		return
	}
	if !strings.HasPrefix(p.Ref, "refs/") {
		t.Fatalf("push ref %q", p.Ref)
	}
	if p.Deleted != (p.Commit == "") || !p.Deleted && !isSHA(p.Commit) {
		t.Fatalf("push deleted=%v commit=%q", p.Deleted, p.Commit)
	}
	if p.Branch != "" && p.Ref != "refs/heads/"+p.Branch || p.Tag != "" && p.Ref != "refs/tags/"+p.Tag {
		t.Fatalf("push ref %q branch %q tag %q", p.Ref, p.Branch, p.Tag)
	}
	if strings.Contains(p.Message, "\n") {
		t.Fatalf("push message %q", p.Message)
	}
}

// fuzzSeed is one seed: a file name under testdata/fuzz/<target>/ and the
// target's arguments.
type fuzzSeed struct {
	target, name, event string
	body                []byte
	data                []byte // the file as is, for targets of other arguments
}

// fuzzSeeds returns the seeds made from the fixtures: every GitHub example
// and the Gitea push for FuzzParseGitHub, the GitLab payloads for
// FuzzParseGitLab.
func fuzzSeeds(t *testing.T) []fuzzSeed {
	var seeds []fuzzSeed
	add := func(target, glob string, event func(file string) string) {
		files, err := filepath.Glob(glob)
		if err != nil || len(files) == 0 {
			t.Fatalf("no fixtures %s: %v", glob, err)
		}
		for _, file := range files {
			dir := filepath.Base(filepath.Dir(file))
			name := dir + "." + strings.TrimSuffix(filepath.Base(file), ".json")
			seeds = append(seeds, fuzzSeed{target: target, name: name, event: event(file), body: readFixture(t, file)})
		}
	}
	add("FuzzParseGitHub", "testdata/github/*.json", func(file string) string {
		event, _, _ := strings.Cut(filepath.Base(file), ".")
		return event
	})
	giteaEvent := func(file string) string {
		event, _, _ := strings.Cut(filepath.Base(file), ".")
		return event
	}
	add("FuzzParseGitHub", "testdata/gitea/*.json", giteaEvent)
	add("FuzzParseGitea", "testdata/gitea/*.json", giteaEvent)
	// The real workflow_job examples fakegithub delivers.
	jobs, err := filepath.Glob(workflowJobFixtures)
	if err != nil || len(jobs) == 0 {
		t.Fatalf("no fixtures %s: %v", workflowJobFixtures, err)
	}
	for _, file := range jobs {
		name := "github." + strings.TrimSuffix(filepath.Base(file), ".json")
		seeds = append(seeds, fuzzSeed{target: "FuzzParseWorkflowJob", name: name, event: "workflow_job", body: readFixture(t, file)})
	}
	add("FuzzParseGitLab", "testdata/gitlab/*.json", func(file string) string {
		switch base := filepath.Base(file); {
		case strings.HasPrefix(base, "tag_"):
			return "Tag Push Hook"
		case strings.HasPrefix(base, "merge_request."):
			return "Merge Request Hook"
		}
		return "Push Hook"
	})
	return seeds
}

// encodeSeed writes a seed in the go test fuzz v1 format, the way the go
// command writes the inputs it finds.
func encodeSeed(s fuzzSeed) []byte {
	if s.data != nil {
		return s.data
	}
	return fmt.Appendf(nil, "go test fuzz v1\nstring(%q)\n[]byte(%q)\n", s.event, s.body)
}

// TestFuzzSeeds checks that the committed seed corpora hold every fixture
// as it is now; with -update-seeds it writes them (scripts/webhook-fixtures.sh
// does so after extracting the examples). Inputs the fuzzer found and that
// were committed as regressions sit beside them and are left alone.
func TestFuzzSeeds(t *testing.T) {
	seeds := append(fuzzSeeds(t), verifySeeds(t)...)
	if *updateSeeds {
		// Drop the seeds of fixtures that are gone; the go command names
		// what it finds by hash, so these names are only ever seeds.
		old, _ := filepath.Glob(filepath.Join("testdata", "fuzz", "*", "git*.*"))
		for _, path := range old {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, s := range seeds {
		path := filepath.Join("testdata", "fuzz", s.target, s.name)
		want := encodeSeed(s)
		if *updateSeeds {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s is missing or stale (%v); run go test ./internal/forge -run '^TestFuzzSeeds$' -update-seeds", path, err)
		}
	}
}
