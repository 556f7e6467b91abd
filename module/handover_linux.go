package module

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
)

// handoverSupported: the handover socket lives in Linux's abstract
// namespace.
const handoverSupported = true

var errHandoverUnsupported = errors.New("hot restart handover needs Linux")

// samePeerUser checks that the process at the other end of the handover
// socket runs as this one's user (SO_PEERCRED): an abstract socket has no
// file permissions.
func samePeerUser(c net.Conn) error {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return errors.New("not a Unix socket")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return err
	}
	var cred *syscall.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return err
	}
	if cerr != nil {
		return cerr
	}
	if int(cred.Uid) != os.Getuid() {
		return fmt.Errorf("peer pid %d runs as uid %d, not %d", cred.Pid, cred.Uid, os.Getuid())
	}
	return nil
}
