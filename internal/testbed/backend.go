package testbed

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/trafficsplit/splitter/examples/backend/echo"
)

// Backend is an in-process example backend (examples/backend/echo) on a
// free loopback port.
type Backend struct {
	Version string
	Addr    string // 127.0.0.1:port
	// Faults makes it fail on command (Fail).
	Faults *echo.Faults
	srv    *http.Server
}

// Fail makes percent of the backend's requests from now on answer 500 (0
// heals it).
func (be *Backend) Fail(percent float64) { be.Faults.Set(percent, false) }

// StartBackend serves echo.Handler(version) on 127.0.0.1 until the bed closes.
func (b *Bed) StartBackend(version string) (*Backend, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	faults := &echo.Faults{}
	be := &Backend{
		Version: version,
		Addr:    ln.Addr().String(),
		Faults:  faults,
		srv:     &http.Server{Handler: faults.Wrap(echo.Handler(version)), ReadHeaderTimeout: 5 * time.Second},
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := be.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			b.log.Warn("backend stopped", "version", version, "err", err)
		}
	}()
	b.onClose(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := be.srv.Shutdown(ctx); err != nil {
			_ = be.srv.Close()
		}
		<-done
	})
	return be, nil
}

// StartBackends starts one backend per version, in order.
func (b *Bed) StartBackends(versions ...string) ([]*Backend, error) {
	out := make([]*Backend, 0, len(versions))
	for _, v := range versions {
		be, err := b.StartBackend(v)
		if err != nil {
			return nil, err
		}
		out = append(out, be)
	}
	return out, nil
}

// FreePort returns a loopback TCP port that was free a moment ago, for a
// process whose address another must know before it starts (Envoy's admin
// port, which the splitter reads rollout signals from).
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
