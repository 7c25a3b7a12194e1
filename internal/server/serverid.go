package server

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/kilnci/kiln/internal/leader"
)

// claimDataDir makes this process the one server of dir and returns the
// server's id, kept in DATA_DIR/server.id: a server restarted on its data
// dir (after a crash, a kill -9) is the same holder of the leader lease,
// so it takes the background work back at once instead of waiting for
// the dead process's lease to expire. The file stays locked (flock) while
// the server runs, so a second server on the same data dir is refused:
// two would share the SQLite file, the git mirrors, and the id.
func claimDataDir(dir string) (id string, release func(), err error) {
	path := filepath.Join(dir, "server.id")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return "", nil, fmt.Errorf("data dir: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return "", nil, fmt.Errorf("data dir %s is in use by another kiln server (or kiln up): give each server a data dir of its own", dir)
		}
		return "", nil, fmt.Errorf("data dir: lock %s: %w", path, err)
	}
	b := make([]byte, 256)
	n, _ := f.ReadAt(b, 0)
	id = strings.TrimSpace(string(b[:n]))
	if id == "" {
		id = leader.NewHolderID()
		if _, err := f.WriteAt([]byte(id+"\n"), 0); err != nil {
			f.Close()
			return "", nil, fmt.Errorf("data dir: write %s: %w", path, err)
		}
	}
	return id, func() { f.Close() }, nil
}
