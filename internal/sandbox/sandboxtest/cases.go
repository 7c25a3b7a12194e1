package sandboxtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/kilnci/kiln/internal/sandbox"
	"github.com/kilnci/kiln/internal/sandbox/diskquota"
)

func testCreateExecEcho(t *testing.T, h *harness) {
	id := h.create(t, h.spec("echo"))
	code, out := h.exec(t, id, sandbox.ExecSpec{Cmd: []string{"echo", "hello", "sandbox"}})
	if code != 0 || out != "hello sandbox\n" {
		t.Fatalf("echo: exit %d, output %q; want 0, %q", code, out, "hello sandbox\n")
	}
	// A second Exec in the same sandbox works too.
	if out := h.sh(t, id, "echo again"); out != "again\n" {
		t.Fatalf("second exec output %q", out)
	}
}

func testExitCodes(t *testing.T, h *harness) {
	id := h.create(t, h.spec("exit"))
	for _, want := range []int{0, 1, 42} {
		code, out := h.exec(t, id, sandbox.ExecSpec{Cmd: []string{"/bin/sh", "-c", fmt.Sprintf("exit %d", want)}})
		if code != want {
			t.Errorf("exit %d: got exit code %d (output %q)", want, code, out)
		}
	}
	// A command that does not exist is the user's failure: a non-zero
	// exit code, not an infrastructure error.
	var out syncBuffer
	code, err := h.rt.Exec(h.ctx, id, sandbox.ExecSpec{Cmd: []string{"/no/such/command"}, Output: &out})
	if err != nil {
		t.Fatalf("missing command: error %v, want a non-zero exit code", err)
	}
	if code == 0 {
		t.Fatalf("missing command: exit 0 (output %q)", out.String())
	}
}

func testStdoutAndStderr(t *testing.T, h *harness) {
	id := h.create(t, h.spec("streams"))
	out := h.sh(t, id, "echo to-stdout; echo to-stderr >&2; echo more-stdout")
	for _, want := range []string{"to-stdout", "to-stderr", "more-stdout"} {
		if !slices.Contains(lines(out), want) {
			t.Errorf("output %q lacks line %q", out, want)
		}
	}
	// A long stream arrives whole and in order, on either stream. (Across
	// the two streams the engines keep no order: each is a pipe of its
	// own, read separately.)
	const n = 20000
	for _, redirect := range []string{"", ">&2"} {
		ls := lines(h.sh(t, id, fmt.Sprintf("seq 1 %d %s", n, redirect)))
		if len(ls) != n {
			t.Fatalf("seq %s: got %d lines, want %d", redirect, len(ls), n)
		}
		for i, l := range ls {
			if l != strconv.Itoa(i+1) {
				t.Fatalf("seq %s: line %d is %q, want %d", redirect, i, l, i+1)
			}
		}
	}
}

func testEnv(t *testing.T, h *harness) {
	spec := h.spec("env")
	spec.Env = []string{"A=from spec", "B=from-spec"}
	id := h.create(t, spec)
	code, out := h.exec(t, id, sandbox.ExecSpec{
		Cmd: []string{"/bin/sh", "-c", `echo "$A|$B|$C"`},
		Env: []string{"B=from-exec", "C=from-exec"},
	})
	if want := "from spec|from-exec|from-exec\n"; code != 0 || out != want {
		t.Fatalf("env: exit %d, output %q; want %q", code, out, want)
	}
	// Exec env does not leak into the next Exec.
	if out := h.sh(t, id, `echo "$A|$B|$C"`); out != "from spec|from-spec|\n" {
		t.Fatalf("env of a later exec: %q", out)
	}
}

func testWorkDir(t *testing.T, h *harness) {
	spec := h.spec("workdir")
	spec.WorkDir = "/workspace/project" // absent from the image: created
	id := h.create(t, spec)
	if out := h.sh(t, id, "pwd"); out != "/workspace/project\n" {
		t.Fatalf("default workdir: pwd = %q", out)
	}
	code, out := h.exec(t, id, sandbox.ExecSpec{Cmd: []string{"pwd"}, WorkDir: "/tmp"})
	if code != 0 || out != "/tmp\n" {
		t.Fatalf("exec workdir: exit %d, pwd = %q", code, out)
	}
}

func testBindMount(t *testing.T, h *harness) {
	rw, ro := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(rw, "in.txt"), []byte("from host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ro, "ro.txt"), []byte("read only\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	spec := h.spec("mount")
	spec.Mounts = []sandbox.Mount{
		{Source: rw, Target: "/mnt/rw"},
		{Source: ro, Target: "/mnt/ro", ReadOnly: true},
	}
	id := h.create(t, spec)
	if out := h.sh(t, id, "cat /mnt/rw/in.txt; echo from sandbox > /mnt/rw/out.txt; cat /mnt/ro/ro.txt"); out != "from host\nread only\n" {
		t.Fatalf("mount contents: %q", out)
	}
	got, err := os.ReadFile(filepath.Join(rw, "out.txt"))
	if err != nil || string(got) != "from sandbox\n" {
		t.Fatalf("file written in the sandbox: %q, %v", got, err)
	}
	code, out := h.exec(t, id, sandbox.ExecSpec{Cmd: []string{"/bin/sh", "-c", "echo x > /mnt/ro/new.txt"}})
	if code == 0 {
		t.Fatalf("write to a read-only mount succeeded (output %q)", out)
	}
	if _, err := os.Stat(filepath.Join(ro, "new.txt")); err == nil {
		t.Fatal("a file appeared in the read-only mount")
	}
}

func testLimits(t *testing.T, h *harness) {
	const mem, pids = 96 << 20, 64
	spec := h.spec("limits")
	spec.MemoryBytes = mem
	spec.PidsLimit = pids
	spec.CPUs = 0.5
	id := h.create(t, spec)

	// cgroup v2 shows the sandbox's own limits at the root of
	// /sys/fs/cgroup; v1 in each controller's directory.
	out := h.sh(t, id, `
		cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes
		cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max
		cat /sys/fs/cgroup/cpu.max 2>/dev/null || echo "$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us) $(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)"`)
	ls := lines(out)
	if len(ls) != 3 {
		t.Fatalf("cgroup limits: %q", out)
	}
	if ls[0] != strconv.Itoa(mem) {
		t.Errorf("memory limit inside the sandbox is %q, want %d", ls[0], mem)
	}
	if ls[1] != strconv.Itoa(pids) {
		t.Errorf("pids limit inside the sandbox is %q, want %d", ls[1], pids)
	}
	var quota, period int
	if _, err := fmt.Sscanf(ls[2], "%d %d", &quota, &period); err != nil || period == 0 || quota*2 != period {
		t.Errorf("cpu quota inside the sandbox is %q, want half a CPU", ls[2])
	}
}

// testDiskQuota mounts two directories of one quota disk (as the agent
// does: the workspace and /tmp) and writes past the quota: the write fails
// in the sandbox with "No space left on device", both count against the
// one quota, and the host's disk is not touched beyond it.
func testDiskQuota(t *testing.T, h *harness) {
	if os.Geteuid() != 0 {
		t.Skip("quota disks are loop mounts: they need root")
	}
	const quota = 8 << 20
	root := t.TempDir()
	d, err := diskquota.Make(h.ctx, filepath.Join(root, "ws"), filepath.Join(root, "ws.img"), quota)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Remove(context.Background()); err != nil {
			t.Errorf("remove the disk: %v", err)
		}
	})
	src, tmp := filepath.Join(d.Dir, "src"), filepath.Join(d.Dir, "tmp")
	for _, dir := range []string{src, tmp} {
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(tmp, 0o1777); err != nil {
		t.Fatal(err)
	}
	spec := h.spec("disk")
	spec.Mounts = []sandbox.Mount{{Source: src, Target: "/workspace"}, {Source: tmp, Target: "/tmp"}}
	id := h.create(t, spec)
	h.sh(t, id, "dd if=/dev/zero of=/tmp/a bs=1M count=4 2>/dev/null")
	code, out := h.exec(t, id, sandbox.ExecSpec{Cmd: []string{"/bin/sh", "-c", "dd if=/dev/zero of=/workspace/b bs=1M count=16"}})
	if code == 0 || !strings.Contains(out, "No space left on device") {
		t.Fatalf("writing 4 MiB to /tmp and 16 to /workspace with a quota of 8: exit %d, output %q", code, out)
	}
	if !d.Full() {
		t.Errorf("the disk is not full (used %d of %d)", d.Used(), quota)
	}
	if used := d.Used(); used > quota {
		t.Errorf("used %d bytes, more than the quota %d", used, quota)
	}
	// Room again once the job deletes what it wrote.
	h.sh(t, id, "rm /workspace/b && dd if=/dev/zero of=/workspace/c bs=1M count=2 2>/dev/null")
}

// testLayerSize: a runtime that reports its sandboxes' writable layer
// counts what a command wrote outside the mounts.
func testLayerSize(t *testing.T, h *harness) {
	ls, ok := h.rt.(sandbox.LayerSizer)
	if !ok {
		t.Skip("the runtime does not report writable layers")
	}
	id := h.create(t, h.spec("layer"))
	before, err := ls.LayerSize(h.ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	h.sh(t, id, "dd if=/dev/zero of=/root/big bs=1M count=6 2>/dev/null")
	after, err := ls.LayerSize(h.ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if after-before < 6<<20 {
		t.Fatalf("writable layer grew from %d to %d bytes after writing 6 MiB to /root", before, after)
	}
	if _, err := ls.LayerSize(h.ctx, "kiln-no-such-sandbox-"+randomID()); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("LayerSize of a missing sandbox: %v, want ErrNotFound", err)
	}
}

func testPrivileges(t *testing.T, h *harness) {
	id := h.create(t, h.spec("privileges"))
	var capEff uint64
	var noNewPrivs string
	for _, l := range lines(h.sh(t, id, "cat /proc/self/status")) {
		f := strings.Fields(l)
		switch {
		case len(f) < 2:
		case f[0] == "CapEff:":
			capEff, _ = strconv.ParseUint(f[1], 16, 64)
		case f[0] == "NoNewPrivs:":
			noNewPrivs = f[1]
		}
	}
	if noNewPrivs != "1" {
		t.Errorf("NoNewPrivs is %q, want 1", noNewPrivs)
	}
	const capNetRaw, capSysAdmin = 13, 21
	for _, c := range []struct {
		bit  uint
		name string
	}{{capNetRaw, "CAP_NET_RAW"}, {capSysAdmin, "CAP_SYS_ADMIN"}} {
		if capEff&(1<<c.bit) != 0 {
			t.Errorf("sandbox has %s (CapEff %x)", c.name, capEff)
		}
	}
	// Without NET_RAW, ping works through ICMP datagram sockets, for any
	// user. (busybox 1.35's ping needs a raw socket: iputils' does not.)
	if out := strings.Fields(h.sh(t, id, "cat /proc/sys/net/ipv4/ping_group_range")); !slices.Equal(out, []string{"0", "2147483647"}) {
		t.Errorf("net.ipv4.ping_group_range is %q, want every group", out)
	}
}

func testOwnNetwork(t *testing.T, h *harness) {
	a := h.create(t, h.spec("net-a"))
	b := h.create(t, h.spec("net-b"))
	route := func(id string) string {
		for _, l := range lines(h.sh(t, id, "ip -4 route")) {
			if f := strings.Fields(l); len(f) >= 3 && f[0] == "default" && f[1] == "via" {
				return f[2]
			}
		}
		t.Fatalf("sandbox %s has no default route", id)
		return ""
	}
	addr := func(id string) string {
		for _, l := range lines(h.sh(t, id, "ip -4 -o addr show")) {
			if f := strings.Fields(l); len(f) >= 4 && f[1] != "lo" {
				ip, _, _ := strings.Cut(f[3], "/")
				return ip
			}
		}
		t.Fatalf("sandbox %s has no IPv4 address", id)
		return ""
	}
	ga, gb := route(a), route(b)
	ipA, ipB := addr(a), addr(b)
	// Two sandboxes on one bridge have one gateway and two addresses. Two
	// user-mode stacks (Podman's slirp4netns) may both be 10.0.2.100 via
	// 10.0.2.2, each alone in its own namespace.
	if ga == gb && ipA != ipB {
		t.Fatalf("two sandboxes share a network: both route via %s (%s, %s)", ga, ipA, ipB)
	}
	if net.ParseIP(ipB) == nil {
		t.Fatalf("no IPv4 address on sandbox B")
	}

	// B serves on a port; B reaches it, A does not. (A blocked connection
	// runs out nc's 3s connect timeout; nothing is timed here.)
	h.sh(t, b, "(while :; do echo reached | nc -l -p 8080; done) </dev/null >/dev/null 2>&1 &")
	h.sh(t, b, fmt.Sprintf(`for i in $(seq 1 100); do
		[ "$(nc -w 3 %s 8080 </dev/null)" = reached ] && exit 0
		sleep 0.1
	done; echo "B cannot reach its own server"; exit 1`, ipB))
	code, out := h.exec(t, a, sandbox.ExecSpec{Cmd: []string{"/bin/sh", "-c", "nc -w 3 " + ipB + " 8080 </dev/null"}})
	if strings.Contains(out, "reached") {
		// Say enough to tell a lost engine firewall rule from a shared
		// network when this ever fails.
		t.Fatalf("sandbox A (%s via %s) reached a server in sandbox B (%s via %s) (exit %d): their networks are not isolated",
			ipA, ga, ipB, gb, code)
	}
}

func testNoEngineSocket(t *testing.T, h *harness) {
	id := h.create(t, h.spec("nosock"))
	h.sh(t, id, `for s in /run/docker.sock /var/run/docker.sock /run/podman/podman.sock \
		/run/kiln-docker.sock /run/kiln-podman.sock /run/containerd/containerd.sock; do
		if [ -e "$s" ]; then echo "engine socket $s inside the sandbox"; exit 1; fi
	done`)

	// Create refuses to mount an engine socket, or a directory holding
	// the engine's own socket, and leaves nothing behind.
	dir := t.TempDir()
	sock := filepath.Join(dir, "docker.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, src := range []string{sock, "/"} {
		spec := h.spec("nosock")
		spec.Mounts = []sandbox.Mount{{Source: src, Target: "/mnt/engine"}}
		id, err := h.rt.Create(h.ctx, spec)
		if err == nil {
			_ = h.rt.Destroy(context.WithoutCancel(h.ctx), id)
			t.Fatalf("Create with %s mounted succeeded", src)
		}
		t.Logf("mount %s refused: %v", src, err)
		if err := h.rt.Destroy(h.ctx, spec.Name); err != nil {
			t.Errorf("Destroy after refused Create: %v", err)
		}
		h.checkNoLeftovers(t, h.ctx, spec.Name)
	}
}

func testImageNotFound(t *testing.T, h *harness) {
	spec := h.spec("noimage")
	spec.Image = "localhost/kiln/no-such-image:" + randomID()
	_, err := h.rt.Create(h.ctx, spec)
	requireErrorIs(t, err, sandbox.ErrImageNotFound, "Create with a missing image")
	if !strings.Contains(err.Error(), spec.Image) {
		t.Errorf("error %q does not name the image %s", err, spec.Image)
	}
	if errors.Is(err, sandbox.ErrEngineUnavailable) {
		t.Errorf("missing image reported as engine unavailable: %v", err)
	}
	if err := h.rt.Destroy(h.ctx, spec.Name); err != nil {
		t.Errorf("Destroy after failed Create: %v", err)
	}
	h.checkNoLeftovers(t, h.ctx, spec.Name)
}

func testNameInUse(t *testing.T, h *harness) {
	spec := h.spec("name-in-use")
	id := h.create(t, spec)
	if _, err := h.rt.Create(h.ctx, spec); err == nil {
		t.Fatal("a second Create with the same name succeeded")
	} else {
		t.Logf("second Create refused: %v", err)
	}
	// The failed Create must not have removed the first sandbox's parts.
	if out := h.sh(t, id, "echo still here; ip -4 route | grep -c default"); out != "still here\n1\n" {
		t.Fatalf("first sandbox after a clashing Create: %q", out)
	}
}

func testDestroyIdempotent(t *testing.T, h *harness) {
	spec := h.spec("destroy")
	id, err := h.rt.Create(h.ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := h.rt.Destroy(h.ctx, id); err != nil {
			t.Fatalf("Destroy #%d: %v", i+1, err)
		}
	}
	h.checkNoLeftovers(t, h.ctx, spec.Name)
	if err := h.rt.Destroy(h.ctx, "kiln-test-never-created-"+randomID()); err != nil {
		t.Fatalf("Destroy of a sandbox that never existed: %v", err)
	}
	infos, err := h.rt.List(h.ctx, map[string]string{sandbox.LabelAgent: h.agent})
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 0 {
		t.Fatalf("List after Destroy: %+v", infos)
	}
	_, err = h.rt.Exec(h.ctx, id, sandbox.ExecSpec{Cmd: []string{"true"}})
	requireErrorIs(t, err, sandbox.ErrNotFound, "Exec in a destroyed sandbox")
}

// testDestroyConcurrent: a lost lease and the normal end of a job may
// destroy the same sandbox at once; both succeed.
func testDestroyConcurrent(t *testing.T, h *harness) {
	spec := h.spec("destroy-concurrent")
	id, err := h.rt.Create(h.ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	const n = 3
	errs := make(chan error, n)
	for i := range n {
		target := id
		if i == n-1 {
			target = spec.Name
		}
		go func() { errs <- h.rt.Destroy(h.ctx, target) }()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Errorf("concurrent Destroy: %v", err)
		}
	}
	h.checkNoLeftovers(t, h.ctx, spec.Name)
}

func testList(t *testing.T, h *harness) {
	sa, sb := h.spec("list-a"), h.spec("list-b")
	a := h.create(t, sa)
	b := h.create(t, sb)

	all, err := h.rt.List(h.ctx, map[string]string{sandbox.LabelManaged: "true", sandbox.LabelAgent: h.agent})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, in := range all {
		ids = append(ids, in.ID)
	}
	slices.Sort(ids)
	want := []string{a, b}
	slices.Sort(want)
	if !slices.Equal(ids, want) {
		t.Fatalf("List by agent: ids %v, want %v", ids, want)
	}

	one, err := h.rt.List(h.ctx, map[string]string{sandbox.LabelAgent: h.agent, sandbox.LabelJob: "list-a"})
	if err != nil {
		t.Fatal(err)
	}
	if len(one) != 1 || one[0].ID != a || one[0].Name != sa.Name ||
		one[0].Labels[sandbox.LabelJob] != "list-a" || one[0].Labels[sandbox.LabelAttempt] != "1" {
		t.Fatalf("List by job: %+v, want id %s name %s with its labels", one, a, sa.Name)
	}

	none, err := h.rt.List(h.ctx, map[string]string{sandbox.LabelAgent: "nobody-" + randomID()})
	if err != nil {
		t.Fatal(err)
	}
	if len(none) != 0 {
		t.Fatalf("List by an unknown agent: %+v", none)
	}
}

func testExecCancel(t *testing.T, h *harness) {
	id := h.create(t, h.spec("cancel"))
	ctx, cancel := context.WithCancel(h.ctx)
	defer cancel()
	started := make(chan struct{})
	out := &signalWriter{first: started}
	done := make(chan error, 1)
	go func() {
		_, err := h.rt.Exec(ctx, id, sandbox.ExecSpec{Cmd: []string{"/bin/sh", "-c", "echo started; exec sleep 3600"}, Output: out})
		done <- err
	}()
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("Exec ended before it was canceled: %v", err)
	}
	cancel()
	requireErrorIs(t, <-done, context.Canceled, "canceled Exec")
}

// A sandbox removed while a step runs in it (the engine restarted, an
// operator removed it, the agent's host is going down) is an
// infrastructure failure, not the step's exit code: Exec reports
// ErrGone, and so does an Exec into a sandbox already gone.
func testSandboxGone(t *testing.T, h *harness) {
	id := h.create(t, h.spec("gone"))
	started := make(chan struct{})
	out := &signalWriter{first: started}
	done := make(chan error, 1)
	go func() {
		code, err := h.rt.Exec(h.ctx, id, sandbox.ExecSpec{Cmd: []string{"/bin/sh", "-c", "echo started; exec sleep 3600"}, Output: out})
		if err == nil {
			err = fmt.Errorf("exit code %d, no error", code)
		}
		done <- err
	}()
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("Exec ended before the sandbox was removed: %v", err)
	}
	if err := h.rt.Destroy(h.ctx, id); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	requireErrorIs(t, <-done, sandbox.ErrGone, "Exec in a sandbox removed under it")
	_, err := h.rt.Exec(h.ctx, id, sandbox.ExecSpec{Cmd: []string{"true"}})
	requireErrorIs(t, err, sandbox.ErrGone, "Exec in a sandbox already removed")
}

// signalWriter closes first on its first write.
type signalWriter struct {
	once  sync.Once
	first chan struct{}
}

func (w *signalWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { close(w.first) })
	return len(p), nil
}

func testConcurrent(t *testing.T, h *harness) {
	const n = 4
	errs := make(chan error, n)
	var names []string
	for i := range n {
		spec := h.spec(fmt.Sprintf("concurrent-%d", i))
		names = append(names, spec.Name)
		go func() { errs <- roundTrip(h, spec) }()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	h.checkNoLeftoversOfAgent(t)
	for _, name := range names {
		h.checkNoLeftovers(t, h.ctx, name)
	}
}

// roundTrip creates a sandbox, runs a command that prints its name, and
// destroys it.
func roundTrip(h *harness, spec sandbox.Spec) (err error) {
	id, err := h.rt.Create(h.ctx, spec)
	defer func() {
		if derr := h.rt.Destroy(context.WithoutCancel(h.ctx), spec.Name); derr != nil && err == nil {
			err = derr
		}
		if id != "" {
			if derr := h.rt.Destroy(context.WithoutCancel(h.ctx), id); derr != nil && err == nil {
				err = derr
			}
		}
	}()
	if err != nil {
		return fmt.Errorf("Create(%s): %w", spec.Name, err)
	}
	var out syncBuffer
	code, err := h.rt.Exec(h.ctx, id, sandbox.ExecSpec{Cmd: []string{"echo", spec.Name}, Output: &out})
	if err != nil || code != 0 || out.String() != spec.Name+"\n" {
		return fmt.Errorf("Exec in %s: exit %d, output %q, err %v", spec.Name, code, out.String(), err)
	}
	return nil
}

// checkNoLeftoversOfAgent fails if any sandbox of this subtest is listed.
func (h *harness) checkNoLeftoversOfAgent(t *testing.T) {
	t.Helper()
	infos, err := h.rt.List(h.ctx, map[string]string{sandbox.LabelAgent: h.agent})
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 0 {
		t.Fatalf("sandboxes left: %+v", infos)
	}
}

// testRestartedAgent: a Runtime that did not create the sandboxes (an agent
// restarted after a crash) finds them by label and destroys them whole.
func testRestartedAgent(t *testing.T, h *harness) {
	specs := []sandbox.Spec{h.spec("restart-a"), h.spec("restart-b")}
	for _, s := range specs {
		if _, err := h.rt.Create(h.ctx, s); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = h.rt.Destroy(context.WithoutCancel(h.ctx), s.Name) }) // if the test fails early
	}
	fresh := h.newRuntime(t)
	infos, err := fresh.List(h.ctx, map[string]string{sandbox.LabelManaged: "true", sandbox.LabelAgent: h.agent})
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != len(specs) {
		t.Fatalf("restarted agent lists %+v, want %d sandboxes", infos, len(specs))
	}
	// One by id, one by name: both are what an agent may hold.
	if err := fresh.Destroy(h.ctx, infos[0].ID); err != nil {
		t.Fatalf("Destroy(%s) from a fresh Runtime: %v", infos[0].ID, err)
	}
	if err := fresh.Destroy(h.ctx, infos[1].Name); err != nil {
		t.Fatalf("Destroy(%s) from a fresh Runtime: %v", infos[1].Name, err)
	}
	for _, s := range specs {
		h.checkNoLeftovers(t, h.ctx, s.Name)
	}
	h.checkNoLeftoversOfAgent(t)
}
