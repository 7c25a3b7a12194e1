package pipeline

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/distribution/reference"
	yaml "go.yaml.in/yaml/v3"
)

// The keys each mapping accepts, in the order docs/pipeline.md lists them.
var (
	topKeys       = []string{"image", "pull", "env", "timeout", "runs-on", "resources", "cache", "artifacts", "jobs", "steps"}
	jobKeys       = []string{"image", "pull", "env", "timeout", "runs-on", "resources", "cache", "artifacts", "steps"}
	stepKeys      = []string{"name", "run"}
	resourcesKeys = []string{"cpus", "memory", "pids", "disk"}
)

var (
	jobNamePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
	envNamePattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// maxStepNameLen bounds a step name defaulted from its run script.
const maxStepNameLen = 60

// pipeline walks the document's root.
func (c *checker) pipeline(root *yaml.Node) *Pipeline {
	m := c.mapping(root, "")
	if m == nil {
		return nil
	}
	p := &Pipeline{}
	var jobs, steps *entry
	es := entries(m)
	for _, e := range es {
		switch key := e.key.Value; key {
		case "jobs":
			jobs = &e
		case "steps":
			steps = &e
		default:
			if strings.HasPrefix(key, "x-") {
				continue // an extension key, a place to keep anchors
			}
			c.settings(e, "", &p.Settings, topKeys)
		}
	}
	switch {
	case jobs != nil && steps != nil:
		c.errorf(steps.key, "", `"jobs" and "steps" cannot both be set: use "jobs" for several jobs, or "steps" alone for one job named %q`, defaultJobName)
		c.jobs(jobs.value, hasKey(es, "image"))
		c.steps(steps.value, "steps")
	case jobs != nil:
		p.Jobs = c.jobs(jobs.value, hasKey(es, "image"))
	case steps != nil:
		if !hasKey(es, "image") {
			c.errorf(m, "image", "required")
		}
		p.Jobs = []Job{{Name: defaultJobName, Steps: c.steps(steps.value, "steps")}}
	default:
		c.errorf(m, "", `one of "jobs" or "steps" is required`)
	}
	return p
}

// settings handles a key that the top level and a job share (image, env,
// timeout, runs-on, resources); any other key is reported as unknown, with
// allowed listing the keys of the mapping it is in.
func (c *checker) settings(e entry, parent string, s *Settings, allowed []string) {
	field := join(parent, e.key.Value)
	switch e.key.Value {
	case "image":
		s.Image = c.image(e.value, field)
	case "pull":
		s.Pull = c.oneOf(e.value, field, PullIfNotPresent, PullAlways, PullNever)
	case "env":
		s.Env = c.env(e.value, field)
	case "timeout":
		s.Timeout = c.timeout(e.value, field)
	case "runs-on":
		s.RunsOn = c.labels(e.value, field)
	case "resources":
		s.Resources, s.resourcesAt = c.resources(e.value, field)
	case "cache":
		s.Caches = c.caches(e.value, field)
	case "artifacts":
		s.Artifacts = c.artifacts(e.value, field)
	default:
		c.unknownKey(e.key, parent, allowed)
	}
}

// jobs walks the `jobs:` mapping. hasImage says the top level sets image.
func (c *checker) jobs(n *yaml.Node, hasImage bool) []Job {
	m := c.mapping(n, "jobs")
	if m == nil {
		return nil
	}
	es := entries(m)
	if len(es) == 0 {
		c.errorf(n, "jobs", "at least one job is required")
	}
	if n := c.limits.MaxJobs; len(es) > n {
		// Located at the first job past the limit; the jobs past it are
		// not validated (a file of 10,000 jobs costs no more than one of n).
		e := es[n]
		c.errorf(e.key, "jobs."+e.key.Value, "job %d of %d: a pipeline may define at most %d jobs (the server's -max-jobs-per-build); split the work into fewer, larger jobs", n+1, len(es), n)
		es = es[:n]
	}
	jobs := make([]Job, 0, len(es))
	for _, e := range es {
		jobs = append(jobs, c.job(e, hasImage))
	}
	return jobs
}

func (c *checker) job(e entry, hasImage bool) Job {
	j := Job{Name: e.key.Value}
	path := "jobs." + j.Name
	if !jobNamePattern.MatchString(j.Name) {
		c.errorf(e.key, path, "invalid job name %q: use 1 to 63 lowercase letters, digits, '-' and '_', starting with a letter or digit", j.Name)
	}
	m := c.mapping(e.value, path)
	if m == nil {
		return j
	}
	var steps *entry
	es := entries(m)
	for _, f := range es {
		if f.key.Value == "steps" {
			steps = &f
			continue
		}
		c.settings(f, path, &j.Settings, jobKeys)
	}
	if !hasImage && !hasKey(es, "image") {
		c.errorf(e.key, path+".image", "required (set it on the job or at the top level)")
	}
	if steps == nil {
		c.errorf(e.key, path+".steps", "required")
	} else {
		j.Steps = c.steps(steps.value, path+".steps")
	}
	return j
}

// steps walks a step list. An item is a mapping {name, run} or a plain
// string, which is the run script.
func (c *checker) steps(n *yaml.Node, path string) []StepSpec {
	s := c.sequence(n, path)
	if s == nil {
		return nil
	}
	if len(s.Content) == 0 {
		c.errorf(n, path, "at least one step is required")
	}
	steps := make([]StepSpec, 0, len(s.Content))
	for i, item := range s.Content {
		field := fmt.Sprintf("%s[%d]", path, i)
		var step StepSpec
		switch r := resolve(item); {
		case r.Kind == yaml.MappingNode:
			step = c.step(item, r, field)
		case r.Kind == yaml.ScalarNode && r.Tag != "!!null":
			step.Run = c.run(item, field)
		default:
			c.errorf(item, field, "expected a mapping or a string, got %s", describe(r))
		}
		if step.Name == "" {
			step.Name = defaultStepName(step.Run)
		}
		steps = append(steps, step)
	}
	return steps
}

func (c *checker) step(item, m *yaml.Node, field string) StepSpec {
	var step StepSpec
	hasRun := false
	for _, e := range entries(m) {
		f := field + "." + e.key.Value
		switch e.key.Value {
		case "name":
			step.Name = c.stepName(e.value, f)
		case "run":
			hasRun = true
			step.Run = c.run(e.value, f)
		default:
			c.unknownKey(e.key, field, stepKeys)
		}
	}
	if !hasRun {
		c.errorf(item, field+".run", "required")
	}
	return step
}

func (c *checker) run(n *yaml.Node, field string) string {
	run, ok := c.text(n, field, "a string")
	if ok && strings.TrimSpace(run) == "" {
		c.errorf(n, field, "must not be empty")
	}
	return run
}

func (c *checker) stepName(n *yaml.Node, field string) string {
	name, ok := c.text(n, field, "a string")
	name = strings.TrimSpace(name)
	switch {
	case !ok:
	case name == "":
		c.errorf(n, field, "must not be empty (leave name out to use the first line of run)")
	case strings.ContainsAny(name, "\r\n"):
		c.errorf(n, field, "must be a single line")
	}
	return name
}

// defaultStepName is the first non-blank line of run, trimmed and cut to
// maxStepNameLen characters.
func defaultStepName(run string) string {
	for line := range strings.Lines(run) {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if utf8.RuneCountInString(line) > maxStepNameLen {
			line = strings.TrimSpace(string([]rune(line)[:maxStepNameLen]))
		}
		return line
	}
	return ""
}

func (c *checker) image(n *yaml.Node, field string) string {
	image, ok := c.word(n, field, "image reference")
	if ok {
		// What the engines would refuse at the pull, said here with its
		// place in the file.
		if _, err := reference.ParseNormalizedNamed(image); err != nil {
			c.errorf(n, field, "invalid image reference %q: %v (want [host[:port]/]name[:tag][@digest], lowercase name)", image, err)
		}
	}
	return image
}

// word returns the text of a scalar that must be one non-empty word, such
// as an image reference or a label; what names it in messages.
func (c *checker) word(n *yaml.Node, field, what string) (string, bool) {
	w, ok := c.text(n, field, "a string")
	switch {
	case !ok:
	case w == "":
		c.errorf(n, field, "must not be empty")
	case strings.IndexFunc(w, isSpaceOrControl) >= 0:
		c.errorf(n, field, "invalid %s %q: must not contain spaces", what, w)
	default:
		return w, true
	}
	return w, false
}

func (c *checker) env(n *yaml.Node, field string) map[string]string {
	m := c.mapping(n, field)
	if m == nil {
		return nil
	}
	env := map[string]string{}
	for _, e := range entries(m) {
		name, f := e.key.Value, field+"."+e.key.Value
		switch {
		case !envNamePattern.MatchString(name):
			c.errorf(e.key, f, "invalid variable name: use letters, digits and '_', not starting with a digit")
		case strings.HasPrefix(name, "KILN_"):
			c.errorf(e.key, f, "names starting with KILN_ are reserved for Kiln")
		}
		v := resolve(e.value)
		if v.Kind != yaml.ScalarNode {
			c.errorf(e.value, f, "expected a string, number or boolean, got %s", describe(v))
			continue
		}
		val := v.Value
		if v.Tag == "!!null" {
			val = "" // `NAME:` and `NAME: ~` set an empty variable
		}
		if strings.IndexByte(val, 0) >= 0 {
			c.errorf(e.value, f, "must not contain a NUL character")
		}
		env[name] = val
	}
	return env
}

func (c *checker) labels(n *yaml.Node, field string) []string {
	r := resolve(n)
	items := []*yaml.Node{n}
	switch {
	case r.Kind == yaml.SequenceNode:
		items = r.Content
		if len(items) == 0 {
			c.errorf(n, field, "must not be empty (leave runs-on out to run on any agent)")
		}
	case r.Kind != yaml.ScalarNode || r.Tag == "!!null":
		c.errorf(n, field, "expected a string or a list of strings, got %s", describe(r))
		return nil
	}
	var labels []string
	seen := map[string]bool{}
	for i, item := range items {
		f := field
		if r.Kind == yaml.SequenceNode {
			f = fmt.Sprintf("%s[%d]", field, i)
		}
		if label, ok := c.word(item, f, "label"); ok && !seen[label] {
			seen[label] = true
			labels = append(labels, label)
		}
	}
	return labels
}

// mapping returns n (or the node its alias names) when it is a mapping.
func (c *checker) mapping(n *yaml.Node, field string) *yaml.Node {
	if r := resolve(n); r.Kind == yaml.MappingNode {
		return r
	}
	c.errorf(n, field, "expected a mapping, got %s", describe(resolve(n)))
	return nil
}

// sequence returns n (or the node its alias names) when it is a sequence.
func (c *checker) sequence(n *yaml.Node, field string) *yaml.Node {
	if r := resolve(n); r.Kind == yaml.SequenceNode {
		return r
	}
	c.errorf(n, field, "expected a sequence, got %s", describe(resolve(n)))
	return nil
}

// text returns the text of a scalar that is not null. A number or a
// boolean is taken as written (`run: true` runs `true`).
// oneOf is a string that must be one of allowed ("" after a problem,
// which it records).
func (c *checker) oneOf(n *yaml.Node, field string, allowed ...string) string {
	v, ok := c.text(n, field, "a string")
	if !ok {
		return ""
	}
	if slices.Contains(allowed, v) {
		return v
	}
	c.errorf(n, field, "%q: want %s or %s", v, strings.Join(allowed[:len(allowed)-1], ", "), allowed[len(allowed)-1])
	return ""
}

func (c *checker) text(n *yaml.Node, field, what string) (string, bool) {
	r := resolve(n)
	if r.Kind != yaml.ScalarNode || r.Tag == "!!null" {
		c.errorf(n, field, "expected %s, got %s", what, describe(r))
		return "", false
	}
	if strings.IndexByte(r.Value, 0) >= 0 {
		c.errorf(n, field, "must not contain a NUL character")
		return "", false
	}
	return r.Value, true
}

func (c *checker) unknownKey(k *yaml.Node, parent string, allowed []string) {
	msg := fmt.Sprintf("unknown key %q", k.Value)
	if s := closest(k.Value, allowed); s != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", s)
	}
	msg += "; allowed keys: " + strings.Join(allowed, ", ")
	if parent == "" {
		msg += ", and x-* extension keys"
	}
	c.errorf(k, parent, "%s", msg)
}

// closest is the allowed key within two edits of key, if any: the typo
// ("imgae", "runs_on", "step") a user most likely meant.
func closest(key string, allowed []string) string {
	best, bestDist := "", 3
	for _, a := range allowed {
		if d := editDistance(strings.ToLower(key), a); d < bestDist {
			best, bestDist = a, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between two short strings.
func editDistance(a, b string) int {
	if len(a) > 64 {
		return len(a) // a key this long is no typo of ours
	}
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// hasKey reports whether a mapping sets key (validly or not: a bad value
// is its own error, not a missing one).
func hasKey(es []entry, key string) bool {
	for _, e := range es {
		if e.key.Value == key {
			return true
		}
	}
	return false
}

func join(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}

func isSpaceOrControl(r rune) bool {
	return r <= ' ' || r == 0x7f || r == 0x85 || r == 0xa0 || r == 0x2028 || r == 0x2029
}
