package pipeline

import "github.com/distribution/reference"

// JobSpec is one compiled job of a pipeline: everything an agent needs to run
// it, and nothing it has to parse. The server compiles .kiln.yml into JobSpecs
// and hands them to agents as JSON; agents never read YAML (as in Woodpecker).
type JobSpec struct {
	// Name is the job's key under `jobs:` (or "build" for the top-level
	// `steps:` shorthand). Unique within a pipeline.
	Name  string `json:"name"`
	Image string `json:"image"`
	// Pull is when the agent pulls Image: PullIfNotPresent (the default,
	// also for "" from a server older than the field), PullAlways or
	// PullNever.
	Pull  string            `json:"pull,omitempty"`
	Env   map[string]string `json:"env,omitempty"`
	Steps []StepSpec        `json:"steps"`
	// TimeoutSeconds bounds the whole job, from sandbox start to the end of
	// its last step. Always > 0 after Compile (DefaultJobTimeout when unset).
	TimeoutSeconds int `json:"timeout_seconds"`
	// RunsOn are the agent labels the job needs; an agent must carry all.
	RunsOn    []string  `json:"runs_on,omitempty"`
	Resources Resources `json:"resources"`
	// Caches are mounted into the sandbox before the first step.
	Caches []CacheSpec `json:"caches,omitempty"`
	// Artifacts are the workspace files uploaded after the steps (nil:
	// none).
	Artifacts *ArtifactSpec `json:"artifacts,omitempty"`
}

// CacheSpec is one `cache:` entry. Exactly one of two kinds:
//   - sticky (Path set): a per-project volume on the agent's host, mounted
//     at Path as a copy-on-write view; a successful job's writes are kept;
//   - keyed (Key and Paths set): restored from Kiln's cache service by Key,
//     then RestoreKeys as prefixes, and saved under Key after a successful
//     job unless it exists. Key may hold ${{ … }} expressions the agent
//     expands (hashFiles, branch, os, arch).
type CacheSpec struct {
	Path        string   `json:"path,omitempty"`
	Key         string   `json:"key,omitempty"`
	RestoreKeys []string `json:"restore_keys,omitempty"`
	Paths       []string `json:"paths,omitempty"`
}

// Sticky reports whether c is a sticky volume (else it is keyed).
func (c CacheSpec) Sticky() bool { return c.Key == "" }

// StepSpec is one shell step, run as `/bin/sh -e -c Run` in the job's sandbox.
type StepSpec struct {
	Name string `json:"name"`
	Run  string `json:"run"`
}

// Resources are the sandbox limits of a job. Zero means the agent's default.
type Resources struct {
	CPUs        float64 `json:"cpus,omitempty"`
	MemoryBytes int64   `json:"memory_bytes,omitempty"`
	Pids        int64   `json:"pids,omitempty"`
	// DiskBytes is the job's disk quota: its workspace and /tmp together.
	DiskBytes int64 `json:"disk_bytes,omitempty"`
}

// Pull policies of a job's image (`pull:`).
const (
	PullIfNotPresent = "if-not-present" // pull only when the host lacks the image
	PullAlways       = "always"         // pull every time (a moving tag)
	PullNever        = "never"          // use the host's image or fail
)

// ImageHost is the registry host of an image reference, as its name
// spells it ("registry.example.com", "host:5000"): the key of a
// project's registry credentials. "" for a reference that does not
// parse. A name without a host is the engines' default registry's.
func ImageHost(image string) string {
	named, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		return ""
	}
	return reference.Domain(named)
}
