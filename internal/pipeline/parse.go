// Package pipeline is the .kiln.yml format: it parses a pipeline file,
// validates it with errors that carry file:line:col and a field path, and
// compiles it into the JobSpecs agents run. The format is documented for
// users in docs/pipeline.md; keep the two in step.
//
// The package walks go.yaml.in/yaml/v3's node tree rather than decoding into
// structs: only the tree knows where each value was written, and only a
// walk can report every problem in one pass instead of the first.
package pipeline

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"time"

	yaml "go.yaml.in/yaml/v3"
)

const (
	// DefaultJobTimeout bounds a job when neither the job nor the top level
	// sets timeout.
	DefaultJobTimeout = 60 * time.Minute
	// MaxJobTimeout is the largest timeout a file may set.
	MaxJobTimeout = 24 * time.Hour
	// MaxFileSize is the largest pipeline file Parse reads; a larger one is
	// rejected before any YAML is parsed.
	MaxFileSize = 1 << 20
	// DefaultMaxJobs is the most jobs a file may define unless the server
	// says otherwise (Limits.MaxJobs, `kiln server -max-jobs-per-build`).
	// Every job is a row of the queue, and a build's status is derived
	// from all its jobs whenever one of them changes, so a build's cost
	// grows with the square of its jobs; real pipelines have tens of jobs
	// (GitHub Actions caps one matrix at 256).
	DefaultMaxJobs = 1000
)

// Limits are the bounds a server puts on a file beyond its format.
type Limits struct {
	// MaxJobs is the most jobs the file may define (0: DefaultMaxJobs).
	MaxJobs int
}

// defaultJobName is the name of the single job of a file that uses the
// top-level `steps:` shorthand instead of `jobs:`.
const defaultJobName = "build"

// Pipeline is a parsed and validated pipeline file, before defaults are
// applied: a zero field means "not set here". Compile applies the defaults.
type Pipeline struct {
	// Settings are the top-level defaults every job inherits.
	Settings
	// Jobs are in file order; there is at least one.
	Jobs []Job
}

// Job is one job as written in the file.
type Job struct {
	// Name is the job's key under `jobs:`, or "build" for a file that
	// uses the top-level `steps:` shorthand.
	Name string
	// Settings are the job's own; a zero field inherits the pipeline's.
	Settings
	// Steps are in file order, at least one, each with a Name (defaulted
	// from its run script when the file gives none) and a non-empty Run.
	Steps []StepSpec
}

// Settings are what the top level and a job can both set. A zero value is
// "not set": a job's set fields override the top level's, field by field
// for Resources, and Env is merged with the job's variables winning.
type Settings struct {
	Image string
	// Pull is the image's pull policy (PullIfNotPresent, PullAlways,
	// PullNever); "" when not set.
	Pull    string
	Env     map[string]string
	Timeout time.Duration
	// RunsOn is nil when not set; a file cannot set an empty list.
	RunsOn    []string
	Resources Resources
	// Caches is nil when not set; a job's list replaces the top level's.
	Caches []CacheSpec
	// Artifacts is nil when not set; a job's replaces the top level's.
	Artifacts *ArtifactSpec

	// resourcesAt is where each set field of Resources was written, for
	// CheckLimits' messages; keyed by the field's name in the file.
	resourcesAt map[string]location
}

// location is where a value was written and the dotted path that names it.
type location struct {
	line, col int
	field     string
}

// Parse parses and validates a pipeline file. filename is used only in
// messages. On any problem it returns a nil *Pipeline and an Errors listing
// every problem found, sorted by position.
func Parse(filename string, data []byte) (*Pipeline, error) {
	return ParseLimits(filename, data, Limits{})
}

// ParseLimits is Parse within the server's limits: a file past one gets a
// located error too (at the first job past MaxJobs).
func ParseLimits(filename string, data []byte, l Limits) (*Pipeline, error) {
	if l.MaxJobs <= 0 {
		l.MaxJobs = DefaultMaxJobs
	}
	c := &checker{file: filename, limits: l}
	var p *Pipeline
	if root := c.load(data); root != nil && c.checkGraph(root) {
		p = c.pipeline(root)
	}
	if len(c.errs) > 0 {
		return nil, c.errs.normalize()
	}
	return p, nil
}

// checker collects the problems of one file.
type checker struct {
	file   string
	limits Limits
	errs   Errors
}

// errorAt records a problem at a position.
func (c *checker) errorAt(line, col int, field, msg string) {
	c.errs = append(c.errs, &Error{File: c.file, Line: line, Col: col, Field: field, Msg: msg})
}

// errorf records a problem at a node.
func (c *checker) errorf(n *yaml.Node, field, format string, args ...any) {
	line, col := 1, 1
	if n != nil && n.Line > 0 {
		line, col = n.Line, n.Column
	}
	c.errorAt(line, col, field, fmt.Sprintf(format, args...))
}

var utf8BOM = []byte("\xef\xbb\xbf")

// load reads the file's single YAML document and returns its root node, or
// nil when there is nothing to validate (the problem is recorded).
func (c *checker) load(data []byte) *yaml.Node {
	if len(data) > MaxFileSize {
		c.errorAt(1, 1, "", fmt.Sprintf("file is %d bytes; the limit is %d (1 MiB)", len(data), MaxFileSize))
		return nil
	}
	// yaml skips a BOM itself, but the positions this package computes from
	// the bytes (syntaxError) must agree with yaml's, so drop it here.
	data = bytes.TrimPrefix(data, utf8BOM)

	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			c.errorAt(1, 1, "", emptyFileMsg)
			return nil
		}
		c.syntaxError(err, data)
		return nil
	}
	var root *yaml.Node
	if len(doc.Content) == 1 {
		root = doc.Content[0]
	}
	if root == nil || isEmptyNull(root) {
		c.errorAt(1, 1, "", emptyFileMsg)
		root = nil
	}

	// A second document is an error, not something to ignore: a pipeline
	// split by "---" would otherwise run half of what its author wrote.
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case err == nil:
		c.errorf(&extra, "", `found a second YAML document; a pipeline file holds one document (remove the "---" separator)`)
	case !errors.Is(err, io.EOF):
		c.syntaxError(err, data)
	}
	return root
}

const emptyFileMsg = `file is empty; a pipeline needs "jobs" (or "steps" for a single job)`

func isEmptyNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null" && n.Value == ""
}
