package pipeline

import (
	"reflect"
	"strings"
	"testing"
)

func TestCacheValid(t *testing.T) {
	src := `image: img
cache:
  - /root/.cache/go-build
jobs:
  inherit:
    steps: [make]
  own:
    cache:
      - path: /var/cache/apt
      - key: "go-${{ hashFiles('go.sum', '**/go.mod') }}-${{ os }}-${{ arch }}-${{ branch }}"
        restore-keys: [go-]
        paths: [/root/go/pkg/mod]
    steps: [make]
`
	p, err := Parse(".kiln.yml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	specs := p.Compile()
	if want := []CacheSpec{{Path: "/root/.cache/go-build"}}; !reflect.DeepEqual(specs[0].Caches, want) {
		t.Errorf("inherited caches = %+v, want %+v", specs[0].Caches, want)
	}
	want := []CacheSpec{
		{Path: "/var/cache/apt"},
		{Key: "go-${{ hashFiles('go.sum', '**/go.mod') }}-${{ os }}-${{ arch }}-${{ branch }}", RestoreKeys: []string{"go-"}, Paths: []string{"/root/go/pkg/mod"}},
	}
	if !reflect.DeepEqual(specs[1].Caches, want) {
		t.Errorf("job caches = %+v, want %+v", specs[1].Caches, want)
	}
	if !specs[1].Caches[0].Sticky() || specs[1].Caches[1].Sticky() {
		t.Error("Sticky() wrong")
	}
}

func TestCacheErrors(t *testing.T) {
	long := strings.Repeat("k", MaxCacheKeyLen+1)
	cases := []struct{ cache, want string }{
		{`[relative/path]`, `.kiln.yml:3:9: cache[0]: "relative/path": must be an absolute path in the sandbox`},
		{`[/a/../b]`, `.kiln.yml:3:9: cache[0]: "/a/../b": must be a clean path`},
		{`[/workspace/x]`, `.kiln.yml:3:9: cache[0]: "/workspace/x": cannot be cached`},
		{`[/]`, `.kiln.yml:3:9: cache[0]: "/": cannot be cached`},
		{`[/a, /a]`, `.kiln.yml:3:13: cache[1]: path /a is already cached by cache[0]`},
		{`[{path: /a, key: k}]`, `.kiln.yml:3:9: cache[0]: a cache is either sticky (path) or keyed`},
		{`[{key: k}]`, `.kiln.yml:3:9: cache[0].paths: required for a keyed cache`},
		{`[{paths: [/a]}]`, `.kiln.yml:3:9: cache[0].key: required for a keyed cache`},
		{`[{key: "a,b", paths: [/a]}]`, `.kiln.yml:3:15: cache[0].key: must not contain a comma`},
		{`[{key: ` + long + `, paths: [/a]}]`, `.kiln.yml:3:15: cache[0].key: longer than 512 characters`},
		{`[{key: "x-${{ secrets.TOKEN }}", paths: [/a]}]`, `.kiln.yml:3:15: cache[0].key: unknown expression ${{ secrets.TOKEN }}`},
		{`[{key: "x-${{ os", paths: [/a]}]`, `.kiln.yml:3:15: cache[0].key: unclosed ${{`},
		{`[{key: k, paths: []}]`, `.kiln.yml:3:25: cache[0].paths: at least one path is required`},
		{`[{key: k, paths: [/a], bogus: 1}]`, `.kiln.yml:3:31: cache[0]: unknown key "bogus"`},
		{`[{}]`, `.kiln.yml:3:9: cache[0]: set "path" (a sticky volume) or "key" and "paths" (a keyed cache)`},
	}
	for _, tc := range cases {
		src := "image: img\nsteps: [make]\ncache: " + tc.cache + "\n"
		_, err := Parse(".kiln.yml", []byte(src))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("cache: %s\n got: %v\nwant: %s", tc.cache, err, tc.want)
		}
	}
}
