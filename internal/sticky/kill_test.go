package sticky

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// The real crash: another process acquires a view, writes into it and is
// killed with SIGKILL. While it lives, Recover leaves its view alone;
// once it is dead, its locks are gone with it and Recover removes the view.
func TestRecoverAfterKill(t *testing.T) {
	eachMode(t, func(t *testing.T, h *harness) {
		ctx := context.Background()
		g1 := h.seed(proj, cpath, map[string]string{"x": "1"})
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashingAgent$")
		cmd.Env = append(os.Environ(), "STICKY_CRASH_DIR="+h.dir, fmt.Sprint("STICKY_CRASH_COPY=", h.forceCopy))
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer cmd.Process.Kill()
		var src string
		for sc := bufio.NewScanner(out); sc.Scan(); {
			if s, ok := strings.CutPrefix(sc.Text(), "VIEW "); ok {
				src = s
				break
			}
		}
		if src == "" {
			t.Fatal("the crashing agent did not report its view")
		}

		if err := h.open().Recover(ctx); err != nil {
			t.Fatal(err)
		}
		assertTree(t, src, map[string]string{"x": "1", "child": "wrote"})

		cmd.Process.Kill()
		cmd.Wait()
		if err := h.open().Recover(ctx); err != nil {
			t.Fatal(err)
		}
		if mps, _ := mountsUnder(h.dir); len(mps) != 0 {
			t.Fatalf("mounts left: %v", mps)
		}
		if exists(filepath.Dir(src)) {
			t.Fatalf("the killed job's view %s survived", filepath.Dir(src))
		}
		n, tree := h.current(proj, cpath)
		if n != g1 {
			t.Fatalf("current %d, want %d", n, g1)
		}
		assertTree(t, tree, map[string]string{"x": "1"})
		if g := h.gens(proj, cpath); !reflect.DeepEqual(g, []int64{g1}) {
			t.Fatalf("generations %v", g)
		}
	})
}

// TestCrashingAgent is TestRecoverAfterKill's other process.
func TestCrashingAgent(t *testing.T) {
	dir := os.Getenv("STICKY_CRASH_DIR")
	if dir == "" {
		t.Skip("run by TestRecoverAfterKill")
	}
	v, err := New(Config{Dir: dir, ForceCopy: os.Getenv("STICKY_CRASH_COPY") == "true"})
	if err != nil {
		t.Fatal(err)
	}
	w, err := v.Acquire(context.Background(), proj, cpath, "killed")
	if err != nil {
		t.Fatal(err)
	}
	writeTree(t, w.MountSource(), map[string]string{"child": "wrote"})
	fmt.Println("VIEW " + w.MountSource())
	for { // until killed (an empty select would be reported as a deadlock)
		time.Sleep(time.Hour)
	}
}
