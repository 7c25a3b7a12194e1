package cache

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

// api drives the endpoints with net/http directly, for the edge cases the
// real client never produces.
type api struct {
	t     *testing.T
	te    *testEnv
	token string
}

func (te *testEnv) api(t *testing.T, sc Scope) *api {
	return &api{t: t, te: te, token: te.token(t, sc)}
}

const testVersion = "0123456789abcdef"

// do sends a request and returns the status and body.
func (a *api) do(method, url string, body io.Reader, header map[string]string) (int, []byte) {
	a.t.Helper()
	if strings.HasPrefix(url, "/") {
		url = a.te.srv.URL + url
	}
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		a.t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

func (a *api) auth() map[string]string {
	return map[string]string{"Authorization": "Bearer " + a.token}
}

// twirp calls a v2 method with a JSON body.
func (a *api) twirp(method string, req any) (int, map[string]any) {
	a.t.Helper()
	b, _ := json.Marshal(req)
	h := a.auth()
	h["Content-Type"] = "application/json"
	status, out := a.do("POST", twirpPrefix+method, bytes.NewReader(b), h)
	var resp map[string]any
	if err := json.Unmarshal(out, &resp); err != nil {
		a.t.Fatalf("%s: %d %q is not JSON", method, status, out)
	}
	return status, resp
}

// create reserves key and returns the signed upload URL.
func (a *api) create(key string) string {
	a.t.Helper()
	status, resp := a.twirp("CreateCacheEntry", map[string]any{"key": key, "version": testVersion})
	if status != 200 || resp["ok"] != true {
		a.t.Fatalf("CreateCacheEntry %s: %d %v", key, status, resp)
	}
	return resp["signed_upload_url"].(string)
}

func (a *api) finalize(key string, size int) (int, map[string]any) {
	a.t.Helper()
	return a.twirp("FinalizeCacheEntryUpload", map[string]any{"key": key, "version": testVersion, "size_bytes": fmt.Sprint(size)})
}

func (a *api) putBlob(url string, data []byte) int {
	a.t.Helper()
	status, _ := a.do("PUT", url, bytes.NewReader(data), map[string]string{"x-ms-blob-type": "BlockBlob"})
	return status
}

func (a *api) putBlock(url, id string, data []byte) (int, []byte) {
	a.t.Helper()
	return a.do("PUT", url+"&comp=block&blockid="+id, bytes.NewReader(data), nil)
}

func (a *api) putBlockList(url string, ids ...string) (int, []byte) {
	a.t.Helper()
	var b strings.Builder
	b.WriteString(`<?xml version="1.0" encoding="utf-8"?><BlockList>`)
	for _, id := range ids {
		b.WriteString("<Latest>" + id + "</Latest>")
	}
	b.WriteString("</BlockList>")
	return a.do("PUT", url+"&comp=blocklist", strings.NewReader(b.String()), nil)
}

// save stores data as key through v2 with one Put Blob.
func (a *api) save(key string, data []byte) {
	a.t.Helper()
	if st := a.putBlob(a.create(key), data); st != 201 {
		a.t.Fatalf("Put Blob %s: %d", key, st)
	}
	if st, resp := a.finalize(key, len(data)); st != 200 || resp["ok"] != true {
		a.t.Fatalf("finalize %s: %d %v", key, st, resp)
	}
}

// lookup returns the matched key and downloaded content, or "" on a miss.
func (a *api) lookup(key string, restoreKeys ...string) (string, []byte) {
	a.t.Helper()
	if restoreKeys == nil {
		restoreKeys = []string{}
	}
	status, resp := a.twirp("GetCacheEntryDownloadURL", map[string]any{"key": key, "restore_keys": restoreKeys, "version": testVersion})
	if status != 200 {
		a.t.Fatalf("GetCacheEntryDownloadURL %s: %d %v", key, status, resp)
	}
	if resp["ok"] != true {
		return "", nil
	}
	st, body := a.do("GET", resp["signed_download_url"].(string), nil, nil)
	if st != 200 {
		a.t.Fatalf("download %s: %d %s", key, st, body)
	}
	return resp["matched_key"].(string), body
}

// mustHave checks that key restores exactly data.
func (a *api) mustHave(key string, data []byte) {
	a.t.Helper()
	got, body := a.lookup(key)
	if got != key || !bytes.Equal(body, data) {
		a.t.Fatalf("entry %s: matched %q with %d bytes, want %d bytes", key, got, len(body), len(data))
	}
}

func (a *api) mustMiss(key string) {
	a.t.Helper()
	if got, _ := a.lookup(key); got != "" {
		a.t.Fatalf("entry %s is visible (matched %q)", key, got)
	}
}

// v1 sends a legacy API request.
func (a *api) v1(method, path string, body io.Reader, header map[string]string) (int, []byte) {
	a.t.Helper()
	h := a.auth()
	for k, v := range header {
		h[k] = v
	}
	return a.do(method, v1Prefix+path, body, h)
}

func (a *api) v1Reserve(key string, size int) (int, int64) {
	a.t.Helper()
	b, _ := json.Marshal(map[string]any{"key": key, "version": testVersion, "cacheSize": size})
	status, out := a.v1("POST", "caches", bytes.NewReader(b), map[string]string{"Content-Type": "application/json"})
	var resp struct{ CacheID int64 }
	json.Unmarshal(out, &resp)
	return status, resp.CacheID
}

func (a *api) v1Patch(id int64, start int, data []byte) int {
	a.t.Helper()
	status, _ := a.v1("PATCH", fmt.Sprintf("caches/%d", id), bytes.NewReader(data), map[string]string{
		"Content-Type": "application/octet-stream", "Content-Range": fmt.Sprintf("bytes %d-%d/*", start, start+len(data)-1)})
	return status
}

func (a *api) v1Commit(id int64, size int) (int, []byte) {
	a.t.Helper()
	return a.v1("POST", fmt.Sprintf("caches/%d", id), strings.NewReader(fmt.Sprintf(`{"size":%d}`, size)), map[string]string{"Content-Type": "application/json"})
}

// blockID is a base64 block id, as the Azure SDK makes them.
func blockID(n int) string {
	return base64.StdEncoding.EncodeToString(fmt.Appendf(nil, "block-%06d", n))
}

// sendRaw writes a request head announcing a body of announced bytes, then
// sent (more or fewer bytes), hangs up, and waits until the service has
// finished handling the request.
func (te *testEnv) sendRaw(t *testing.T, method, target string, header map[string]string, announced int, sent []byte) request {
	t.Helper()
	conn, err := net.Dial("tcp", te.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(conn)
	fmt.Fprintf(w, "%s %s HTTP/1.1\r\nHost: cache\r\nContent-Length: %d\r\n", method, target, announced)
	for k, v := range header {
		fmt.Fprintf(w, "%s: %s\r\n", k, v)
	}
	w.WriteString("\r\n")
	w.Write(sent)
	w.Flush()
	conn.Close()
	path, query, _ := strings.Cut(target, "?")
	return te.rec.waitFor(func(r request) bool { return r.Method == method && r.Path == path && r.Query == query })
}

// pathOf strips the scheme and host of a signed URL.
func pathOf(url string) string {
	_, rest, _ := strings.Cut(strings.TrimPrefix(url, "http://"), "/")
	return "/" + rest
}

type httpResult struct {
	status int
	header http.Header
	body   []byte
}

// raw sends body with the given headers; "Transfer-Encoding: chunked" makes
// it send the body without a Content-Length.
func (te *testEnv) raw(method, url, body string, header map[string]string) (*httpResult, error) {
	var r io.Reader = strings.NewReader(body)
	if header["Transfer-Encoding"] == "chunked" {
		r = io.MultiReader(r) // hides the length
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		return nil, err
	}
	for k, v := range header {
		if k != "Transfer-Encoding" {
			req.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return &httpResult{resp.StatusCode, resp.Header, b}, err
}

// newBystanderEnv starts a service holding one finalized entry, bystander,
// that bad input must never harm.
func newBystanderEnv(t *testing.T) (*testEnv, *api) {
	te := newTestEnv(t, nil)
	a := te.api(t, mainScope)
	a.save("bystander", []byte("safe"))
	return te, a
}

// assertUnharmed checks that the bystander is intact and that no
// temporary upload file was left behind.
func (a *api) assertUnharmed() {
	a.t.Helper()
	a.mustHave("bystander", []byte("safe"))
	for _, f := range a.te.files(a.t) {
		if strings.Contains(f, ".upload-") || strings.Contains(f, ".assemble-") {
			a.t.Fatalf("temporary file left: %s", f)
		}
	}
}

// bind makes a report to t, a subtest, until the returned func restores
// its parent. Subtests using it must not run in parallel.
func (a *api) bind(t *testing.T) func() {
	parent := a.t
	a.t = t
	return func() { a.t = parent }
}
