package pipeline

import (
	"fmt"
	"path"
	"regexp"
	"strings"

	yaml "go.yaml.in/yaml/v3"
)

var cacheKeys = []string{"path", "key", "restore-keys", "paths"}

// MaxCacheKeyLen is the cache service's limit on a key (GitHub's too).
const MaxCacheKeyLen = 512

// cacheExpr matches one ${{ … }} expression of a key template: the forms
// the agent can expand. The agent re-checks when it expands.
var cacheExpr = regexp.MustCompile(`^\s*(hashFiles\(\s*'[^']+'(\s*,\s*'[^']+')*\s*\)|branch|os|arch|runner\.os|runner\.arch|github\.ref_name)\s*$`)

// caches walks a `cache:` list. An item is a mapping (path: for a sticky
// volume; key:, restore-keys:, paths: for a keyed cache) or a plain string,
// which is a sticky volume's path.
func (c *checker) caches(n *yaml.Node, field string) []CacheSpec {
	s := c.sequence(n, field)
	if s == nil {
		return nil
	}
	out := []CacheSpec{}
	seen := map[string]string{}
	for i, item := range s.Content {
		f := fmt.Sprintf("%s[%d]", field, i)
		var spec CacheSpec
		if it := resolve(item); it.Kind == yaml.ScalarNode {
			spec.Path = c.cachePath(it, f)
		} else {
			spec = c.cacheEntry(item, f)
		}
		paths := spec.Paths
		if spec.Sticky() {
			paths = []string{spec.Path}
		}
		for _, p := range paths {
			if p == "" {
				continue
			}
			if prev, dup := seen[p]; dup {
				c.errorf(item, f, "path %s is already cached by %s", p, prev)
			}
			seen[p] = f
		}
		out = append(out, spec)
	}
	return out
}

func (c *checker) cacheEntry(item *yaml.Node, f string) CacheSpec {
	var spec CacheSpec
	m := c.mapping(item, f)
	if m == nil {
		return spec
	}
	es := entries(m)
	for _, e := range es {
		ef := join(f, e.key.Value)
		switch e.key.Value {
		case "path":
			spec.Path = c.cachePath(e.value, ef)
		case "key":
			spec.Key = c.cacheKey(e.value, ef)
		case "restore-keys":
			if s := c.sequence(e.value, ef); s != nil {
				for i, k := range s.Content {
					spec.RestoreKeys = append(spec.RestoreKeys, c.cacheKey(k, fmt.Sprintf("%s[%d]", ef, i)))
				}
			}
		case "paths":
			if s := c.sequence(e.value, ef); s != nil {
				if len(s.Content) == 0 {
					c.errorf(e.value, ef, "at least one path is required")
				}
				for i, p := range s.Content {
					spec.Paths = append(spec.Paths, c.cachePath(p, fmt.Sprintf("%s[%d]", ef, i)))
				}
			}
		default:
			c.unknownKey(e.key, f, cacheKeys)
		}
	}
	switch {
	case hasKey(es, "path") && (hasKey(es, "key") || hasKey(es, "paths") || hasKey(es, "restore-keys")):
		c.errorf(item, f, `a cache is either sticky (path) or keyed (key, restore-keys, paths), not both`)
	case hasKey(es, "key") && !hasKey(es, "paths"):
		c.errorf(item, f+".paths", "required for a keyed cache")
	case hasKey(es, "paths") && !hasKey(es, "key"):
		c.errorf(item, f+".key", "required for a keyed cache")
	case !hasKey(es, "path") && !hasKey(es, "key") && !hasKey(es, "paths"):
		c.errorf(item, f, `set "path" (a sticky volume) or "key" and "paths" (a keyed cache)`)
	}
	return spec
}

// cachePath checks a path in the sandbox that a cache is mounted at.
func (c *checker) cachePath(n *yaml.Node, f string) string {
	p, ok := c.text(n, f, "a path")
	if !ok {
		return ""
	}
	switch {
	case !path.IsAbs(p):
		c.errorf(n, f, "%q: must be an absolute path in the sandbox", p)
	case path.Clean(p) != p || strings.Contains(p, ".."):
		c.errorf(n, f, "%q: must be a clean path (no '..', '.', '//' or trailing '/')", p)
	case p == "/" || p == "/workspace" || strings.HasPrefix(p, "/workspace/") || p == "/proc" || p == "/sys" || p == "/dev":
		c.errorf(n, f, "%q: cannot be cached (it is the sandbox's root, workspace or a system directory)", p)
	default:
		return p
	}
	return ""
}

// cacheKey checks a key template: length, no commas (the cache service
// takes lists of keys comma-separated), and known ${{ … }} expressions.
func (c *checker) cacheKey(n *yaml.Node, f string) string {
	k, ok := c.text(n, f, "a key")
	if !ok {
		return ""
	}
	switch {
	case k == "":
		c.errorf(n, f, "must not be empty")
	case len(k) > MaxCacheKeyLen:
		c.errorf(n, f, "longer than %d characters", MaxCacheKeyLen)
	case strings.Contains(outsideExprs(k), ","):
		c.errorf(n, f, "must not contain a comma")
	default:
		rest := k
		for {
			open := strings.Index(rest, "${{")
			if open < 0 {
				return k
			}
			end := strings.Index(rest[open:], "}}")
			if end < 0 {
				c.errorf(n, f, "unclosed ${{ in %q", k)
				return ""
			}
			if expr := rest[open+3 : open+end]; !cacheExpr.MatchString(expr) {
				c.errorf(n, f, "unknown expression ${{%s}}: want hashFiles('glob', …), branch, os or arch", expr)
				return ""
			}
			rest = rest[open+end+2:]
		}
	}
	return ""
}

// outsideExprs returns k without its ${{ … }} expressions (whose arguments
// may hold commas: they never reach the expanded key).
func outsideExprs(k string) string {
	var b strings.Builder
	for {
		open := strings.Index(k, "${{")
		if open < 0 {
			return b.String() + k
		}
		b.WriteString(k[:open])
		end := strings.Index(k[open:], "}}")
		if end < 0 {
			return b.String()
		}
		k = k[open+end+2:]
	}
}
