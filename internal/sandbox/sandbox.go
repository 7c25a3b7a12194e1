// Package sandbox defines the runtime interface through which an agent runs a
// job in a fresh, throwaway sandbox. Implementations live in sub-packages
// (docker: the Docker Engine API, served by Docker or Podman).
package sandbox

import (
	"context"
	"errors"
	"io"
	"time"
)

// Error kinds. Implementations wrap them with %w so the agent can decide:
// ErrImageNotFound and ErrEngineUnavailable are infrastructure faults (the
// job ends in `error` and may be retried); a non-zero exit is the user's.
var (
	ErrImageNotFound     = errors.New("image not found")
	ErrEngineUnavailable = errors.New("container engine unavailable")
	ErrNotFound          = errors.New("sandbox not found")
	// ErrGone: the sandbox stopped or was removed before or while a
	// command ran in it. An infrastructure failure (the job is retried),
	// never the step's own exit code.
	ErrGone = errors.New("sandbox is gone")

	// Pull failures (Puller). ErrRegistryAuth and ErrImageUnknown are the
	// job's: its file names the image and the project holds the
	// credentials, so a retry would fail the same way. ErrRegistryUnavailable
	// (unreachable, a 5xx, a certificate the engine does not trust) is the
	// infrastructure's: retried.
	ErrRegistryAuth        = errors.New("the registry refused the credentials")
	ErrImageUnknown        = errors.New("the registry has no such image or tag")
	ErrRegistryUnavailable = errors.New("registry unavailable")
)

// Pull policies: when Puller.Pull asks the registry (the pipeline's
// `pull:` values).
const (
	PullIfNotPresent = "if-not-present" // only when the host lacks the image; the default ("")
	PullAlways       = "always"
	PullNever        = "never" // ErrImageNotFound when the host lacks it
)

// Puller is a Runtime that can pull a job's image from its registry
// before Create (which never pulls). Concurrent Pulls of one image with
// the same credentials share one transfer.
type Puller interface {
	Pull(ctx context.Context, req PullRequest) (PullResult, error)
}

// PullRequest is one image to make present on the host.
type PullRequest struct {
	Image  string
	Policy string // PullIfNotPresent ("" too), PullAlways or PullNever
	// Auth is nil for an anonymous pull. It goes to the engine in the
	// pull request's header only: never into a container, a label, a
	// process argument, a log line or an error.
	Auth *RegistryAuth
}

// RegistryAuth is a registry's basic-auth credentials.
type RegistryAuth struct {
	Username, Password string
}

// PullResult is what a Pull did.
type PullResult struct {
	// Pulled is false when the host's image was used without asking the
	// registry (PullIfNotPresent with the image present, PullNever).
	Pulled bool
	// Shared: the transfer was another caller's, joined.
	Shared bool
	// Bytes is what the engine reported downloading (compressed layers;
	// 0 when every layer was on the host already; -1 when layers were
	// fetched and the engine did not say how much: Podman).
	Bytes int64
	// Size is the image's size on the host (uncompressed).
	Size     int64
	Duration time.Duration
	// Digest is the image's manifest digest in its registry
	// ("sha256:…"); "" for an image that never came from one (imported).
	Digest string
}

// LayerSizer is a Runtime that can tell how much a sandbox wrote to its own
// filesystem (the container's writable layer: everything outside its
// mounts). The agent watches it against the job's disk quota, because the
// engines cannot bound it on every storage driver (docs/security.md,
// "Sandbox disk").
type LayerSizer interface {
	LayerSize(ctx context.Context, id string) (int64, error)
}

// Labels every Kiln sandbox carries, so a restarted agent can find what it
// left behind.
const (
	LabelManaged = "dev.kiln.managed" // "true"
	LabelAgent   = "dev.kiln.agent"   // agent id
	LabelJob     = "dev.kiln.job"     // job id
	LabelAttempt = "dev.kiln.attempt" // attempt number
)

// Spec describes a sandbox to create.
//
// Everything in a Spec, Env included, is shown by the engine to anyone who
// can inspect the container (`docker inspect`: Config.Env, Labels, Cmd)
// for the sandbox's whole life: never put a secret in it. Give secrets
// with each ExecSpec.Env, which neither engine shows (an exec's inspect
// has its command, not its environment).
type Spec struct {
	Name    string            // engine-visible name; unique per job attempt
	Image   string            // must already exist locally (Create never pulls; see Puller)
	Labels  map[string]string // at least LabelManaged and LabelAgent
	Env     []string          // KEY=VALUE, visible to every Exec
	WorkDir string
	Mounts  []Mount
	// Limits. Zero means "no limit set by Kiln" for that resource.
	CPUs        float64
	MemoryBytes int64
	PidsLimit   int64
}

// Mount binds a host directory into the sandbox.
type Mount struct {
	Source   string // host path
	Target   string // path inside the sandbox
	ReadOnly bool
}

// ExecSpec is one command run inside a started sandbox.
type ExecSpec struct {
	Cmd     []string
	Env     []string // added to Spec.Env; the place for secrets (see Spec)
	WorkDir string
	// Output receives stdout, and stderr too unless Stderr is set,
	// interleaved as produced. Writes (to both) are serialized by the
	// implementation.
	Output io.Writer
	// Stderr, if set, receives stderr apart from stdout, so the two
	// streams' bytes never mix (a line of one is never cut by the other).
	Stderr io.Writer
}

// Info describes an existing sandbox found by List.
type Info struct {
	ID     string
	Name   string
	Labels map[string]string
}

// Runtime creates, runs commands in, and destroys sandboxes.
//
// Call order for one job: Create, then any number of Exec (one at a time),
// then Destroy. Destroy must always be called, also after a failed Create
// (with Spec.Name: there is no id) or a canceled context, and is
// idempotent: destroying a sandbox that is gone returns nil, and two
// Destroys of one sandbox racing each other both succeed. Wherever an id is
// taken, the sandbox's name works too. A Runtime is safe for concurrent use
// by many jobs.
//
// The conformance suite every implementation passes is
// internal/sandbox/sandboxtest.
type Runtime interface {
	// Ping checks the engine answers; wraps ErrEngineUnavailable when not.
	Ping(ctx context.Context) error
	// Create creates and starts a sandbox whose main process idles until
	// Destroy, with its own network, the limits in spec, no privileges and
	// no host socket. It returns the sandbox id.
	Create(ctx context.Context, spec Spec) (id string, err error)
	// Exec runs cmd and returns its exit code. Canceling ctx stops waiting
	// and returns ctx.Err(); the caller then Destroys the sandbox. When the
	// sandbox is not running (before or after the command), the error
	// wraps ErrGone, whatever exit code the engine made up.
	Exec(ctx context.Context, id string, spec ExecSpec) (exitCode int, err error)
	// Destroy kills and removes the sandbox and everything created for it
	// (its network). Idempotent.
	Destroy(ctx context.Context, id string) error
	// List returns the sandboxes carrying all the given labels.
	List(ctx context.Context, labels map[string]string) ([]Info, error)
}
