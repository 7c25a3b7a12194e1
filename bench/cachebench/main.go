// Command cachebench measures Kiln's warm caches (issue 3), side by side in
// one run on one machine, and prints the figures and their ratios.
//
//	scripts/images.sh golang [--podman]     # localhost/kiln/golang:<go version>, once
//	go run ./bench/cachebench                                   # Docker
//	go run ./bench/cachebench -engine unix:///run/kiln-podman.sock
//
// builds: a real project from the Go module proxy (-project, by default
// Prometheus's node_exporter; its module zip made a git repository) built
// with `go build` in the golang image, its modules fetched through
// the host's own module proxy (`go env GOPROXY`), timed from the API trigger to the build's
// success, four ways:
//
//	(a) cold: a fresh sandbox, no cache, building B1;
//	(b) sticky warm: sticky volumes on /root/go/pkg/mod and
//	    /root/.cache/go-build, primed by building A, then Bi;
//	(c) keyed warm: a keyed cache of the same paths, saved to the cache
//	    service by a build of A on agent 1, restored by agent 2 (its own
//	    data dir, another host's view) building Bi; both agents stay up;
//	(d) the limit: `go build` of Bi on the host itself with a GOCACHE and
//	    GOMODCACHE warmed by building A.
//
// Bi changes one line of one package (-leaf: the collector package, on
// which every exporter builds) relative to A. The warm ways run -rounds times, interleaved; medians are reported,
// with the ratios b/d, c/d and a/b and where the time of (b) and (c) goes.
//
// throughput: -size bytes (1 GiB) of incompressible data saved and
// restored through a Kiln server's cache service with the real
// @actions/cache client (internal/cache/testdata/client), against the
// disk's sequential copy throughput on the same filesystem, plus each
// stage alone (tar | zstd, the service's upload and download, unzstd | tar).
//
// Needs root (the engines' sockets, sticky volumes' overlay mounts), the
// engines of scripts/engines.sh, node, npm, tar and zstd. Everything it
// creates lives in one temporary directory, removed at the end (-keep
// keeps it); Kiln removes the containers.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/kilnci/kiln/internal/sticky"
)

func main() {
	engine := flag.String("engine", "unix:///run/kiln-docker.sock", "container engine socket (Docker, or Podman's compatible socket)")
	image := flag.String("image", "", "the job's image (default localhost/kiln/golang:<the host's go version>, from scripts/images.sh golang)")
	only := flag.String("only", "", "run only 'builds' or 'throughput'")
	skipHost := flag.Bool("skip-host", false, "builds: skip (d), the host build (and the ratios against it)")
	rounds := flag.Int("rounds", 3, "how many times each warm build (an incremental rebuild each) and each throughput figure is measured; medians are reported")
	size := flag.Int64("size", 1<<30, "throughput: bytes of data to save and restore")
	keep := flag.Bool("keep", false, "keep the temporary directory")
	verbose := flag.Bool("v", false, "Kiln's own log (server, agents) to stderr")
	project := flag.String("project", defaultProject, "builds: the module@version to build, from the Go module proxy")
	mainPkg := flag.String("main", defaultMain, "builds: the package to build, relative to the module's root")
	leaf := flag.String("leaf", defaultLeaf, "builds: the file of the one-line change, relative to the module's root")
	buildCmd := flag.String("build-cmd", "", "builds: the job's command instead of go build, e.g. 'go version' to check the plumbing in a minute (the host build stays go build)")
	flag.Parse()
	if *only != "" && *only != "builds" && *only != "throughput" {
		fmt.Fprintln(os.Stderr, "cachebench: -only is 'builds' or 'throughput'")
		os.Exit(2)
	}
	if *rounds < 1 || *size < parts {
		fmt.Fprintln(os.Stderr, "cachebench: -rounds must be at least 1 and -size at least 4")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *buildCmd == "" {
		*buildCmd = "go build -v -o /tmp/out " + *mainPkg
	}
	proxy, err := moduleProxy()
	if err != nil && *only != "throughput" {
		fmt.Fprintln(os.Stderr, "cachebench:", err)
		os.Exit(2)
	}
	bc := buildsConfig{engine: *engine, image: *image, rounds: *rounds, skipHost: *skipHost, buildCmd: *buildCmd,
		project: *project, goProxy: proxy, mainPkg: *mainPkg, leaf: *leaf}
	if err := runBench(ctx, bc, *only, *size, *keep, *verbose); err != nil {
		fmt.Fprintln(os.Stderr, "cachebench:", err)
		os.Exit(1)
	}
}

func runBench(ctx context.Context, cfg buildsConfig, only string, size int64, keep, verbose bool) (err error) {
	engine, image, rounds := cfg.engine, cfg.image, cfg.rounds
	start := time.Now()
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "[%6.1fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}
	src, err := sourceRepo()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "cachebench")
	if err != nil {
		return err
	}
	defer func() {
		if keep {
			logf("kept %s", dir)
			return
		}
		if cerr := cleanup(dir); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()
	klog := discardLogger()
	if verbose {
		klog = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}

	fmt.Printf("cachebench: %d CPUs, %s memory, %s; load average at start %s\n", ncpu(), memTotal(), engineVersion(engine), loadAvg())
	if only != "throughput" {
		if image == "" {
			out, err := exec.Command("go", "env", "GOVERSION").Output()
			if err != nil {
				return fmt.Errorf("go env GOVERSION: %w", err)
			}
			image = "localhost/kiln/golang:" + strings.TrimPrefix(strings.TrimSpace(string(out)), "go")
		}
		if err := imageExists(engine, image); err != nil {
			return err
		}
		cfg.image, cfg.dir, cfg.log = image, filepath.Join(dir, "builds"), klog
		res, err := builds(ctx, cfg, logf)
		if err != nil {
			return err
		}
		printBuilds(res, cfg)
		fmt.Printf("load average after the builds: %s\n", loadAvg())
	}
	if only != "builds" {
		res, err := throughput(ctx, tpConfig{dir: filepath.Join(dir, "throughput"), size: size, src: src, rounds: rounds}, logf)
		if err != nil {
			return err
		}
		printThroughput(res)
		fmt.Printf("load average after the throughput test: %s\n", loadAvg())
	}
	logf("done in %s", time.Since(start).Round(time.Second))
	return nil
}

// cleanup unmounts what sticky volumes may have left mounted (a run cut
// short) and removes the directory.
func cleanup(dir string) error {
	vols, _ := filepath.Glob(filepath.Join(dir, "builds", "kiln", "agents", "*", "volumes"))
	for _, v := range vols {
		if vs, err := sticky.New(sticky.Config{Dir: v, Logger: discardLogger()}); err == nil {
			_ = vs.Recover(context.Background())
		}
	}
	if err := os.RemoveAll(dir); err == nil {
		return nil
	}
	// The Go module cache is read-only; make it writable and try again.
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(p, 0o755)
		}
		return nil
	})
	return os.RemoveAll(dir)
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func ncpu() int { return runtime.NumCPU() }

func memTotal() string {
	b, _ := os.ReadFile("/proc/meminfo")
	for _, l := range strings.Split(string(b), "\n") {
		var kb int64
		if _, err := fmt.Sscanf(l, "MemTotal: %d kB", &kb); err == nil {
			return fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
		}
	}
	return "? GiB"
}

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// engineClient is an HTTP client for the engine's unix socket.
func engineClient(engine string) (*http.Client, error) {
	u, err := url.Parse(engine)
	if err != nil || u.Scheme != "unix" {
		return nil, fmt.Errorf("engine %q: want unix:///path/to.sock", engine)
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", u.Path)
		},
	}}, nil
}

func engineVersion(engine string) string {
	c, err := engineClient(engine)
	if err != nil {
		return err.Error()
	}
	resp, err := c.Get("http://engine/version")
	if err != nil {
		return fmt.Sprintf("engine %s unreachable: %v", engine, err)
	}
	defer resp.Body.Close()
	var v struct {
		Version    string
		Components []struct{ Name string }
	}
	_ = json.NewDecoder(resp.Body).Decode(&v)
	name := "Docker"
	for _, c := range v.Components {
		if strings.Contains(c.Name, "Podman") {
			name = "Podman"
		}
	}
	return fmt.Sprintf("%s %s at %s", name, v.Version, engine)
}

func imageExists(engine, image string) error {
	c, err := engineClient(engine)
	if err != nil {
		return err
	}
	resp, err := c.Get("http://engine/images/" + image + "/json")
	if err != nil {
		return fmt.Errorf("engine %s: %w (start it with scripts/engines.sh)", engine, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("image %s is not on %s (HTTP %d): build it with scripts/images.sh golang (--podman for Podman)", image, engine, resp.StatusCode)
	}
	return nil
}
