package cache

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// These tests drive the real @actions/cache npm client (testdata/client)
// against the service on a real TCP port: v2 is @actions/cache 6.x (Twirp
// plus Azure SDK block upload), v1 is 3.x (the legacy API, chunked PATCH).

var protocols = []string{"v2", "v1"}

// job is one client run's identity and workspace.
type job struct {
	te    *testEnv
	proto string
	env   map[string]string
	work  string
}

func (te *testEnv) job(t *testing.T, proto string, sc Scope) *job {
	t.Helper()
	return &job{te: te, proto: proto, env: te.svc.Env(te.token(t, sc)), work: t.TempDir()}
}

// run runs the client CLI and returns its last output line.
func (j *job) run(t *testing.T, args ...string) (last string, output string) {
	t.Helper()
	script, _ := filepath.Abs(filepath.Join("testdata", "client", "client.mjs"))
	pkg, _ := filepath.Abs(filepath.Join("testdata", "client", j.proto))
	cmd := exec.Command("node", append([]string{script}, args...)...)
	cmd.Dir = j.work
	home := t.TempDir()
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + home,
		"RUNNER_TEMP=" + filepath.Join(home, "tmp"),
		"GITHUB_WORKSPACE=" + j.work,
		"CACHE_CLIENT_DIR=" + pkg,
	}
	for k, v := range j.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node client.mjs %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1], string(out)
}

// save writes files (name -> content) under deps/ and saves deps as key.
func (j *job) save(t *testing.T, key string, files map[string][]byte) string {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(j.work, "deps", name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, content, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	last, out := j.run(t, "save", key, "deps")
	if !strings.HasPrefix(last, "saved ") {
		t.Fatalf("save %s: %s", key, out)
	}
	return out
}

// restore restores deps/ into a fresh workspace and returns the matched key
// ("" on a miss).
func (j *job) restore(t *testing.T, key string, restoreKeys ...string) string {
	t.Helper()
	j.work = t.TempDir()
	args := append([]string{"restore", key}, restoreKeys...)
	last, out := j.run(t, append(args, "--", "deps")...)
	switch {
	case last == "miss":
		return ""
	case strings.HasPrefix(last, "matched "):
		return strings.TrimPrefix(last, "matched ")
	}
	t.Fatalf("restore %s: %s", key, out)
	return ""
}

func (j *job) read(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(j.work, "deps", name))
	if err != nil {
		t.Fatalf("restored file: %v", err)
	}
	return b
}

var (
	mainScope    = Scope{Project: "acme", Branch: "main", DefaultBranch: "main"}
	featureScope = Scope{Project: "acme", Branch: "feature", DefaultBranch: "main"}
	prScope      = Scope{Project: "acme", Branch: "pr-7", BaseBranch: "feature", DefaultBranch: "main"}
	otherProject = Scope{Project: "other", Branch: "main", DefaultBranch: "main"}
)

func TestClientSemantics(t *testing.T) {
	forEachStore(t, func(t *testing.T, newTestEnv envMaker) {
		for _, proto := range protocols {
			t.Run(proto, func(t *testing.T) {
				te := newTestEnv(t, nil)
				onMain := te.job(t, proto, mainScope)

				onMain.save(t, "deps-aaa", map[string][]byte{"a.txt": []byte("A"), "sub/x": []byte("x")})
				onMain.save(t, "deps-bbb", map[string][]byte{"a.txt": []byte("B")})

				t.Run("exact", func(t *testing.T) {
					if got := onMain.restore(t, "deps-aaa"); got != "deps-aaa" {
						t.Fatalf("matched %q", got)
					}
					if a, x := onMain.read(t, "a.txt"), onMain.read(t, "sub/x"); string(a) != "A" || string(x) != "x" {
						t.Fatalf("restored %q %q", a, x)
					}
				})
				t.Run("restore key prefix, newest first", func(t *testing.T) {
					if got := onMain.restore(t, "deps-zzz", "nomatch-", "deps-"); got != "deps-bbb" {
						t.Fatalf("matched %q, want the newest deps- entry", got)
					}
					if a := onMain.read(t, "a.txt"); string(a) != "B" {
						t.Fatalf("restored %q", a)
					}
				})
				t.Run("primary key prefix", func(t *testing.T) {
					if got := onMain.restore(t, "deps-a"); got != "deps-aaa" {
						t.Fatalf("matched %q", got)
					}
				})
				t.Run("miss", func(t *testing.T) {
					if got := onMain.restore(t, "absent", "also-absent-"); got != "" {
						t.Fatalf("matched %q", got)
					}
				})
				t.Run("conflicting save keeps the original", func(t *testing.T) {
					conflicts := func() int {
						return len(te.rec.matching(func(r request) bool {
							return r.Status == 409 && (strings.HasSuffix(r.Path, "/CreateCacheEntry") || strings.HasSuffix(r.Path, "/caches"))
						}))
					}
					before := conflicts()
					again := te.job(t, proto, mainScope)
					out := again.save(t, "deps-aaa", map[string][]byte{"a.txt": []byte("changed")})
					if !strings.Contains(out, "Failed to save: Unable to reserve cache with key deps-aaa") || !strings.Contains(out, "saved -1") {
						t.Fatalf("client did not report the conflict:\n%s", out)
					}
					if conflicts() <= before {
						t.Fatalf("service did not answer 409 to the second save")
					}
					if got := onMain.restore(t, "deps-aaa"); got != "deps-aaa" || string(onMain.read(t, "a.txt")) != "A" {
						t.Fatalf("original entry changed: matched %q, a.txt %q", got, onMain.read(t, "a.txt"))
					}
				})
				t.Run("branch scopes", func(t *testing.T) {
					onFeature := te.job(t, proto, featureScope)
					if got := onFeature.restore(t, "deps-aaa"); got != "deps-aaa" {
						t.Fatalf("feature branch did not fall back to main: %q", got)
					}
					onFeature.save(t, "feature-only", map[string][]byte{"f": []byte("F")})
					if got := onMain.restore(t, "feature-only"); got != "" {
						t.Fatalf("main sees a feature-branch entry: %q", got)
					}
					onPR := te.job(t, proto, prScope)
					if got := onPR.restore(t, "feature-only"); got != "feature-only" {
						t.Fatalf("pull request did not fall back to its base branch: %q", got)
					}
					if got := onPR.restore(t, "deps-bbb"); got != "deps-bbb" {
						t.Fatalf("pull request did not fall back to the default branch: %q", got)
					}
					// Saving the same key on a branch makes a separate entry that
					// the branch prefers to the default branch's.
					onFeature.save(t, "deps-aaa", map[string][]byte{"a.txt": []byte("feature A")})
					if got := onFeature.restore(t, "deps-aaa"); got != "deps-aaa" || string(onFeature.read(t, "a.txt")) != "feature A" {
						t.Fatalf("feature branch entry not preferred")
					}
				})
				t.Run("read-only token", func(t *testing.T) {
					ro := mainScope
					ro.ReadOnly = true
					j := te.job(t, proto, ro)
					if out := j.save(t, "ro-key", map[string][]byte{"r": []byte("R")}); !strings.Contains(out, "saved -1") {
						t.Fatalf("read-only job saved:\n%s", out)
					}
					if got := j.restore(t, "ro-key"); got != "" {
						t.Fatalf("read-only save created %q", got)
					}
					if got := j.restore(t, "deps-aaa"); got != "deps-aaa" {
						t.Fatalf("read-only restore: %q", got)
					}
				})
				t.Run("project isolation", func(t *testing.T) {
					other := te.job(t, proto, otherProject)
					if got := other.restore(t, "deps-aaa", "deps-"); got != "" {
						t.Fatalf("project other sees acme's entry %q", got)
					}
				})
			})
		}
	})
}

// TestClientDiskFull checks that a job's log says why a save was refused.
func TestClientDiskFull(t *testing.T) {
	for proto, want := range map[string]string{
		"v2": "Cache reservation failed: insufficient storage: cache disk would be",
		"v1": "Failed to save: insufficient storage: cache disk would be",
	} {
		t.Run(proto, func(t *testing.T) {
			te := newTestEnv(t, func(c *Config) { c.DiskHighWater = 1e-9 })
			j := te.job(t, proto, mainScope)
			out := j.save(t, "k", map[string][]byte{"f": []byte("F")})
			if !strings.Contains(out, want) || !strings.Contains(out, "saved -1") {
				t.Fatalf("client output lacks %q:\n%s", want, out)
			}
			if entries, _ := te.svc.List(t.Context(), "acme"); len(entries) != 0 || len(te.files(t)) != 0 {
				t.Fatalf("left behind: %v %v", entries, te.files(t))
			}
		})
	}
}

// TestClientNewestInV1Mode runs the newest client where it falls back to
// v1: a GITHUB_SERVER_URL that is not github.com makes it assume GitHub
// Enterprise Server, which has no v2.
func TestClientNewestInV1Mode(t *testing.T) {
	te := newTestEnv(t, nil)
	j := te.job(t, "v2", mainScope)
	j.env["GITHUB_SERVER_URL"] = "https://forge.example.test"
	j.save(t, "ghes", map[string][]byte{"g": []byte("G")})
	if got := j.restore(t, "ghes"); got != "ghes" || string(j.read(t, "g")) != "G" {
		t.Fatalf("matched %q", got)
	}
	if n := len(te.rec.matching(func(r request) bool { return strings.HasPrefix(r.Path, twirpPrefix) })); n != 0 {
		t.Fatalf("%d Twirp requests in v1 mode", n)
	}
	if n := len(te.rec.matching(pathIs("PATCH", ""))); n == 0 {
		t.Fatal("no v1 upload")
	}
}

// TestClientLargeArchive saves and restores an incompressible archive over
// 128 MiB: the v2 client switches from one Put Blob to parallel Put Block +
// Put Block List above 128 MiB; the v1 client sends 32 MiB chunks, four in
// parallel.
func TestClientLargeArchive(t *testing.T) {
	forEachStore(t, func(t *testing.T, newTestEnv envMaker) {
		if testing.Short() {
			t.Skip("large archive in -short mode")
		}
		data := make([]byte, 130<<20)
		rand.Read(data)
		want := sha256.Sum256(data)
		for _, proto := range protocols {
			t.Run(proto, func(t *testing.T) {
				te := newTestEnv(t, nil)
				j := te.job(t, proto, mainScope)
				start := time.Now()
				j.save(t, "big", map[string][]byte{"blob.bin": data})
				saved := time.Since(start)
				if got := j.restore(t, "big"); got != "big" {
					t.Fatalf("matched %q", got)
				}
				// Figures for the record, not assertions: each includes the
				// client's tar+zstd and node start-up.
				t.Logf("%s: save %v, restore %v for %d MiB", proto, saved.Round(time.Millisecond),
					(time.Since(start) - saved).Round(time.Millisecond), len(data)>>20)
				f, err := os.Open(filepath.Join(j.work, "deps", "blob.bin"))
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				h := sha256.New()
				io.Copy(h, f)
				if !bytes.Equal(h.Sum(nil), want[:]) {
					t.Fatal("restored data differs")
				}
				switch proto {
				case "v2":
					blocks := te.rec.matching(func(r request) bool { return r.Method == "PUT" && hasParam(r.Query, "comp=block") })
					lists := te.rec.matching(func(r request) bool { return r.Method == "PUT" && hasParam(r.Query, "comp=blocklist") })
					if len(blocks) < 3 || len(lists) != 1 {
						t.Fatalf("want block upload: %d Put Block, %d Put Block List", len(blocks), len(lists))
					}
				case "v1":
					if n := len(te.rec.matching(pathIs("PATCH", ""))); n < 5 {
						t.Fatalf("want chunked upload, got %d PATCH requests", n)
					}
				}
				entries, _ := te.svc.List(t.Context(), "acme")
				if len(entries) != 1 || entries[0].Size < 130<<20 {
					t.Fatalf("entries %+v", entries)
				}
			})
		}
	})
}

func hasParam(rawQuery, param string) bool {
	return strings.Contains("&"+rawQuery+"&", "&"+param+"&")
}
