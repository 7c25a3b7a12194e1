package api_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/kilnci/kiln/internal/api"
	"github.com/kilnci/kiln/internal/protocol"
	"github.com/kilnci/kiln/internal/server"
	"github.com/kilnci/kiln/internal/store"
)

// TestAgentArtifactsUpload: the upload of a job attempt's artifacts is
// fenced like the agent's other writes (another agent token: 403, another
// attempt: 409, stored nothing), bounded, needs a length; the holder's is
// stored, listed and downloaded from the disk as sent.
func TestAgentArtifactsUpload(t *testing.T) {
	e := newEnv(t, func(c *server.Config) { c.ArtifactMaxBytes = 1000 })
	b, a := e.runningJob()
	path := func(attempt int, query string) string {
		return fmt.Sprintf("%s/jobs/%d%s?attempt=%d%s", protocol.Prefix, a.JobID, protocol.ArtifactsPath, attempt, query)
	}
	archive := []byte("the archive's bytes (the server stores them as sent)")
	other := e.agentToken("intruder")
	e.do(other, "POST", path(a.Attempt, "&files=1"), archive, nil).wantError(t, http.StatusForbidden, protocol.CodeNotYourLease, "not your lease")
	e.do(e.agent, "POST", path(a.Attempt+1, "&files=1"), archive, nil).wantError(t, http.StatusConflict, protocol.CodeStaleAttempt)
	e.do(e.agent, "POST", path(a.Attempt, ""), archive, nil).wantError(t, http.StatusBadRequest, "invalid", "files")
	e.do(e.admin, "POST", path(a.Attempt, "&files=1"), archive, nil).wantError(t, http.StatusForbidden, "forbidden")
	e.do(e.agent, "POST", path(a.Attempt, "&files=1"), bytes.Repeat([]byte{1}, 2<<20), nil).wantError(t, http.StatusRequestEntityTooLarge, protocol.CodeTooLarge, "-artifacts-max-bytes")
	// No Content-Length (a chunked body): refused before anything is read.
	req, _ := http.NewRequest("POST", e.url+path(a.Attempt, "&files=1"), io.MultiReader(bytes.NewReader(archive)))
	req.Header.Set("Authorization", "Bearer "+e.agent)
	req.Header.Set(protocol.Header, protocol.Version)
	if resp, err := e.http.Do(req); err != nil || resp.StatusCode != http.StatusLengthRequired {
		t.Fatalf("chunked upload: %v %v, want 411", resp, err)
	} else {
		resp.Body.Close()
	}
	var list []api.ArtifactView
	e.api("GET", fmt.Sprintf("/api/v1/builds/%d/artifacts", b.ID), nil).want(t, http.StatusOK, &list)
	if len(list) != 0 {
		t.Fatalf("refused uploads were stored: %s", dump(list))
	}

	var up protocol.ArtifactUploaded
	e.do(e.agent, "POST", path(a.Attempt, "&files=3"), archive, nil).want(t, http.StatusOK, &up)
	sum := sha256.Sum256(archive)
	if up.Size != int64(len(archive)) || up.SHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("uploaded: %+v", up)
	}
	e.api("GET", fmt.Sprintf("/api/v1/builds/%d/artifacts", b.ID), nil).want(t, http.StatusOK, &list)
	if len(list) != 1 || list[0].Job != "test" || list[0].Files != 3 || list[0].Size != up.Size || list[0].SHA256 != up.SHA256 || list[0].Attempt != a.Attempt ||
		list[0].URL != fmt.Sprintf("/api/v1/builds/%d/artifacts/test", b.ID) {
		t.Fatalf("listed: %s", dump(list))
	}
	r := e.api("GET", list[0].URL, nil)
	if r.code != http.StatusOK || !bytes.Equal(r.body, archive) || r.header.Get("X-Kiln-Artifact-Sha256") != up.SHA256 || r.header.Get("Content-Type") != "application/zstd" {
		t.Fatalf("download: HTTP %d %q %v", r.code, r.body, r.header)
	}
	e.api("GET", fmt.Sprintf("/api/v1/builds/%d/artifacts/nope", b.ID), nil).wantError(t, http.StatusNotFound, "not_found")
	e.api("GET", "/api/v1/builds/999/artifacts", nil).wantError(t, http.StatusNotFound, "not_found")
	e.do(e.agent, "GET", list[0].URL, nil, nil).wantError(t, http.StatusForbidden, "forbidden")

	// Expired (the leader's pass not yet run): neither listed nor served.
	expired := &store.Artifact{JobID: a.JobID, Attempt: a.Attempt, Blob: fmt.Sprintf("%d/%d-%d.tar.zst", b.ID, a.JobID, a.Attempt), Size: up.Size, SHA256: up.SHA256, ExpiresAt: time.Now().Add(-time.Minute)}
	if _, err := e.srv.Store.AgentWrites(0).RecordArtifact(context.Background(), expired); err != nil {
		t.Fatal(err)
	}
	e.api("GET", fmt.Sprintf("/api/v1/builds/%d/artifacts", b.ID), nil).want(t, http.StatusOK, &list)
	if len(list) != 0 {
		t.Fatalf("an expired artifact listed: %s", dump(list))
	}
	e.api("GET", fmt.Sprintf("/api/v1/builds/%d/artifacts/test", b.ID), nil).wantError(t, http.StatusNotFound, "not_found", "expired on")

	// Once the attempt is over, no more uploads.
	e.finish(a.JobID, a.Attempt, store.StatusSuccess).want(t, http.StatusNoContent, nil)
	e.do(e.agent, "POST", path(a.Attempt, "&files=1"), archive, nil).wantError(t, http.StatusConflict, protocol.CodeStaleAttempt)
}
