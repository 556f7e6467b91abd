//go:build !linux

package module

import (
	"errors"
	"net"
)

// handoverSupported: the handover socket needs Linux's abstract namespace
// and peer credentials.
const handoverSupported = false

var errHandoverUnsupported = errors.New("hot restart handover needs Linux")

func samePeerUser(net.Conn) error { return errHandoverUnsupported }
