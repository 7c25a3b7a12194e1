package pipeline

import (
	"fmt"
	"strings"

	yaml "go.yaml.in/yaml/v3"
)

// maxExpansion bounds the size of the document with every alias expanded,
// counted as nodes plus scalar bytes. A file without aliases weighs at most
// about twice its size (MaxFileSize), so only aliases reach the limit.
//
// Why it is needed: yaml.v3 guards against alias bombs ("billion laughs")
// only while decoding into Go values. Decoding into a *yaml.Node, as this
// package does, keeps each alias as one node pointing at its anchor, so the
// tree stays small; the expansion happens in our own walk, which follows
// aliases, and in the JobSpecs it produces. A few hundred bytes of nested
// aliases can stand for terabytes, so the weight is measured first, in time
// linear in the file, and a heavy document is rejected before the walk.
const maxExpansion = 8 << 20

// standardTags are the only explicit tags accepted. A custom tag
// (GitLab's !reference, a !!python/object) would be silently taken as its
// text, so it is an error instead.
var standardTags = map[string]bool{
	"!!str": true, "!!int": true, "!!float": true, "!!bool": true, "!!null": true,
	"!!map": true, "!!seq": true, "!!merge": true, "!!timestamp": true,
}

// graphCheck is the structural pass over the raw node tree, done before the
// schema walk and independent of it: alias cycles and bombs, duplicate and
// non-scalar keys, malformed merge keys, custom tags. It does not follow
// aliases (their weight is memoized at their anchor), so its paths are those
// of where things are written.
type graphCheck struct {
	c *checker
	// weight memoizes the expanded weight of each anchored node; only
	// anchored nodes can be the target of an alias.
	weight map[*yaml.Node]int
	// open holds the anchored nodes being walked: an alias to one of them
	// is a cycle.
	open  map[*yaml.Node]bool
	path  []string
	fatal bool
}

// checkGraph reports structural problems and whether the schema walk may
// follow the document's aliases (no cycle, no bomb).
func (c *checker) checkGraph(root *yaml.Node) bool {
	g := &graphCheck{c: c, weight: map[*yaml.Node]int{}, open: map[*yaml.Node]bool{}}
	g.visit(root)
	return !g.fatal
}

// field renders the current path. A path deeper than any pipeline needs
// (only a malformed file nests that deep) is elided in the middle, so that
// a file of thousands of nested errors does not cost quadratic time.
func (g *graphCheck) field() string {
	const keep = 6
	if len(g.path) <= 2*keep {
		return strings.Join(g.path, "")
	}
	return strings.Join(g.path[:keep], "") + "…" + strings.Join(g.path[len(g.path)-keep:], "")
}

func (g *graphCheck) push(seg string) {
	if len(g.path) > 0 && !strings.HasPrefix(seg, "[") {
		seg = "." + seg
	}
	g.path = append(g.path, seg)
}

func (g *graphCheck) pop() { g.path = g.path[:len(g.path)-1] }

// visit checks n and returns its expanded weight, capped at maxExpansion+1.
func (g *graphCheck) visit(n *yaml.Node) int {
	if n.Kind == yaml.AliasNode {
		switch t := n.Alias; {
		case t == nil:
			return 1
		case g.open[t]:
			if !g.fatal {
				g.c.errorf(n, g.field(), "alias *%s refers to a node that contains it", n.Value)
				g.fatal = true
			}
			return maxExpansion + 1
		case t.Anchor != "" && g.weight[t] > 0:
			return min(1+g.weight[t], maxExpansion+1)
		default:
			// yaml.v3 defines an anchor before any alias to it, so this
			// is not reached; visiting the target keeps the weight right
			// if it ever is.
			return min(1+g.visit(t), maxExpansion+1)
		}
	}
	if n.Anchor != "" {
		g.open[n] = true
		defer delete(g.open, n)
	}
	if n.Style&yaml.TaggedStyle != 0 && !standardTags[n.Tag] {
		g.c.errorf(n, g.field(), "unsupported YAML tag %s", n.Tag)
	}
	w := 1 + len(n.Value)
	switch n.Kind {
	case yaml.MappingNode:
		w += g.mapping(n)
	case yaml.SequenceNode:
		for i, item := range n.Content {
			g.push(fmt.Sprintf("[%d]", i))
			w = min(w+g.visit(item), maxExpansion+1)
			g.pop()
		}
	}
	w = min(w, maxExpansion+1)
	if w > maxExpansion && !g.fatal {
		g.c.errorf(n, g.field(), "aliases expand this value beyond the limit of %d nodes and bytes (an alias bomb?)", maxExpansion)
		g.fatal = true
	}
	if n.Anchor != "" {
		g.weight[n] = w
	}
	return w
}

// mapping checks a mapping's keys and returns the weight of its content.
func (g *graphCheck) mapping(n *yaml.Node) int {
	w := 0
	first := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		rk := resolve(k)
		name := rk.Value
		switch {
		case rk.Kind != yaml.ScalarNode:
			g.c.errorf(k, g.field(), "a mapping key must be a string, got %s", describe(rk))
			name = "?"
		case isMergeKey(rk):
			g.checkMerge(v)
		case first[name] != nil:
			g.c.errorf(k, g.join(name), "duplicate key %q (first defined at line %d)", name, first[name].Line)
		default:
			first[name] = k
		}
		g.push(name)
		w = min(w+g.visit(k)+g.visit(v), maxExpansion+1)
		g.pop()
	}
	return w
}

func (g *graphCheck) join(name string) string {
	g.push(name)
	defer g.pop()
	return g.field()
}

// checkMerge checks the value of a "<<" key: a mapping or a sequence of
// mappings, each usually an alias.
func (g *graphCheck) checkMerge(v *yaml.Node) {
	rv := resolve(v)
	sources := []*yaml.Node{v}
	if rv.Kind == yaml.SequenceNode {
		sources = rv.Content
	}
	for _, s := range sources {
		if rs := resolve(s); rs.Kind != yaml.MappingNode {
			g.c.errorf(s, g.join("<<"), "a merge key takes a mapping or a list of mappings, got %s", describe(rs))
		}
	}
}

// resolve follows an alias to its anchored node.
func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func isMergeKey(k *yaml.Node) bool {
	return k.Kind == yaml.ScalarNode && k.Tag == "!!merge" && k.Value == "<<"
}

// describe names a node's kind for "expected X, got Y" messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a sequence"
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!null":
			if n.Value == "" {
				return "an empty value"
			}
			return "null"
		case "!!str":
			return "a string"
		case "!!int", "!!float":
			return "a number"
		case "!!bool":
			return "a boolean"
		}
		return "a scalar"
	}
	return "an alias"
}

// entry is one key/value pair of a mapping as the schema sees it.
type entry struct{ key, value *yaml.Node }

// entries lists a mapping's pairs in file order with "<<" merge keys
// expanded, YAML's way: a key written in the mapping wins over a merged one,
// and an earlier merge source wins over a later one. Merged pairs take the
// place of their "<<". Keys that are not scalars and repeated keys were
// reported by checkGraph and are skipped here (the first one counts).
func entries(m *yaml.Node) []entry {
	explicit := map[string]bool{}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if k := resolve(m.Content[i]); k.Kind == yaml.ScalarNode && !isMergeKey(k) {
			explicit[k.Value] = true
		}
	}
	var out []entry
	done := map[string]bool{}
	add := func(k, v *yaml.Node) {
		if !done[k.Value] {
			done[k.Value] = true
			out = append(out, entry{k, v})
		}
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := resolve(m.Content[i]), m.Content[i+1]
		switch {
		case k.Kind != yaml.ScalarNode:
		case isMergeKey(k):
			for _, src := range mergeSources(v) {
				for _, e := range entries(src) {
					if !explicit[e.key.Value] {
						add(e.key, e.value)
					}
				}
			}
		default:
			add(k, v)
		}
	}
	return out
}

// mergeSources are the mappings a "<<" value names, skipping anything else
// (checkGraph reported it).
func mergeSources(v *yaml.Node) []*yaml.Node {
	rv := resolve(v)
	list := []*yaml.Node{rv}
	if rv.Kind == yaml.SequenceNode {
		list = rv.Content
	}
	var out []*yaml.Node
	for _, s := range list {
		if rs := resolve(s); rs.Kind == yaml.MappingNode {
			out = append(out, rs)
		}
	}
	return out
}
