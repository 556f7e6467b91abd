package testbed

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
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
	// requests and shadows count what reached it (not /healthz): every
	// request, and those Envoy mirrored here (Envoy appends "-shadow" to
	// a mirrored copy's host).
	requests, shadows atomic.Int64
}

// Requests returns how many requests reached the backend (not /healthz),
// and how many of them were copies Envoy mirrored to it.
func (be *Backend) Requests() (all, shadow int64) { return be.requests.Load(), be.shadows.Load() }

// count wraps h to count the requests that reach the backend.
func (be *Backend) count(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			be.requests.Add(1)
			if strings.Contains(r.Host, "-shadow") {
				be.shadows.Add(1)
			}
		}
		h.ServeHTTP(w, r)
	})
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
	be := &Backend{Version: version, Addr: ln.Addr().String(), Faults: faults}
	be.srv = &http.Server{Handler: be.count(faults.Wrap(echo.Handler(version))), ReadHeaderTimeout: 5 * time.Second}
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

// Slow makes every request of the backend from now on wait d before it is
// answered (0: none); Faults.FirstSlow says when the first slowed one
// arrived.
func (be *Backend) Slow(d time.Duration) { be.Faults.SetDelay(d) }
