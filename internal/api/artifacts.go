package api

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/kilnci/kiln/internal/blobstore"
	"github.com/kilnci/kiln/internal/pipeline"
	"github.com/kilnci/kiln/internal/protocol"
	"github.com/kilnci/kiln/internal/store"
)

// ArtifactPresignTTL is how long a download's presigned URL is valid:
// enough to start it, short enough that a URL leaked from a client's log
// soon opens nothing.
const ArtifactPresignTTL = 15 * time.Minute

// artifactSlack is what an upload may exceed ArtifactMaxBytes by: the
// limit is on the files, the upload is their archive, which zstd rarely
// makes larger, and then by its framing (a few bytes per 128 KiB block)
// and tar's headers (1 KiB or so per file).
func artifactSlack(limit int64) int64 { return limit/64 + 1<<20 }

// ArtifactView is a build artifact as the API shows it.
type ArtifactView struct {
	Job       string    `json:"job"`
	JobID     int64     `json:"job_id"`
	Attempt   int       `json:"attempt"`
	Size      int64     `json:"size"`
	SHA256    string    `json:"sha256"`
	Files     int       `json:"files"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	// URL downloads it (a redirect to the blob store when it presigns).
	URL string `json:"url"`
}

func artifactView(a store.Artifact) ArtifactView {
	return ArtifactView{Job: a.Job, JobID: a.JobID, Attempt: a.Attempt, Size: a.Size, SHA256: a.SHA256, Files: a.Files,
		CreatedAt: a.CreatedAt, ExpiresAt: a.ExpiresAt, URL: fmt.Sprintf("/api/v1/builds/%d/artifacts/%s", a.BuildID, a.Job)}
}

// artifactBlob names the archive of a job attempt: the same name for the
// same attempt, so a retried upload replaces its own.
func artifactBlob(buildID, jobID int64, attempt int) string {
	return fmt.Sprintf("%d/%d-%d.tar.zst", buildID, jobID, attempt)
}

// agentArtifacts takes a job attempt's artifacts: the body is the archive,
// streamed into the blob store (never held in memory) once the attempt's
// lease is checked, then recorded fenced like the agent's other writes.
func (s *Server) agentArtifacts(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	blobs := s.cfg.Artifacts
	if blobs == nil {
		writeError(w, http.StatusNotFound, "not_found", "this server keeps no artifacts")
		return
	}
	q := r.URL.Query()
	attempt, err1 := strconv.Atoi(q.Get("attempt"))
	files, err2 := strconv.Atoi(q.Get("files"))
	if err1 != nil || err2 != nil || attempt <= 0 || files < 0 {
		writeError(w, http.StatusBadRequest, "invalid", "attempt (positive) and files (not negative) are required in the query")
		return
	}
	if r.ContentLength < 0 {
		writeError(w, http.StatusLengthRequired, "invalid", "an artifacts upload needs a Content-Length")
		return
	}
	if limit := s.cfg.ArtifactMaxBytes; limit > 0 && r.ContentLength > limit+artifactSlack(limit) {
		writeError(w, http.StatusRequestEntityTooLarge, protocol.CodeTooLarge, fmt.Sprintf("artifacts archive of %d bytes: over the server's limit of %d bytes (-artifacts-max-bytes)", r.ContentLength, limit))
		return
	}
	writes := s.agentWrites(r)
	if err := writes.CheckLease(r.Context(), id, attempt); err != nil {
		s.jobWriteError(w, r, "artifacts", id, attempt, err)
		return
	}
	j, err := s.store.Job(r.Context(), id)
	if err != nil {
		s.storeError(w, err)
		return
	}
	var spec pipeline.JobSpec
	_ = json.Unmarshal(j.Spec, &spec)
	expire := s.cfg.ArtifactExpire
	if spec.Artifacts != nil && spec.Artifacts.ExpireInSeconds > 0 {
		expire = time.Duration(spec.Artifacts.ExpireInSeconds) * time.Second
	}
	name := artifactBlob(j.BuildID, id, attempt)
	h := sha256.New()
	body := io.TeeReader(http.MaxBytesReader(w, r.Body, r.ContentLength), h)
	if err := blobs.Put(r.Context(), name, body, r.ContentLength); err != nil {
		s.log.Warn("artifacts upload failed", "job", id, "attempt", attempt, "err", err)
		writeError(w, http.StatusBadGateway, "blob_store", "could not store the artifacts: "+err.Error())
		return
	}
	a := &store.Artifact{JobID: id, Attempt: attempt, Blob: name, Size: r.ContentLength, SHA256: hex.EncodeToString(h.Sum(nil)), Files: files, ExpiresAt: time.Now().Add(expire)}
	replaced, err := writes.RecordArtifact(r.Context(), a)
	if err != nil {
		if derr := blobs.Delete(r.Context(), name); derr != nil {
			s.log.Warn("artifacts refused; their blob was not deleted", "blob", name, "err", derr)
		}
		s.jobWriteError(w, r, "artifacts", id, attempt, err)
		return
	}
	if replaced != "" {
		if err := blobs.Delete(r.Context(), replaced); err != nil {
			s.log.Warn("artifacts replaced; the old blob was not deleted", "blob", replaced, "err", err)
		}
	}
	s.watch.notify(j.BuildID)
	writeJSON(w, http.StatusOK, protocol.ArtifactUploaded{Size: a.Size, SHA256: a.SHA256, ExpiresAt: a.ExpiresAt})
}

func (s *Server) listArtifacts(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	if _, err := s.store.Build(r.Context(), id); err != nil {
		s.storeError(w, err)
		return
	}
	list, err := s.store.Artifacts(r.Context(), id)
	if err != nil {
		s.storeError(w, err)
		return
	}
	out := []ArtifactView{}
	now := time.Now()
	for _, a := range list {
		// Expired, not yet deleted (the leader's next pass): gone already.
		if a.ExpiresAt.After(now) {
			out = append(out, artifactView(a))
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// getArtifact downloads a job's artifacts: a redirect to a presigned URL
// when the blob store gives one (the bytes then skip this server), else
// the bytes from its disk.
func (s *Server) getArtifact(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	job := r.PathValue("job")
	a, err := s.store.Artifact(r.Context(), id, job)
	if err != nil {
		s.storeError(w, err)
		return
	}
	if !a.ExpiresAt.After(time.Now()) {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("artifacts of job %q of build %d: expired on %s", job, id, a.ExpiresAt.UTC().Format(time.RFC3339)))
		return
	}
	if s.cfg.Artifacts == nil {
		writeError(w, http.StatusNotFound, "not_found", "this server keeps no artifacts")
		return
	}
	w.Header().Set("X-Kiln-Artifact-Sha256", a.SHA256)
	if u, err := s.cfg.Artifacts.PresignGet(r.Context(), a.Blob, ArtifactPresignTTL); err != nil {
		s.log.Warn("artifacts: presign", "blob", a.Blob, "err", err)
		writeError(w, http.StatusBadGateway, "blob_store", "could not sign the download: "+err.Error())
		return
	} else if u != "" {
		w.Header().Set("Cache-Control", "no-store")
		http.Redirect(w, r, u, http.StatusFound)
		return
	}
	blob, err := s.cfg.Artifacts.Open(r.Context(), a.Blob)
	if errors.Is(err, blobstore.ErrNotFound) {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("artifacts of job %q: the archive is gone", job))
		return
	}
	if err != nil {
		s.storeError(w, err)
		return
	}
	defer blob.Close()
	w.Header().Set("Content-Type", "application/zstd")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="build-%d-%s.tar.zst"`, id, job))
	http.ServeContent(w, r, "", a.CreatedAt, blob)
}
