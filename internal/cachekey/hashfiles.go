package cachekey

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
)

// hashFiles follows GitHub's hashFiles():
//
//   - globs are relative to the workspace, "/"-separated; "*", "?" and
//     "[…]" match within one path element (dot files included) and "**"
//     matches any number of elements, none included;
//   - a glob that matches a directory matches every file below it;
//   - a glob starting with "!" excludes what it matches; for each file the
//     last glob that matches it decides;
//   - the result is the hex SHA-256 of the SHA-256s of the matching
//     regular files' contents, taken in sorted path order (names are not
//     hashed: renaming a file keeps the hash), or "" when nothing matches.
//
// Files are read through an os.Root on the workspace: a symbolic link is
// followed only while it stays inside the workspace (one leading out is
// skipped), and links to directories are not descended into.

// glob is one parsed hashFiles argument.
type glob struct {
	negate bool
	parts  []string // path elements; "**" is any number of elements
}

// literalPrefix is the leading elements without wildcards: the only
// directory that can hold a match.
func (g glob) literalPrefix() string {
	n := 0
	for n < len(g.parts) && !strings.ContainsAny(g.parts[n], `*?[\`) {
		n++
	}
	if n == 0 {
		return "."
	}
	return path.Join(g.parts[:n]...)
}

// parseGlob parses one glob; a non-empty msg says what is wrong with it.
func parseGlob(s string) (g glob, msg string) {
	if strings.HasPrefix(s, "!") {
		g.negate, s = true, s[1:]
	}
	switch {
	case s == "":
		return g, "empty glob"
	case strings.HasPrefix(s, "/"):
		return g, "must be relative to the workspace, not absolute"
	case strings.ContainsRune(s, 0):
		return g, "contains a NUL byte"
	}
	for _, p := range strings.Split(s, "/") {
		switch {
		case p == "" || p == ".":
			continue
		case p == "..":
			return g, `must not contain ".." (globs stay inside the workspace)`
		case p != "**":
			if _, err := path.Match(p, ""); err != nil {
				return g, "malformed pattern " + `"` + p + `"`
			}
		}
		if p == "**" && len(g.parts) > 0 && g.parts[len(g.parts)-1] == "**" {
			continue // a/**/**/b is a/**/b
		}
		g.parts = append(g.parts, p)
	}
	return g, ""
}

// matchLengths reports, for each k from 0 to len(name), whether pat
// matches the first k elements of name. It runs in time proportional to
// len(pat)*len(name) whatever the "**"s (no backtracking).
func matchLengths(pat, name []string) []bool {
	cur := make([]bool, len(name)+1)
	next := make([]bool, len(name)+1)
	cur[0] = true
	for _, p := range pat {
		clear(next)
		if p == "**" {
			reached := false
			for j, ok := range cur {
				reached = reached || ok
				next[j] = reached
			}
		} else {
			for j := range name {
				if cur[j] {
					next[j+1], _ = path.Match(p, name[j])
				}
			}
		}
		cur, next = next, cur
	}
	return cur
}

// matchParts reports whether pat matches the path elements name.
func matchParts(pat, name []string) bool {
	return matchLengths(pat, name)[len(name)]
}

// matches reports whether g matches the file with path elements elems or
// one of its parent directories.
func (g glob) matches(elems []string) bool {
	return slices.Contains(matchLengths(g.parts, elems), true)
}

// selected applies the globs to one file: the last that matches decides.
func selected(globs []glob, rel string) bool {
	elems := strings.Split(rel, "/")
	for i := len(globs) - 1; i >= 0; i-- {
		if globs[i].matches(elems) {
			return !globs[i].negate
		}
	}
	return false
}

func hashFiles(x expr, workspace string) (string, error) {
	if workspace == "" {
		return "", x.errorf(x.start, nil, "hashFiles needs a workspace, and none was given")
	}
	root, err := os.OpenRoot(workspace)
	if err != nil {
		return "", x.errorf(x.start, err, "hashFiles: %v", err)
	}
	defer root.Close()
	files, err := matchFiles(root, x.globs)
	if err != nil {
		return "", x.errorf(x.start, err, "hashFiles: %v", err)
	}
	if len(files) == 0 {
		return "", nil
	}
	outer := sha256.New()
	buf := make([]byte, 64<<10)
	for _, rel := range files {
		sum, err := hashFile(root, rel, buf)
		if err != nil {
			return "", x.errorf(x.start, err, "hashFiles: %v", err)
		}
		outer.Write(sum)
	}
	return hex.EncodeToString(outer.Sum(nil)), nil
}

// matchFiles returns the sorted workspace-relative paths of the regular
// files the globs select. It walks the workspace once, descending only into
// directories on the way to or below a glob's literal prefix, and never into
// a symbolic link.
func matchFiles(root *os.Root, globs []glob) ([]string, error) {
	files, _, err := matchFilesSkipping(root, globs)
	return files, err
}

// matchFilesSkipping is matchFiles that also returns the symbolic links
// the globs select but that are left out (leading out of the workspace, to
// a directory or to nothing), sorted.
func matchFilesSkipping(root *os.Root, globs []glob) (files, skipped []string, err error) {
	var prefixes []string
	for _, g := range globs {
		if !g.negate {
			prefixes = append(prefixes, g.literalPrefix())
		}
	}
	err = fs.WalkDir(root.FS(), ".", func(rel string, d fs.DirEntry, err error) error {
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil // went away during the walk
		case err != nil:
			return err
		case rel == ".":
			return nil
		case d.IsDir():
			if !slices.ContainsFunc(prefixes, func(p string) bool { return related(rel, p) }) {
				return fs.SkipDir
			}
			return nil
		case !selected(globs, rel):
			return nil
		case d.Type()&fs.ModeSymlink != 0:
			// Follow it only inside the workspace, and only to a file.
			if fi, err := root.Stat(rel); err != nil || !fi.Mode().IsRegular() {
				skipped = append(skipped, rel)
				return nil
			}
		case !d.Type().IsRegular():
			return nil // a device, socket or pipe
		}
		files = append(files, rel)
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	slices.Sort(files)
	slices.Sort(skipped)
	return files, skipped, nil
}

// related reports whether dir is prefix, below it, or one of its parents.
func related(dir, prefix string) bool {
	return prefix == "." || dir == prefix ||
		strings.HasPrefix(dir, prefix+"/") || strings.HasPrefix(prefix, dir+"/")
}

func hashFile(root *os.Root, rel string, buf []byte) ([]byte, error) {
	f, err := root.Open(rel)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyBuffer(h, f, buf); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}

// Files returns the sorted workspace-relative paths of the regular files
// the globs select, as hashFiles selects them (the same globs, the same
// symbolic links followed: only to files inside the workspace), and the
// symbolic links they select but leave out. Build artifacts are chosen by
// it.
func Files(workspace string, globs []string) (files, skipped []string, err error) {
	gs := make([]glob, 0, len(globs))
	for _, s := range globs {
		g, msg := parseGlob(s)
		if msg != "" {
			return nil, nil, fmt.Errorf("glob %q: %s", s, msg)
		}
		gs = append(gs, g)
	}
	root, err := os.OpenRoot(workspace)
	if err != nil {
		return nil, nil, err
	}
	defer root.Close()
	return matchFilesSkipping(root, gs)
}
