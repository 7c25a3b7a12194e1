package brokertap

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/kilnci/kiln/internal/github"
	"github.com/kilnci/kiln/internal/github/fakegithub"
)

func TestTapRecordsRegisterCalls(t *testing.T) {
	fake := fakegithub.New()
	defer fake.Close()
	fake.AddToken("pat")
	tap, err := Start(fake)
	if err != nil {
		t.Fatal(err)
	}
	defer tap.Close()
	if fake.BrokerURL() != tap.URL()+"/" || !strings.HasPrefix(tap.URL(), "http://"+HostAlias+":") {
		t.Fatalf("broker URL %q, tap %q", fake.BrokerURL(), tap.URL())
	}
	client, err := github.New(github.Config{BaseURL: fake.URL(), Token: "pat"})
	if err != nil {
		t.Fatal(err)
	}
	labels := []string{"self-hosted", "kiln"}
	job := fake.QueueJob("o", "r", labels)
	cfg, err := client.GenerateJITConfig(context.Background(), github.Scope{Owner: "o", Repo: "r"}, "r1", labels, 0)
	if err != nil {
		t.Fatal(err)
	}
	// What a runner sends, on loopback (the host's side of the tap).
	local := strings.Replace(tap.URL(), HostAlias, "127.0.0.1", 1)
	register := func() int {
		body, _ := json.Marshal(map[string]string{"jitconfig": cfg.EncodedJITConfig})
		resp, err := http.Post(local+"/_fake/runner/register", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := register(); code != http.StatusOK {
		t.Fatalf("register: HTTP %d", code)
	}
	if code := register(); code != http.StatusConflict { // used twice: not recorded
		t.Fatalf("second register: HTTP %d", code)
	}
	r, ok := tap.Registered(cfg.RunnerID)
	if !ok || r.JobID != job.ID || r.JITConfig != cfg.EncodedJITConfig || r.At.IsZero() {
		t.Fatalf("recorded %+v, %v", r, ok)
	}
	if n := len(tap.Registers()); n != 1 {
		t.Fatalf("%d registers recorded", n)
	}
	if j, _ := fake.Job(job.ID); j.Status != "in_progress" {
		t.Fatalf("job %+v", j)
	}
}
