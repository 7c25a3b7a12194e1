package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/kilnci/kiln/internal/cache"
)

// The cache service's throughput through the real @actions/cache client
// (the npm package the tests drive: internal/cache/testdata/client, v2),
// against the disk's own sequential copy throughput, measured in the same
// run on the same filesystem. Then the same bytes through each stage
// alone, to say what bounds the client.

const (
	parts    = 4
	cacheKey = "cachebench-throughput"
)

type tpConfig struct {
	dir    string
	size   int64
	src    string // the Kiln repository (for the client's tooling)
	rounds int
}

// tpRound is one round of every measurement, taken back to back so that a
// change in the machine's load hits them alike.
type tpRound struct {
	diskRW, diskCFR       time.Duration // read/write copy + fsync; io.Copy (copy_file_range) + fsync
	save, restore, miss   time.Duration // the real client
	cpuSave, cpuRestore   time.Duration
	pack, unpack, cpuPack time.Duration // the client's tar commands alone
	upload, fetch         time.Duration // the service alone
	bareFetch             time.Duration // a bare net/http server of the same archive
}

type tpResult struct {
	size, archive              int64
	fsType                     string
	clientVersion, zstdVersion string
	rounds                     []tpRound
	saveLines, restoreLines    []string
}

func throughput(ctx context.Context, cfg tpConfig, log func(string, ...any)) (*tpResult, error) {
	clientDir := filepath.Join(cfg.src, "internal", "cache", "testdata", "client")
	if err := installClient(clientDir, log); err != nil {
		return nil, err
	}
	res := &tpResult{size: cfg.size, clientVersion: clientVersion(clientDir)}
	if out, err := exec.Command("zstd", "-V").Output(); err == nil {
		for _, f := range strings.Fields(string(out)) {
			if strings.HasPrefix(f, "v1.") || strings.HasPrefix(f, "v2.") {
				res.zstdVersion = "zstd " + strings.TrimSuffix(f, ",")
			}
		}
	}
	work := filepath.Join(cfg.dir, "save")
	data := filepath.Join(work, "data")
	log("writing %s of incompressible data in %d files", human(cfg.size), parts)
	if err := writeRandom(data, cfg.size); err != nil {
		return nil, err
	}
	if out, err := exec.Command("stat", "-f", "-c", "%T", data).Output(); err == nil {
		res.fsType = strings.TrimSpace(string(out))
	}

	k, err := startKiln(ctx, filepath.Join(cfg.dir, "kiln"), "", discardLogger())
	if err != nil {
		return nil, err
	}
	defer k.close()
	scope := cache.Scope{Project: "cachebench", Branch: "main", DefaultBranch: "main"}
	tok, err := k.srv.Cache.IssueToken(scope, 2*time.Hour)
	if err != nil {
		return nil, err
	}
	cl := &client{dir: clientDir, env: k.srv.Cache.Env(tok), home: filepath.Join(cfg.dir, "home")}
	for i := 0; i < cfg.rounds; i++ {
		r, err := tpOnce(ctx, k, cl, tok, cfg, res, i, log)
		if err != nil {
			return nil, err
		}
		res.rounds = append(res.rounds, r)
		log("round %d: disk %.0f MiB/s (copy_file_range %.0f), save %.0f MiB/s, restore %.0f MiB/s", i+1,
			mibps(cfg.size, r.diskRW), mibps(cfg.size, r.diskCFR), mibps(cfg.size, r.save), mibps(cfg.size, r.restore))
	}
	return res, nil
}

// tpOnce is one round; the entries it makes are deleted at its end, and
// so are its files but the data.
func tpOnce(ctx context.Context, k *kiln, cl *client, tok string, cfg tpConfig, res *tpResult, i int, log func(string, ...any)) (r tpRound, err error) {
	work := filepath.Join(cfg.dir, "save")
	data := filepath.Join(work, "data")
	scratch := filepath.Join(cfg.dir, "round")
	defer func() { err = errors.Join(err, os.RemoveAll(scratch)) }()
	if err := os.MkdirAll(scratch, 0o755); err != nil {
		return r, err
	}
	settle()
	if r.diskRW, err = copyDir(data, filepath.Join(scratch, "copy-rw"), false); err != nil {
		return r, err
	}
	settle()
	if r.diskCFR, err = copyDir(data, filepath.Join(scratch, "copy-cfr"), true); err != nil {
		return r, err
	}
	if err := errors.Join(os.RemoveAll(filepath.Join(scratch, "copy-rw")), os.RemoveAll(filepath.Join(scratch, "copy-cfr"))); err != nil {
		return r, err
	}

	key := fmt.Sprintf("%s-%d", cacheKey, i+1)
	var lines []string
	settle()
	if r.save, r.cpuSave, lines, err = cl.run(work, "save", key, "data"); err != nil {
		return r, err
	}
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, "saved ") || last == "saved -1" {
		return r, fmt.Errorf("save did not save: %s", strings.Join(lines, "\n"))
	}
	res.saveLines = lines
	restored := filepath.Join(scratch, "restore")
	if err := os.MkdirAll(restored, 0o755); err != nil {
		return r, err
	}
	// The client's fixed cost: node's start, the import, one lookup.
	if r.miss, _, _, err = cl.run(restored, "restore", key+"-absent", "--", "data"); err != nil {
		return r, err
	}
	settle()
	if r.restore, r.cpuRestore, lines, err = cl.run(restored, "restore", key, "--", "data"); err != nil {
		return r, err
	}
	if last := lines[len(lines)-1]; last != "matched "+key {
		return r, fmt.Errorf("restore: %s", strings.Join(lines, "\n"))
	}
	res.restoreLines = lines
	if i == 0 {
		if err := sameFiles(data, filepath.Join(restored, "data")); err != nil {
			return r, fmt.Errorf("the restored data differ: %w", err)
		}
	}
	if err := os.RemoveAll(restored); err != nil {
		return r, err
	}

	// Each stage alone: the commands the client runs (its log shows
	// them, with -P and a file list), and the service without the client.
	entries, err := k.srv.Cache.List(ctx, "cachebench")
	if err != nil || len(entries) != 1 {
		return r, fmt.Errorf("cache entries after the save: %v %v", entries, err)
	}
	res.archive = entries[0].Size
	archive := filepath.Join(scratch, "archive.tzst")
	settle()
	if r.pack, r.cpuPack, err = timeShell(fmt.Sprintf("tar --posix -cf %q -C %q --use-compress-program zstdmt data", archive, work)); err != nil {
		return r, err
	}
	settle()
	if r.upload, err = rawUpload(ctx, k, tok, key+"-raw", archive); err != nil {
		return r, err
	}
	settle()
	if r.bareFetch, err = bareDownload(ctx, archive, filepath.Join(scratch, "bare.tzst")); err != nil {
		return r, err
	}
	if err := os.Remove(archive); err != nil {
		return r, err
	}
	fetched := filepath.Join(scratch, "fetched.tzst")
	settle()
	if r.fetch, err = rawDownload(ctx, k, tok, entries[0], fetched); err != nil {
		return r, err
	}
	unpacked := filepath.Join(scratch, "unpacked")
	if err := os.MkdirAll(unpacked, 0o755); err != nil {
		return r, err
	}
	settle()
	if r.unpack, _, err = timeShell(fmt.Sprintf("tar -xf %q -C %q --use-compress-program unzstd", fetched, unpacked)); err != nil {
		return r, err
	}
	all, err := k.srv.Cache.List(ctx, "cachebench")
	for _, e := range all {
		err = errors.Join(err, k.srv.Cache.Delete(ctx, "cachebench", e.ID))
	}
	return r, err
}

// settle flushes the dirty pages earlier stages left (a restore writes
// 1 GiB without fsync), so that no measurement pays for another's
// writeback: the disk's copy, which ends with an fsync, otherwise would.
func settle() { syscall.Sync() }

// med is the median of f over the rounds.
func med(rs []tpRound, f func(tpRound) time.Duration) time.Duration {
	ds := make([]time.Duration, len(rs))
	for i, r := range rs {
		ds[i] = f(r)
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[len(ds)/2]
}

func printThroughput(r *tpResult) {
	rs := r.rounds
	disk := med(rs, func(x tpRound) time.Duration { return x.diskRW })
	dm := mibps(r.size, disk)
	fmt.Printf("\n== cache service throughput: %s of incompressible data in %d files, %s (v2 protocol), %s, filesystem %s; medians of %d rounds\n",
		human(r.size), parts, r.clientVersion, r.zstdVersion, r.fsType, len(rs))
	fmt.Printf("%-62s %8s %8s %8s  %s\n", "", "time", "MiB/s", "vs disk", "(MiB/s of each round)")
	line := func(name string, n int64, f func(tpRound) time.Duration) {
		d := med(rs, f)
		var each []string
		for _, x := range rs {
			each = append(each, fmt.Sprintf("%.0f", mibps(n, f(x))))
		}
		fmt.Printf("%-62s %8s %8.0f %7.2fx  %s\n", name, sec(d), mibps(n, d), mibps(n, d)/dm, strings.Join(each, " "))
	}
	line("disk: sequential copy, read/write 1 MiB + fsync (reference)", r.size, func(x tpRound) time.Duration { return x.diskRW })
	line("disk: sequential copy, io.Copy (copy_file_range) + fsync", r.size, func(x tpRound) time.Duration { return x.diskCFR })
	line("@actions/cache save: tar | zstdmt, upload, finalize", r.size, func(x tpRound) time.Duration { return x.save })
	line("@actions/cache restore: lookup, download, unzstd | tar -x", r.size, func(x tpRound) time.Duration { return x.restore })
	save, restore := mibps(r.size, med(rs, func(x tpRound) time.Duration { return x.save })), mibps(r.size, med(rs, func(x tpRound) time.Duration { return x.restore }))
	cfr := mibps(r.size, med(rs, func(x tpRound) time.Duration { return x.diskCFR }))
	fmt.Printf("ratio save/disk = %.2f   restore/disk = %.2f (target ≥ 0.70); against the copy_file_range copy: save %.2f, restore %.2f\n",
		save/dm, restore/dm, save/cfr, restore/cfr)
	fmt.Printf("client CPU time (node and its tar/zstd, user+sys): save %s, restore %s, for %s wall on %d cores\n",
		sec(med(rs, func(x tpRound) time.Duration { return x.cpuSave })), sec(med(rs, func(x tpRound) time.Duration { return x.cpuRestore })),
		sec(med(rs, func(x tpRound) time.Duration { return x.save })+med(rs, func(x tpRound) time.Duration { return x.restore })), ncpu())
	fmt.Printf("the same bytes, one stage at a time (archive %s, %.3f of the data):\n", human(r.archive), float64(r.archive)/float64(r.size))
	fmt.Printf("%-62s %8s\n", "  the client's fixed cost (node, import, a lookup that misses)", sec(med(rs, func(x tpRound) time.Duration { return x.miss })))
	line("  tar --use-compress-program zstdmt to a file (no network)", r.size, func(x tpRound) time.Duration { return x.pack })
	fmt.Printf("%-62s %8s CPU\n", "", sec(med(rs, func(x tpRound) time.Duration { return x.cpuPack })))
	line("  the service alone: Put Blob of that archive (Go client)", r.archive, func(x tpRound) time.Duration { return x.upload })
	line("  the service alone: GET of the archive to a file + fsync", r.archive, func(x tpRound) time.Duration { return x.fetch })
	line("  no Kiln: net/http ServeContent of it, GET to a file + fsync", r.archive, func(x tpRound) time.Duration { return x.bareFetch })
	line("  tar -x --use-compress-program unzstd from a file", r.size, func(x tpRound) time.Duration { return x.unpack })
	fmt.Println("client lines (save, last round):")
	printClientLines(r.saveLines)
	fmt.Println("client lines (restore, last round):")
	printClientLines(r.restoreLines)
}

func printClientLines(lines []string) {
	for i, l := range lines {
		// Masks carry tokens; progress lines but the last say little.
		if strings.HasPrefix(l, "::") || strings.TrimSpace(l) == "" || (progress.MatchString(l) && i+1 < len(lines) && progress.MatchString(lines[i+1])) {
			continue
		}
		fmt.Printf("    %s\n", l)
	}
}

var progress = regexp.MustCompile(`^(Sent|Received) \d+ of \d+`)

func mibps(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / (1 << 20) / d.Seconds()
}

func human(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%d B", n)
}

// installClient runs `npm ci` for the v2 client when its node_modules are
// missing, as the cache tests do.
func installClient(dir string, log func(string, ...any)) error {
	for _, tool := range []string{"node", "npm", "tar", "zstd"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is not on PATH: the real @actions/cache client needs node and npm, and tar and zstd for its archives (Debian: nodejs npm tar zstd)", tool)
		}
	}
	v2 := filepath.Join(dir, "v2")
	if _, err := os.Stat(filepath.Join(v2, "node_modules", "@actions", "cache", "package.json")); err == nil {
		return nil
	}
	log("npm ci in %s", v2)
	cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund", "--loglevel=error")
	cmd.Dir = v2
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("npm ci in %s: %v\n%s", v2, err, out)
	}
	return nil
}

func clientVersion(dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, "v2", "node_modules", "@actions", "cache", "package.json"))
	var pkg struct{ Version string }
	if err != nil || json.Unmarshal(b, &pkg) != nil {
		return "@actions/cache"
	}
	return "@actions/cache " + pkg.Version
}

// client runs client.mjs as a job step would run actions/cache.
type client struct {
	dir  string
	env  map[string]string
	home string
}

func (c *client) run(work string, args ...string) (time.Duration, time.Duration, []string, error) {
	if err := os.MkdirAll(filepath.Join(c.home, "tmp"), 0o755); err != nil {
		return 0, 0, nil, err
	}
	cmd := exec.Command("node", append([]string{filepath.Join(c.dir, "client.mjs")}, args...)...)
	cmd.Dir = work
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + c.home, "RUNNER_TEMP=" + filepath.Join(c.home, "tmp"),
		"GITHUB_WORKSPACE=" + work, "CACHE_CLIENT_DIR=" + filepath.Join(c.dir, "v2")}
	for k, v := range c.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	t0 := time.Now()
	out, err := cmd.CombinedOutput()
	d := time.Since(t0)
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if err != nil {
		return 0, 0, lines, fmt.Errorf("node client.mjs %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return d, cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime(), lines, nil
}

// writeRandom writes size bytes of ChaCha8 output (incompressible) in
// parts files under dir, synced.
func writeRandom(dir string, size int64) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	rng := rand.NewChaCha8([32]byte{'k', 'i', 'l', 'n'})
	buf := make([]byte, 1<<20)
	for i := 0; i < parts; i++ {
		n := size / parts
		if i == parts-1 {
			n = size - n*(parts-1)
		}
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("part-%d.bin", i)))
		if err != nil {
			return err
		}
		for n > 0 {
			b := buf[:min(int64(len(buf)), n)]
			_, _ = rng.Read(b)
			if _, err := f.Write(b); err != nil {
				f.Close()
				return err
			}
			n -= int64(len(b))
		}
		if err := errors.Join(f.Sync(), f.Close()); err != nil {
			return err
		}
	}
	return nil
}

// copyDir copies the files of src into dst, each synced, and returns the
// time taken. cfr: with io.Copy, which on Linux lets the kernel copy
// (copy_file_range) without the bytes passing through this process; else
// with read and write of 1 MiB, as `dd bs=1M conv=fsync` does (and as
// anything receiving the bytes from a network must).
func copyDir(src, dst string, cfr bool) (time.Duration, error) {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return 0, err
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		return 0, err
	}
	t0 := time.Now()
	for _, e := range ents {
		if err := copyFile(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name()), cfr); err != nil {
			return 0, err
		}
	}
	return time.Since(t0), nil
}

func copyFile(src, dst string, cfr bool) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if cfr {
		_, err = io.Copy(out, in)
	} else {
		// Plain Reader and Writer: no ReadFrom/WriteTo shortcut.
		_, err = io.CopyBuffer(struct{ io.Writer }{out}, struct{ io.Reader }{in}, make([]byte, 1<<20))
	}
	if err != nil {
		out.Close()
		return err
	}
	return errors.Join(out.Sync(), out.Close())
}

func sameFiles(a, b string) error {
	ents, err := os.ReadDir(a)
	if err != nil {
		return err
	}
	for _, e := range ents {
		ha, err := hashFile(filepath.Join(a, e.Name()))
		if err != nil {
			return err
		}
		hb, err := hashFile(filepath.Join(b, e.Name()))
		if err != nil {
			return err
		}
		if !bytes.Equal(ha, hb) {
			return fmt.Errorf("%s differs", e.Name())
		}
	}
	return nil
}

func hashFile(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}

// timeShell runs a shell pipeline and returns its wall and CPU time.
func timeShell(script string) (time.Duration, time.Duration, error) {
	cmd := exec.Command("bash", "-c", "set -eo pipefail; "+script)
	t0 := time.Now()
	out, err := cmd.CombinedOutput()
	d := time.Since(t0)
	if err != nil {
		return 0, 0, fmt.Errorf("%s: %v\n%s", script, err, out)
	}
	return d, cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime(), nil
}

// twirp calls the v2 cache API with the job token.
func twirp(ctx context.Context, k *kiln, tok, method string, in, out any) error {
	body, _ := json.Marshal(in)
	req, err := http.NewRequestWithContext(ctx, "POST", k.url+"/twirp/github.actions.results.api.v1.CacheService/"+method, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: HTTP %d: %s", method, resp.StatusCode, data)
	}
	return json.Unmarshal(data, out)
}

// rawUpload sends the archive to the service as one Put Blob (what the
// client does below 128 MiB; above, it sends 64 MiB blocks 8 at a time)
// and finalizes it: the service's own cost of taking the bytes.
func rawUpload(ctx context.Context, k *kiln, tok, key, archive string) (time.Duration, error) {
	f, err := os.Open(archive)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	t0 := time.Now()
	var created struct {
		Ok  bool   `json:"ok"`
		URL string `json:"signed_upload_url"`
	}
	req0 := map[string]any{"key": key, "version": "cachebench-raw"}
	if err := twirp(ctx, k, tok, "CreateCacheEntry", req0, &created); err != nil || !created.Ok {
		return 0, fmt.Errorf("CreateCacheEntry: %v %+v", err, created)
	}
	req, err := http.NewRequestWithContext(ctx, "PUT", created.URL, f)
	if err != nil {
		return 0, err
	}
	req.ContentLength = fi.Size()
	req.Header.Set("x-ms-blob-type", "BlockBlob")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return 0, fmt.Errorf("Put Blob: HTTP %d: %s", resp.StatusCode, msg)
	}
	var fin struct {
		Ok bool `json:"ok"`
	}
	req0["size_bytes"] = fi.Size()
	if err := twirp(ctx, k, tok, "FinalizeCacheEntryUpload", req0, &fin); err != nil || !fin.Ok {
		return 0, fmt.Errorf("FinalizeCacheEntryUpload: %v", err)
	}
	return time.Since(t0), nil
}

// bareDownload serves file with a bare net/http server on loopback
// (http.ServeContent, sendfile) and GETs it into dst, synced: what HTTP
// alone costs on this machine, the service's floor.
func bareDownload(ctx context.Context, file, dst string) (time.Duration, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, err := os.Open(file)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		defer f.Close()
		http.ServeContent(w, r, "", time.Time{}, f)
	})}
	go hs.Serve(ln)
	defer hs.Close()
	t0 := time.Now()
	if err := getToFile(ctx, "http://"+ln.Addr().String()+"/", dst); err != nil {
		return 0, err
	}
	return time.Since(t0), os.Remove(dst)
}

// getToFile GETs url into dst and syncs it.
func getToFile(ctx context.Context, url, dst string) error {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET: HTTP %d", resp.StatusCode)
	}
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, resp.Body); err != nil {
		out.Close()
		return err
	}
	return errors.Join(out.Sync(), out.Close())
}

// rawDownload fetches the client's archive through a signed URL into a
// file, synced: the service's own cost of serving the bytes.
func rawDownload(ctx context.Context, k *kiln, tok string, e cache.Entry, dst string) (time.Duration, error) {
	t0 := time.Now()
	var got struct {
		Ok  bool   `json:"ok"`
		URL string `json:"signed_download_url"`
	}
	if err := twirp(ctx, k, tok, "GetCacheEntryDownloadURL", map[string]any{"key": e.Key, "version": e.Version}, &got); err != nil || !got.Ok {
		return 0, fmt.Errorf("GetCacheEntryDownloadURL: %v %+v", err, got)
	}
	if err := getToFile(ctx, got.URL, dst); err != nil {
		return 0, err
	}
	return time.Since(t0), nil
}
