package cache

import "syscall"

// statDisk measures the filesystem holding dir with statfs(2). Free is
// what an unprivileged writer can use (f_bavail).
func statDisk(dir string) (DiskUsage, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return DiskUsage{}, err
	}
	bs := uint64(st.Bsize)
	return DiskUsage{Total: st.Blocks * bs, Free: st.Bavail * bs}, nil
}
