package server

import (
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
)

// secureDataDir makes the data directory and what the server keeps in it
// readable by the server's user only: the directory 0700, the files at its
// top (the database and its -wal and -shm, the secret key, the tokens, the
// reserve) 0600 at most, the directories there (git mirrors, the cache,
// spooled webhook bodies, a local agent's) 0700 at most, and the cache's
// blobs and directories likewise. Modes left wider by an older Kiln or a
// hand-made directory are narrowed, each logged.
func secureDataDir(dir string, log *slog.Logger) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	fix := func(path string, mode fs.FileMode) error {
		want := mode &^ 0o077
		if mode.IsDir() {
			want = 0o700
		}
		if mode.Perm() == want.Perm() {
			return nil
		}
		if err := os.Chmod(path, want.Perm()); err != nil {
			return fmt.Errorf("data dir: %w", err)
		}
		log.Warn("data directory: narrowed a mode other users could read or write", "path", path, "was", mode.Perm().String(), "now", want.Perm().String())
		return nil
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	if err := fix(dir, fi.Mode()); err != nil {
		return err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() && !e.IsDir() {
			continue // a symlink is the admin's: not followed
		}
		info, err := e.Info()
		if err != nil {
			return fmt.Errorf("data dir: %w", err)
		}
		if err := fix(filepath.Join(dir, e.Name()), info.Mode()); err != nil {
			return err
		}
	}
	// The cache's blobs, the log archive and artifacts are the only files below the
	// top that hold builds' data outside a store of their own (git mirrors
	// are git's).
	for _, sub := range []string{"cache", "log-archive", "artifacts"} {
		root := filepath.Join(dir, sub)
		if _, err := os.Lstat(root); err != nil {
			continue
		}
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil || path == root || !d.Type().IsRegular() && !d.IsDir() {
				return err
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			return fix(path, info.Mode())
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// createPrivate creates path with mode 0600 when it is missing, so that
// SQLite, which gives its -wal and -shm files the database's own mode,
// never makes any of them readable by others.
func createPrivate(path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	return f.Close()
}
