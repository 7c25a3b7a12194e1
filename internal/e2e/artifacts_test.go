package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/api"
	"github.com/kilnci/kiln/internal/blobstore"
	"github.com/kilnci/kiln/internal/blobstore/blobstoretest"
	"github.com/kilnci/kiln/internal/server"
	"github.com/kilnci/kiln/internal/store"
	"github.com/kilnci/kiln/internal/testenv"
)

// artifactsPipeline has a job whose artifacts are kept (a directory, a
// glob, an exclusion; a link out of the workspace and one inside it), a
// failing job that keeps its log on failure, one whose paths match
// nothing and one past the server's limit (artifactsLimit).
func artifactsPipeline() string {
	return fmt.Sprintf(`image: %[1]s
jobs:
  build:
    artifacts:
      paths: [dist/, "*.txt", "!dist/skip"]
    steps:
      - mkdir -p dist/sub dist/skip && echo hello > dist/sub/a.txt && echo top > report.txt && echo no > dist/skip/x && echo not-kept > notes.md
      - ln -s /etc/passwd dist/passwd-link && ln -s ../report.txt dist/report-link && head -c 100000 /dev/urandom > dist/blob.bin
  failing:
    artifacts: {paths: [log.txt], when: on_failure}
    steps: ["echo failing > log.txt; exit 3"]
  none:
    artifacts: [nothing-here]
    steps: ["true"]
  huge:
    artifacts: [big]
    steps: ["head -c 300000 /dev/zero > big"]
`, testenv.BaseImage)
}

const artifactsLimit = 200_000

// runArtifactsBuild runs artifactsPipeline's build and checks what every
// job kept, through the API and the CLI (get -x). It returns the build.
func runArtifactsBuild(t *testing.T, h *harness) *store.Build {
	t.Helper()
	h.startAgent("a1", nil)
	repo, _ := newRepo(t, map[string]string{".kiln.yml": artifactsPipeline()})
	h.addProject("app", repo, projectOpts{})
	b := h.waitDone(h.trigger("app", "main"))
	log := h.logText(b.ID)
	if b.Status != store.StatusFailure {
		t.Fatalf("build %s, want failure (the failing and huge jobs):\n%s", b.Status, log)
	}
	for _, want := range []string{
		"artifacts: uploaded 4 files",
		"artifacts: left out 1 symbolic link (out of the workspace, to a directory or to nothing): dist/passwd-link",
		"artifacts: uploaded 1 file (8 B",
		"artifacts: no file matches nothing-here: nothing uploaded",
		"artifacts: 1 file of 293.0 KiB: over the server's limit of 195.3 KiB for one job's artifacts (-artifacts-max-bytes): nothing uploaded",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("the log lacks %q:\n%s", want, log)
		}
	}
	var list []api.ArtifactView
	if code := h.do("GET", fmt.Sprintf("/api/v1/builds/%d/artifacts", b.ID), nil, &list); code != http.StatusOK {
		t.Fatalf("list: HTTP %d", code)
	}
	if len(list) != 2 || list[0].Job != "build" || list[0].Files != 4 || list[0].Size <= 0 || len(list[0].SHA256) != 64 || list[1].Job != "failing" || list[1].Files != 1 {
		t.Fatalf("artifacts: %s", dump(list))
	}
	if d := time.Until(list[0].ExpiresAt); d < 29*24*time.Hour || d > 31*24*time.Hour {
		t.Errorf("expires at %s: want the server's default, 30 days", list[0].ExpiresAt)
	}

	// The CLI lists them and unpacks one.
	kiln := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(kilnBin, args...)
		cmd.Env = append(os.Environ(), "KILN_SERVER="+h.url, "KILN_TOKEN="+h.admin)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("kiln %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	if out := kiln("artifacts", fmt.Sprint(b.ID)); !strings.Contains(out, "build") || !strings.Contains(out, "failing") || !strings.Contains(out, list[0].SHA256) {
		t.Errorf("kiln artifacts:\n%s", out)
	}
	dir := filepath.Join(t.TempDir(), "out")
	if out := kiln("artifacts", "get", fmt.Sprint(b.ID), "build", "-x", dir); !strings.Contains(out, "unpacked 4 files") {
		t.Errorf("kiln artifacts get -x:\n%s", out)
	}
	for name, want := range map[string]string{"dist/sub/a.txt": "hello\n", "report.txt": "top\n", "dist/report-link": "top\n"} {
		if got, err := os.ReadFile(filepath.Join(dir, name)); err != nil || string(got) != want {
			t.Errorf("%s: %q %v, want %q", name, got, err, want)
		}
	}
	if fi, err := os.Stat(filepath.Join(dir, "dist/blob.bin")); err != nil || fi.Size() != 100000 {
		t.Errorf("dist/blob.bin: %v %v", fi, err)
	}
	for _, name := range []string{"dist/passwd-link", "dist/skip/x", "notes.md"} {
		if _, err := os.Lstat(filepath.Join(dir, name)); err == nil {
			t.Errorf("%s was kept", name)
		}
	}
	file := filepath.Join(t.TempDir(), "failing.tar.zst")
	kiln("artifacts", "get", fmt.Sprint(b.ID), "failing", "-o", file)
	if fi, err := os.Stat(file); err != nil || fi.Size() != list[1].Size {
		t.Errorf("-o %s: %v %v, want %d bytes", file, fi, err, list[1].Size)
	}

	// Only an admin token reads them (there are no project-scoped
	// tokens): the agent token is refused, and no token is.
	agentTok, err := h.srv.LocalAgentToken(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{agentTok, ""} {
		for _, path := range []string{fmt.Sprintf("/api/v1/builds/%d/artifacts", b.ID), fmt.Sprintf("/api/v1/builds/%d/artifacts/build", b.ID)} {
			if code := h.doAs(tok, "GET", path, nil, nil); code != http.StatusForbidden && code != http.StatusUnauthorized {
				t.Errorf("GET %s with token %v: HTTP %d", path, tok != "", code)
			}
		}
	}
	if code := h.do("GET", fmt.Sprintf("/api/v1/builds/%d/artifacts/none", b.ID), nil, nil); code != http.StatusNotFound {
		t.Errorf("a job without artifacts: HTTP %d", code)
	}
	return b
}

// rawGet GETs path with the admin token, not following a redirect.
func rawGet(t *testing.T, h *harness, path string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("GET", h.url+path, nil)
	req.Header.Set("Authorization", "Bearer "+h.admin)
	hc := http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func artifactsTune(c *server.Config) { c.ArtifactMaxBytes = artifactsLimit }

// TestArtifactsOnDisk: artifacts kept in the data directory, served by the
// server itself, deleted when they expire.
func TestArtifactsOnDisk(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e testenv.Engine) {
		h := startServerWith(t, e, artifactsTune)
		b := runArtifactsBuild(t, h)
		resp := rawGet(t, h, fmt.Sprintf("/api/v1/builds/%d/artifacts/build", b.ID))
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/zstd" {
			t.Fatalf("download from disk: HTTP %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		blobs := func() []string {
			var out []string
			filepath.WalkDir(filepath.Join(h.dataDir, "artifacts"), func(p string, d os.DirEntry, err error) error {
				if err == nil && d.Type().IsRegular() {
					out = append(out, p)
				}
				return nil
			})
			return out
		}
		if got := blobs(); len(got) != 2 {
			t.Fatalf("blobs on disk: %v", got)
		}
		// Not yet expired: kept.
		if n, err := h.srv.ExpireArtifacts(context.Background(), time.Now()); err != nil || n != 0 {
			t.Fatalf("expire now: %d %v", n, err)
		}
		if n, err := h.srv.ExpireArtifacts(context.Background(), time.Now().Add(31*24*time.Hour)); err != nil || n != 2 {
			t.Fatalf("expire in 31 days: %d %v", n, err)
		}
		var list []api.ArtifactView
		if h.do("GET", fmt.Sprintf("/api/v1/builds/%d/artifacts", b.ID), nil, &list); len(list) != 0 {
			t.Fatalf("listed after expiry: %s", dump(list))
		}
		if got := blobs(); len(got) != 0 {
			t.Fatalf("blobs left after expiry: %v", got)
		}
		if code := h.do("GET", fmt.Sprintf("/api/v1/builds/%d/artifacts/build", b.ID), nil, nil); code != http.StatusNotFound {
			t.Fatalf("download after expiry: HTTP %d", code)
		}
	})
}

// TestArtifactsInS3: with the cache's S3 bucket, artifacts are objects
// under -artifacts-s3-prefix, a download is a redirect to the store (the
// bytes do not pass through the server), and deleting the project
// deletes them.
func TestArtifactsInS3(t *testing.T) {
	s3 := blobstoretest.S3Config(t)
	forEachEngine(t, func(t *testing.T, e testenv.Engine) {
		cfg := s3
		cfg.Prefix += "/" + e.Name
		h := startServerWith(t, e, func(c *server.Config) {
			artifactsTune(c)
			c.CacheS3 = cfg
			c.ArtifactsS3Prefix = cfg.Prefix + "-artifacts"
		})
		b := runArtifactsBuild(t, h)
		resp := rawGet(t, h, fmt.Sprintf("/api/v1/builds/%d/artifacts/build", b.ID))
		loc, err := resp.Location()
		if resp.StatusCode != http.StatusFound || err != nil {
			t.Fatalf("download from S3: HTTP %d, location %v, want a redirect", resp.StatusCode, err)
		}
		ep, _ := url.Parse(cfg.Endpoint)
		if loc.Host != ep.Host || !strings.Contains(loc.RawQuery, "X-Amz-Signature") {
			t.Fatalf("redirected to %s://%s%s, want a presigned URL of %s", loc.Scheme, loc.Host, loc.Path, ep.Host)
		}
		objCfg := cfg
		objCfg.Prefix = cfg.Prefix + "-artifacts"
		st, err := blobstore.NewS3(context.Background(), objCfg)
		if err != nil {
			t.Fatal(err)
		}
		if names, err := st.List(context.Background()); err != nil || len(names) != 2 {
			t.Fatalf("objects under the artifacts' prefix: %v %v", names, err)
		}
		if ents, _ := os.ReadDir(filepath.Join(h.dataDir, "artifacts")); len(ents) != 0 {
			t.Fatalf("artifacts on the server's disk: %v", ents)
		}
		if code := h.do("DELETE", "/api/v1/projects/app", nil, nil); code != http.StatusNoContent {
			t.Fatalf("delete project: HTTP %d", code)
		}
		if names, err := st.List(context.Background()); err != nil || len(names) != 0 {
			t.Fatalf("objects left after the project's deletion: %v %v", names, err)
		}
	})
}

// TestArtifactsUploadFails: when the server cannot store the archive, the
// job ends in error (the infrastructure's, retried while attempts remain),
// and its log says why.
func TestArtifactsUploadFails(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e testenv.Engine) {
		h := startServerWith(t, e, func(c *server.Config) { c.Scheduler.MaxAttempts = 1 })
		// The artifacts' directory made a file: every Put fails (root too).
		dir := filepath.Join(h.dataDir, "artifacts")
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dir, []byte("in the way"), 0o600); err != nil {
			t.Fatal(err)
		}
		h.startAgent("a1", nil)
		repo, _ := newRepo(t, map[string]string{".kiln.yml": pipelineFile("", "echo kept > out.txt")})
		// pipelineFile's job has no artifacts: add them to the job.
		commit(t, repo, map[string]string{".kiln.yml": strings.Replace(pipelineFile("", "echo kept > out.txt"), "  test:\n", "  test:\n    artifacts: [out.txt]\n", 1)})
		h.addProject("app", repo, projectOpts{})
		b := h.waitDone(h.trigger("app", "main"))
		log := h.logText(b.ID)
		if b.Status != store.StatusError || len(b.Jobs) != 1 || !strings.Contains(b.Jobs[0].Error, "artifacts: upload") {
			t.Fatalf("build %s, jobs %s, want error (artifacts: upload):\n%s", b.Status, dump(b.Jobs), log)
		}
		if !strings.Contains(log, "artifacts: upload of 1 file (5 B) failed: server answered 502: could not store the artifacts") {
			t.Fatalf("the log does not say why:\n%s", log)
		}
	})
}
