package pipeline

import (
	"fmt"
	"path"
	"strconv"
	"strings"
	"time"

	yaml "go.yaml.in/yaml/v3"
)

var artifactKeys = []string{"paths", "when", "expire-in"}

// When a job's artifacts are uploaded, after its steps.
const (
	ArtifactsOnSuccess = "on_success"
	ArtifactsOnFailure = "on_failure"
	ArtifactsAlways    = "always"
)

const (
	// MaxArtifactPaths bounds one job's `artifacts.paths`.
	MaxArtifactPaths = 100
	// MaxArtifactExpiry is the longest `expire-in` a file may set.
	MaxArtifactExpiry = 365 * 24 * time.Hour
)

// ArtifactSpec is a job's `artifacts:`: the workspace files it keeps,
// uploaded by the agent after the steps as one archive per job attempt.
type ArtifactSpec struct {
	// Paths are globs relative to the workspace ("/"-separated; "*", "?"
	// and "[…]" within one path element, "**" across any number of them;
	// a glob naming a directory takes everything below it; one starting
	// with "!" excludes what it matches, the last glob that matches a file
	// deciding), as hashFiles takes them.
	Paths []string `json:"paths"`
	// When is ArtifactsOnSuccess, ArtifactsOnFailure or ArtifactsAlways
	// (Compile sets ArtifactsOnSuccess when the file does not).
	When string `json:"when,omitempty"`
	// ExpireInSeconds is how long the server keeps them; 0: the server's
	// default (-artifacts-expire).
	ExpireInSeconds int64 `json:"expire_in_seconds,omitempty"`
}

// Wanted reports whether a job whose steps succeeded (or not) uploads.
func (a *ArtifactSpec) Wanted(succeeded bool) bool {
	if a == nil || len(a.Paths) == 0 {
		return false
	}
	switch a.When {
	case ArtifactsAlways:
		return true
	case ArtifactsOnFailure:
		return !succeeded
	}
	return succeeded
}

// artifacts walks an `artifacts:` value: a list of paths, or a mapping
// of paths, when and expire-in.
func (c *checker) artifacts(n *yaml.Node, field string) *ArtifactSpec {
	spec := &ArtifactSpec{}
	if r := resolve(n); r.Kind == yaml.SequenceNode {
		spec.Paths = c.artifactPaths(n, field)
		return spec
	}
	m := c.mapping(n, field)
	if m == nil {
		return nil
	}
	es := entries(m)
	for _, e := range es {
		ef := join(field, e.key.Value)
		switch e.key.Value {
		case "paths":
			spec.Paths = c.artifactPaths(e.value, ef)
		case "when":
			spec.When = c.oneOf(e.value, ef, ArtifactsOnSuccess, ArtifactsOnFailure, ArtifactsAlways)
		case "expire-in":
			spec.ExpireInSeconds = c.expiry(e.value, ef)
		default:
			c.unknownKey(e.key, field, artifactKeys)
		}
	}
	if !hasKey(es, "paths") {
		c.errorf(n, field+".paths", "required")
	}
	return spec
}

func (c *checker) artifactPaths(n *yaml.Node, field string) []string {
	s := c.sequence(n, field)
	if s == nil {
		return nil
	}
	switch {
	case len(s.Content) == 0:
		c.errorf(n, field, "at least one path is required")
	case len(s.Content) > MaxArtifactPaths:
		c.errorf(n, field, "%d paths: at most %d", len(s.Content), MaxArtifactPaths)
		return nil
	}
	var out []string
	include := false
	for i, item := range s.Content {
		f := fmt.Sprintf("%s[%d]", field, i)
		p, ok := c.text(item, f, "a path")
		if !ok {
			continue
		}
		if msg := checkArtifactGlob(p); msg != "" {
			c.errorf(item, f, "%q: %s", p, msg)
			continue
		}
		include = include || !strings.HasPrefix(p, "!")
		out = append(out, p)
	}
	if len(out) > 0 && !include {
		c.errorf(n, field, `every path excludes ("!…"): at least one must select files`)
	}
	return out
}

// checkArtifactGlob says what is wrong with a glob ("" when nothing): the
// agent's matcher (cachekey) checks the same, here with a position.
func checkArtifactGlob(p string) string {
	g := strings.TrimPrefix(p, "!")
	switch {
	case strings.TrimSpace(g) == "":
		return "must not be empty"
	case strings.HasPrefix(g, "/"):
		return "must be relative to the workspace, not absolute"
	case strings.ContainsAny(g, "\r\n"):
		return "must be a single line"
	}
	for _, part := range strings.Split(g, "/") {
		switch {
		case part == "..":
			return `must not contain ".." (artifacts come from the workspace)`
		case part == "**" || part == "" || part == ".":
		default:
			if _, err := path.Match(part, ""); err != nil {
				return fmt.Sprintf("malformed pattern %q", part)
			}
		}
	}
	return ""
}

// expiry parses `expire-in`: a Go duration (90m, 12h) or whole days (30d)
// or weeks (2w).
func (c *checker) expiry(n *yaml.Node, field string) int64 {
	s, ok := c.text(n, field, "a duration")
	if !ok {
		return 0
	}
	d, err := parseExpiry(strings.TrimSpace(s))
	switch {
	case err != nil:
		c.errorf(n, field, "invalid duration %q: use a number with a unit, like 12h, 30d or 2w", s)
	case d < time.Minute:
		c.errorf(n, field, "must be at least 1m")
	case d > MaxArtifactExpiry:
		c.errorf(n, field, "must be at most 365d")
	default:
		return int64(d / time.Second)
	}
	return 0
}

func parseExpiry(s string) (time.Duration, error) {
	for unit, d := range map[string]time.Duration{"d": 24 * time.Hour, "w": 7 * 24 * time.Hour} {
		if num, ok := strings.CutSuffix(s, unit); ok {
			v, err := strconv.ParseUint(num, 10, 16)
			if err != nil {
				return 0, err
			}
			return time.Duration(v) * d, nil
		}
	}
	return time.ParseDuration(s)
}
