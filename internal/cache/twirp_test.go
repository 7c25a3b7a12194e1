package cache

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestTwirpRoundTripAndDownload(t *testing.T) {
	te := newTestEnv(t, nil)
	a := te.api(t, mainScope)
	data := bytes.Repeat([]byte("0123456789"), 1000)
	a.save("k", data)
	a.mustHave("k", data)

	_, resp := a.twirp("GetCacheEntryDownloadURL", map[string]any{"key": "k", "version": testVersion})
	url := resp["signed_download_url"].(string)
	if !strings.Contains(url, "sig=") || !strings.Contains(url, "se=") {
		t.Fatalf("download URL is not signed: %s", url)
	}
	for _, tc := range []struct {
		name   string
		method string
		header map[string]string
		status int
		body   []byte
	}{
		{"range", "GET", map[string]string{"Range": "bytes=10-19"}, 206, data[10:20]},
		{"x-ms-range", "GET", map[string]string{"x-ms-range": "bytes=5-9"}, 206, data[5:10]},
		{"head", "HEAD", nil, 200, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer a.bind(t)()
			status, body := a.do(tc.method, url, nil, tc.header)
			if status != tc.status || !bytes.Equal(body, tc.body) {
				t.Fatalf("%d %q", status, body)
			}
		})
	}
}

func TestTwirpAuth(t *testing.T) {
	now := time.Now()
	clock := func() time.Time { return now }
	te := newTestEnv(t, func(c *Config) { c.Now = func() time.Time { return clock() } })
	other := newTestEnv(t, func(c *Config) { c.SigningKey = []byte("another-signing-key-of-enough-length") })
	expired, _ := te.svc.IssueToken(mainScope, time.Minute)
	foreign := other.token(t, mainScope)
	valid := te.token(t, mainScope)
	parts := strings.Split(valid, ".")
	tampered := parts[0] + "." + b64.EncodeToString([]byte(`{"prj":"other","br":"main","exp":9999999999}`)) + "." + parts[2]
	clock = func() time.Time { return now.Add(2 * time.Minute) }

	for name, header := range map[string]string{
		"none":     "",
		"garbage":  "Bearer not-a-token",
		"not JWT":  "Basic dXNlcjpwYXNz",
		"expired":  "Bearer " + expired,
		"foreign":  "Bearer " + foreign,
		"tampered": "Bearer " + tampered,
	} {
		t.Run(name, func(t *testing.T) {
			h := map[string]string{"Content-Type": "application/json"}
			if header != "" {
				h["Authorization"] = header
			}
			status, body := te.api(t, mainScope).do("POST", twirpPrefix+"CreateCacheEntry", strings.NewReader(`{"key":"k","version":"v"}`), h)
			if status != 401 || !strings.Contains(string(body), `"unauthenticated"`) {
				t.Fatalf("twirp: %d %s", status, body)
			}
			delete(h, "Content-Type")
			status, _ = te.api(t, mainScope).do("GET", v1Prefix+"cache?keys=k&version=v", nil, h)
			if status != 401 {
				t.Fatalf("v1: %d", status)
			}
		})
	}
	if entries, _ := te.svc.List(t.Context(), "acme"); len(entries) != 0 {
		t.Fatalf("entries %v", entries)
	}
}

func TestTwirpConflictAndFinalizeRetry(t *testing.T) {
	te := newTestEnv(t, nil)
	a := te.api(t, mainScope)
	url := a.create("k")

	// While the first upload is in progress, and after it finished.
	for _, stage := range []string{"reserved", "finalized"} {
		status, resp := a.twirp("CreateCacheEntry", map[string]any{"key": "k", "version": testVersion})
		if status != 409 || resp["code"] != "already_exists" {
			t.Fatalf("%s: second create: %d %v", stage, status, resp)
		}
		if stage == "reserved" {
			a.putBlob(url, []byte("original"))
			if st, _ := a.finalize("k", 8); st != 200 {
				t.Fatalf("finalize: %d", st)
			}
		}
	}
	// A retried finalize succeeds with the same entry.
	_, first := a.finalize("k", 8)
	_, second := a.finalize("k", 8)
	if first["ok"] != true || second["entry_id"] != first["entry_id"] {
		t.Fatalf("retried finalize: %v then %v", first, second)
	}
	if st := a.putBlob(url, []byte("replaced")); st != 409 {
		t.Fatalf("upload after finalize: %d", st)
	}
	a.mustHave("k", []byte("original"))
	// Another version of the same key is another entry.
	status, resp := a.twirp("CreateCacheEntry", map[string]any{"key": "k", "version": "other-version"})
	if status != 200 || resp["ok"] != true {
		t.Fatalf("other version: %d %v", status, resp)
	}
}

func TestTwirpConcurrentCreateOneWins(t *testing.T) {
	te := newTestEnv(t, nil)
	a := te.api(t, mainScope)
	var wg sync.WaitGroup
	statuses := make([]int, 8)
	for i := range statuses {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses[i], _ = a.twirp("CreateCacheEntry", map[string]any{"key": "race", "version": testVersion})
		}()
	}
	wg.Wait()
	won := 0
	for _, s := range statuses {
		switch s {
		case 200:
			won++
		case 409:
		default:
			t.Fatalf("status %d", s)
		}
	}
	if won != 1 {
		t.Fatalf("%d creates won: %v", won, statuses)
	}
}

func TestTwirpVisibleOnlyWhenFinalized(t *testing.T) {
	te := newTestEnv(t, nil)
	a := te.api(t, mainScope)
	url := a.create("k")
	a.mustMiss("k")
	a.putBlob(url, []byte("data"))
	a.mustMiss("k")
	if entries, _ := te.svc.List(t.Context(), "acme"); len(entries) != 0 {
		t.Fatalf("unfinalized entry listed: %v", entries)
	}
	a.finalize("k", 4)
	a.mustHave("k", []byte("data"))
}

func TestTwirpBadKeys(t *testing.T) {
	te := newTestEnv(t, nil)
	a := te.api(t, mainScope)
	a.save("bystander", []byte("safe"))
	long := strings.Repeat("k", 513)
	eleven := []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j"}
	for _, tc := range []struct {
		name, method string
		req          map[string]any
		msg          string
	}{
		{"create long key", "CreateCacheEntry", map[string]any{"key": long, "version": "v"}, "cannot be larger than 512 characters"},
		{"create comma", "CreateCacheEntry", map[string]any{"key": "a,b", "version": "v"}, "cannot contain commas"},
		{"create empty", "CreateCacheEntry", map[string]any{"key": "", "version": "v"}, "key is empty"},
		{"create no version", "CreateCacheEntry", map[string]any{"key": "k"}, "version is required"},
		{"lookup long key", "GetCacheEntryDownloadURL", map[string]any{"key": "k", "restore_keys": []string{long}, "version": "v"}, "cannot be larger"},
		{"lookup comma", "GetCacheEntryDownloadURL", map[string]any{"key": "a,b", "version": "v"}, "cannot contain commas"},
		{"lookup eleven keys", "GetCacheEntryDownloadURL", map[string]any{"key": "k", "restore_keys": eleven, "version": "v"}, "maximum of 10"},
		{"finalize comma", "FinalizeCacheEntryUpload", map[string]any{"key": "a,b", "version": "v", "size_bytes": "1"}, "cannot contain commas"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer a.bind(t)()
			status, resp := a.twirp(tc.method, tc.req)
			if status != 400 || resp["code"] != "invalid_argument" || !strings.Contains(resp["msg"].(string), tc.msg) {
				t.Fatalf("%d %v", status, resp)
			}
		})
	}
	// A 512-character key is fine, and so is a key that looks like a path.
	for _, key := range []string{strings.Repeat("k", 512), "../../../../etc/passwd"} {
		a.save(key, []byte("ok"))
		a.mustHave(key, []byte("ok"))
	}
	for _, f := range te.files(t) {
		if !strings.HasPrefix(f, "blobs/") {
			t.Fatalf("unexpected file %s", f)
		}
	}
	a.mustHave("bystander", []byte("safe"))
}

func TestTwirpMalformed(t *testing.T) {
	te := newTestEnv(t, nil)
	a := te.api(t, mainScope)
	h := a.auth()
	h["Content-Type"] = "application/json"
	for _, tc := range []struct {
		name, method, body string
		status             int
		code               string
	}{
		{"bad json", "CreateCacheEntry", `{"key":`, 400, "malformed"},
		{"bad size", "FinalizeCacheEntryUpload", `{"key":"k","version":"v","size_bytes":"many"}`, 400, "malformed"},
		{"unknown method", "DeleteCacheEntry", `{}`, 404, "bad_route"},
		{"finalize unknown entry", "FinalizeCacheEntryUpload", `{"key":"nope","version":"v","size_bytes":"1"}`, 404, "not_found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer a.bind(t)()
			status, body := a.do("POST", twirpPrefix+tc.method, strings.NewReader(tc.body), h)
			if status != tc.status || !strings.Contains(string(body), `"`+tc.code+`"`) {
				t.Fatalf("%d %s", status, body)
			}
		})
	}
	// camelCase JSON names and numeric int64s are accepted, as Twirp requires.
	url := a.create("camel")
	a.putBlob(url, []byte("abc"))
	status, resp := a.twirp("FinalizeCacheEntryUpload", map[string]any{"key": "camel", "version": testVersion, "sizeBytes": 3})
	if status != 200 || resp["ok"] != true {
		t.Fatalf("camelCase finalize: %d %v", status, resp)
	}
	status, resp = a.twirp("GetCacheEntryDownloadURL", map[string]any{"key": "x", "restoreKeys": []string{"cam"}, "version": testVersion})
	if status != 200 || resp["matched_key"] != "camel" {
		t.Fatalf("camelCase lookup: %d %v", status, resp)
	}
}

func TestReadOnlyToken(t *testing.T) {
	te := newTestEnv(t, nil)
	te.api(t, mainScope).save("k", []byte("data"))
	ro := mainScope
	ro.ReadOnly = true
	a := te.api(t, ro)
	status, resp := a.twirp("CreateCacheEntry", map[string]any{"key": "new", "version": testVersion})
	if status != 200 || resp["ok"] != false || !strings.HasPrefix(resp["message"].(string), "cache write denied:") {
		t.Fatalf("read-only create: %d %v", status, resp)
	}
	if st, _ := a.v1Reserve("new", 10); st != 403 {
		t.Fatalf("read-only v1 reserve: %d", st)
	}
	a.mustHave("k", []byte("data"))
	if env := te.svc.Env(a.token); env["ACTIONS_CACHE_MODE"] != "read" {
		t.Fatalf("env %v", env)
	}
	if env := te.svc.Env(te.token(t, mainScope)); env["ACTIONS_CACHE_MODE"] != "" || env["ACTIONS_CACHE_SERVICE_V2"] != "true" ||
		env["ACTIONS_RESULTS_URL"] != te.srv.URL+"/" || env["ACTIONS_CACHE_URL"] != te.srv.URL+"/" {
		t.Fatalf("env %v", env)
	}
}
