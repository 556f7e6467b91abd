package testbed

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

// Splitter is a running `splitter serve`.
type Splitter struct {
	*Proc
	// AdminClient calls its admin API; AdminAddr is the bound address
	// reported in the ready file.
	*AdminClient
	ConfigPath string
	// GRPCAddr is the bound gRPC address reported in the ready file. It and
	// AdminAddr stay the same across Restart.
	GRPCAddr string

	readyFile string
	extra     []string
}

// AdminClient calls a splitter's admin API: the sidecar's, or the one the
// in-process module serves inside Envoy.
type AdminClient struct {
	AdminAddr string
	// Token, when set, is sent as the admin API's bearer token.
	Token string
	http  *http.Client
}

func newAdminClient(b *Bed) *AdminClient {
	c := &AdminClient{http: &http.Client{Timeout: 5 * time.Second}}
	b.onClose(c.http.CloseIdleConnections)
	return c
}

// readyInfo is the JSON that `splitter serve --ready-file` writes once both
// ports listen.
type readyInfo struct {
	GRPCAddr  string `json:"grpc_addr"`
	AdminAddr string `json:"admin_addr"`
}

// StartupTimeout bounds how long a process may take to become ready.
const StartupTimeout = 20 * time.Second

// StartSplitter runs `binary serve --config configPath` on free loopback
// ports and waits until it has written its ready file and /readyz answers
// 200. extraArgs are appended to the command line.
func (b *Bed) StartSplitter(ctx context.Context, binary, configPath string, extraArgs ...string) (*Splitter, error) {
	return b.StartSplitterEnv(ctx, binary, configPath, nil, extraArgs...)
}

// StartSplitterEnv is StartSplitter with env ("KEY=value") added to the
// splitter's environment, also across Restart. Benchmarks that pin the
// splitter to one core pass GOMAXPROCS=1: the Go runtime sizes GOMAXPROCS
// once from the CPUs it may use at start, so pinning it afterwards leaves
// it running two Ps on one core, unlike a sidecar given one CPU.
func (b *Bed) StartSplitterEnv(ctx context.Context, binary, configPath string, env []string, extraArgs ...string) (*Splitter, error) {
	p, err := b.newProc("splitter", binary)
	if err != nil {
		return nil, err
	}
	p.Env = append(p.Env, env...)
	s := &Splitter{
		Proc:        p,
		AdminClient: newAdminClient(b),
		ConfigPath:  configPath,
		readyFile:   b.path("splitter-ready", ".json"),
		extra:       extraArgs,
	}
	if err := s.start(ctx, "127.0.0.1:0", "127.0.0.1:0"); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Splitter) start(ctx context.Context, grpcAddr, adminAddr string) error {
	if err := os.Remove(s.readyFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	s.Args = []string{"serve"}
	if s.ConfigPath != "" {
		// Without one (fleet mode) the routing configuration comes from etcd.
		s.Args = append(s.Args, "--config", s.ConfigPath)
	}
	s.Args = append(append(s.Args,
		"--grpc-addr", grpcAddr,
		"--admin-addr", adminAddr,
		"--ready-file", s.readyFile,
		// Stopping a test's splitter need not wait; tests of the drain
		// pass their own --drain-delay, which wins (it comes later).
		"--drain-delay", "0s",
	), s.extra...)
	if err := s.Proc.Start(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, StartupTimeout)
	defer cancel()
	var info readyInfo
	err := s.poll(ctx, "ready file", func() error {
		data, err := os.ReadFile(s.readyFile)
		if err != nil {
			return err
		}
		// The file may be caught half-written by a writer that is not atomic.
		if err := json.Unmarshal(data, &info); err != nil {
			return err
		}
		if info.GRPCAddr == "" || info.AdminAddr == "" {
			return fmt.Errorf("ready file %s lacks an address: %s", s.readyFile, data)
		}
		return nil
	})
	if err != nil {
		_ = s.Kill()
		return err
	}
	// A restart comes back on the same addresses, and samplers read them
	// meanwhile (AdminURL): write them only when they change.
	if s.GRPCAddr != info.GRPCAddr {
		s.GRPCAddr = info.GRPCAddr
	}
	if s.AdminAddr != info.AdminAddr {
		s.AdminAddr = info.AdminAddr
	}
	err = s.poll(ctx, "/readyz", func() error {
		code, body, err := s.do(ctx, http.MethodGet, "/readyz", nil)
		if err != nil {
			return err
		}
		if code != http.StatusOK {
			return fmt.Errorf("/readyz: %d %s", code, body)
		}
		return nil
	})
	if err != nil {
		_ = s.Kill()
		return err
	}
	return nil
}

// Restart kills the splitter if it runs and starts it again on the same
// gRPC and admin ports, so Envoy's statically configured cluster finds it.
func (s *Splitter) Restart(ctx context.Context) error {
	if err := s.Kill(); err != nil {
		return err
	}
	return s.start(ctx, s.GRPCAddr, s.AdminAddr)
}

// RestartAs stops the splitter as a rolling upgrade does (SIGTERM, and
// the wait for its exit) and starts binary in its place, with the same
// arguments on the same ports: another release of splitter, in the
// upgrade tests.
func (s *Splitter) RestartAs(ctx context.Context, binary string) error {
	sctx, cancel := context.WithTimeout(ctx, StartupTimeout)
	err := s.Stop(sctx)
	cancel()
	if err != nil {
		return err
	}
	s.Bin = binary
	return s.start(ctx, s.GRPCAddr, s.AdminAddr)
}

// AdminURL is the admin API's base URL plus path.
func (s *AdminClient) AdminURL(path string) string { return "http://" + s.AdminAddr + path }

// Admin calls the admin API with an optional JSON body; a non-2xx answer is
// an error that carries the body. out, if not nil, receives the JSON reply.
func (s *AdminClient) Admin(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(data)
	}
	code, reply, err := s.do(ctx, method, path, rd)
	if err != nil {
		return err
	}
	if code/100 != 2 {
		return fmt.Errorf("admin %s %s: %d %s", method, path, code, strings.TrimSpace(string(reply)))
	}
	if out != nil {
		if err := json.Unmarshal(reply, out); err != nil {
			return fmt.Errorf("admin %s %s: decode %q: %w", method, path, reply, err)
		}
	}
	return nil
}

func (s *AdminClient) do(ctx context.Context, method, path string, body io.Reader) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, s.AdminURL(path), body)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if s.Token != "" {
		req.Header.Set("Authorization", "Bearer "+s.Token)
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, data, err
}

// SetCanary sets a two-version service's canary share through the admin
// API (PUT /v1/services/{name}/canary).
func (s *AdminClient) SetCanary(ctx context.Context, service string, percentage float64) error {
	return s.Admin(ctx, http.MethodPut, "/v1/services/"+service+"/canary", map[string]float64{"percentage": percentage}, nil)
}
