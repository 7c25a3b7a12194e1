package server

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/kilnci/kiln/internal/blobstore"
)

// openArtifacts opens where build artifacts' archives are kept: the
// cache's S3 bucket under ArtifactsS3Prefix when CacheS3 is set (one S3
// configuration for everything Kiln keeps there), else DATA_DIR/artifacts.
func openArtifacts(ctx context.Context, cfg Config) (blobstore.Store, error) {
	if cfg.CacheS3.Enabled() {
		s3cfg := cfg.CacheS3
		s3cfg.Prefix = cfg.ArtifactsS3Prefix
		blobs, err := blobstore.NewS3(ctx, s3cfg)
		if err != nil {
			return nil, fmt.Errorf("artifacts: %w", err)
		}
		return blobs, nil
	}
	dir := filepath.Join(cfg.DataDir, "artifacts")
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("artifacts: %w", err)
	}
	blobs, err := blobstore.NewDisk(dir)
	if err != nil {
		return nil, fmt.Errorf("artifacts: %w", err)
	}
	return blobs, nil
}

// artifactsBatch is how many expired artifacts one round deletes at most.
const artifactsBatch = 100

// ExpireArtifacts deletes the artifacts expired at now: each record first,
// then its blob (a failed blob delete leaves a blob over, never a record
// without its archive). It returns how many it deleted.
func (s *Server) ExpireArtifacts(ctx context.Context, now time.Time) (int, error) {
	n := 0
	for {
		list, err := s.Store.ExpiredArtifacts(ctx, now, artifactsBatch)
		if err != nil || len(list) == 0 {
			return n, err
		}
		for _, a := range list {
			ok, err := s.Store.DeleteArtifact(ctx, a.ID, a.Blob)
			if err != nil {
				return n, err
			}
			if !ok {
				continue // replaced meanwhile: its new blob is the record's
			}
			n++
			if err := s.artifacts.Delete(ctx, a.Blob); err != nil {
				s.log.Warn("artifacts expired: the blob was not deleted", "blob", a.Blob, "err", err)
			}
		}
		if len(list) < artifactsBatch {
			return n, nil
		}
	}
}

// artifactsLoop expires artifacts now and then every ArtifactsEvery.
func (s *Server) artifactsLoop(ctx context.Context) {
	every := s.cfg.ArtifactsEvery
	if every <= 0 {
		every = 10 * time.Minute
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if n, err := s.ExpireArtifacts(ctx, time.Now()); err != nil && ctx.Err() == nil {
			s.log.Warn("artifacts expiry", "err", err)
		} else if n > 0 {
			s.log.Info("artifacts expiry: deleted expired artifacts", "artifacts", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
