// Package fsutil holds the two file operations every part of splitter
// that touches the disk needs: reading a file with a size cap, and
// replacing a file atomically.
package fsutil

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// ReadCapped reads at most limit bytes of path; a bigger file is an error
// that names the path and says how big it is.
func ReadCapped(path string, limit int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, int64(limit)+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(data) > limit {
		// Only limit+1 bytes were read: ask the file system for the size.
		if fi, err := f.Stat(); err == nil {
			return nil, fmt.Errorf("%s: file is %d bytes, more than the %d-byte limit", path, fi.Size(), limit)
		}
		return nil, fmt.Errorf("%s: file is larger than the %d-byte limit", path, limit)
	}
	return data, nil
}

// WriteAtomic replaces path with data: a temporary file in the same
// directory is written with mode perm, synced and renamed over path, so a
// crash or a concurrent reader sees the old file or the new one, never a
// torn one. rename is os.Rename when nil (tests inject failures).
func WriteAtomic(path string, data []byte, perm os.FileMode, rename func(oldpath, newpath string) error) (err error) {
	if rename == nil {
		rename = os.Rename
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err = tmp.Chmod(perm); err != nil {
		return err
	}
	if _, err = tmp.Write(data); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	if err = rename(tmp.Name(), path); err != nil {
		return err
	}
	// Persist the rename itself; not every file system supports syncing a
	// directory, and the data is already safe, so a failure here is ignored.
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
