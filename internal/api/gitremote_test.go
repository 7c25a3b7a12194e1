package api_test

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/server"
	"github.com/kilnci/kiln/internal/store"
)

// silentServer accepts TCP connections on 127.0.0.1 and never answers,
// like a forge that hangs. It returns its address.
func silentServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return l.Addr().String()
}

// gitProcesses returns the live processes whose command line holds s (a
// URL of the silent server): git and the helpers it started.
func gitProcesses(s string) []string {
	var out []string
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		cmdline, err := os.ReadFile(filepath.Join(d, "cmdline"))
		if err != nil || len(cmdline) == 0 { // gone, or a zombie
			continue
		}
		if strings.Contains(string(cmdline), s) {
			out = append(out, filepath.Base(d)+": "+strings.ReplaceAll(string(cmdline), "\x00", " "))
		}
	}
	return out
}

// waitProcesses polls until the processes mentioning s are there (or gone).
func waitProcesses(t *testing.T, s string, there bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for (len(gitProcesses(s)) > 0) != there {
		if time.Now().After(deadline) {
			t.Fatalf("processes mentioning %s: %v, want there=%v", s, gitProcesses(s), there)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestStuckRemoteDelaysOnlyItsProject: two projects whose clone URLs point
// at a server that accepts and never answers (http, whose fetch runs
// git-remote-http, and git://) hold a planner each, and another project's
// build is planned and runs meanwhile. Canceling the stuck build, or
// removing the stuck project, kills its git at once (the deadline here is
// an hour).
func TestStuckRemoteDelaysOnlyItsProject(t *testing.T) {
	e := newEnv(t, func(c *server.Config) { c.Git.FetchTimeout = time.Hour })
	addr := silentServer(t)
	httpURL, gitURL := "http://"+addr+"/x.git", "git://"+addr+"/x"
	e.project("stuck-http", httpURL, nil)
	e.project("stuck-git", gitURL, nil)
	stuck := e.trigger("stuck-http", "main")
	e.trigger("stuck-git", "main")
	waitProcesses(t, httpURL, true)
	waitProcesses(t, gitURL, true)

	dir, head := newRepo(t)
	e.project("hello", dir, nil)
	b := e.trigger("hello", "main")
	wantQueued(t, e.waitPlanned(b.ID), head)
	e.register("a1")
	a := e.mustClaim("a1")
	e.finish(a.JobID, a.Attempt, store.StatusSuccess).want(t, http.StatusNoContent, nil)
	if got := e.build(b.ID); got.Status != store.StatusSuccess {
		t.Fatalf("hello's build %s", dump(got))
	}

	if got := e.build(stuck.ID); got.Status != store.StatusQueued || got.Planned {
		t.Fatalf("stuck build %s, want queued, unplanned", dump(got))
	}
	e.api("POST", fmt.Sprintf("/api/v1/builds/%d/cancel", stuck.ID), nil).want(t, http.StatusAccepted, nil)
	waitProcesses(t, httpURL, false)
	e.api("DELETE", "/api/v1/projects/stuck-git", nil).want(t, http.StatusNoContent, nil)
	waitProcesses(t, addr, false)
}

// TestStuckRemoteTimesOut: a fetch past its deadline is killed, with its
// helper processes, and the build ends in error saying so.
func TestStuckRemoteTimesOut(t *testing.T) {
	e := newEnv(t, func(c *server.Config) {
		c.Git.FetchTimeout = time.Second
		c.Scheduler.PlanAttempts = 1
	})
	addr := silentServer(t)
	url := "http://" + addr + "/x.git"
	e.project("stuck", url, nil)
	id := e.trigger("stuck", "main").ID
	b := e.waitBuild(id, "finished", func(b *store.Build) bool { return b.Status.Terminal() })
	want := "git fetch of " + url + " timed out after 1s"
	if b.Status != store.StatusError || !strings.Contains(b.Error, want) {
		t.Fatalf("build %s, want error saying %q", dump(b), want)
	}
	waitProcesses(t, addr, false)
}
