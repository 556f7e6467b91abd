package testbed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/trafficsplit/splitter/envoy"
)

// EnvoyOptions are the command-line knobs of StartEnvoy.
type EnvoyOptions struct {
	// Concurrency is Envoy's worker count (default 1).
	Concurrency int
	// LogLevel defaults to "warn".
	LogLevel string
	// Edit, if set, rewrites the rendered bootstrap before Envoy reads it;
	// negative-control tests use it to remove a protection.
	Edit func(bootstrap []byte) ([]byte, error)
	// Render, if set, renders the bootstrap in place of envoy.Render: the
	// upgrade tests pass an earlier release's renderer
	// (Release.RenderBootstrap), to run Envoy on what that release shipped.
	Render func(envoy.Params) ([]byte, error)
	// Env ("KEY=value") is added to Envoy's environment, e.g.
	// ENVOY_DYNAMIC_MODULES_SEARCH_PATH for the module.
	Env []string
	// HotRestart leaves Envoy's hot restart on (it is off by default: each
	// bed's Envoy is independent), so that HotRestart can start the next
	// epoch; DrainTime and ParentShutdownTime are Envoy's
	// --drain-time-s and --parent-shutdown-time-s (whole seconds; 0:
	// Envoy's defaults of 600 and 900).
	HotRestart                    bool
	DrainTime, ParentShutdownTime time.Duration
}

// Envoy is a running Envoy.
type Envoy struct {
	*Proc
	Params     envoy.Params // as rendered (loopback, real ports after start)
	ConfigPath string
	// AdminAddr and ListenAddr are the bound host:port pairs.
	AdminAddr  string
	ListenAddr string

	opts      EnvoyOptions
	adminFile string
	http      *http.Client
	bed       *Bed
	// baseID is --base-id: hot restart epochs share it; epoch is
	// --restart-epoch.
	baseID uint32
	epoch  int
}

// LoopbackParams returns bootstrap parameters for a loopback bed: STATIC
// clusters, listener and admin on 127.0.0.1 port 0 (Envoy picks; StartEnvoy
// reads the real ports back), no access log, and the splitter's default
// headers as the mutable and stripped ones. backends[0] is the stable version.
// For ModeWeighted the weights are 80/20 with two backends, else equal
// shares (the remainder to the first); change p.Backends[i].Weight to taste.
func LoopbackParams(mode envoy.Mode, splitterGRPC string, backends ...*Backend) (envoy.Params, error) {
	p := envoy.Params{
		Name:           "loopback " + string(mode),
		Mode:           mode,
		Listen:         envoy.Addr{Host: "127.0.0.1"},
		Admin:          envoy.Addr{Host: "127.0.0.1"},
		MessageTimeout: envoy.DefaultMessageTimeout,
		RouteHeader:    envoy.DefaultRouteHeader,
		MutableHeaders: []string{envoy.DefaultRouteHeader, envoy.DefaultReasonHeader, envoy.DefaultVariantHeader},
		StripHeaders:   []string{envoy.DefaultRouteHeader, envoy.DefaultReasonHeader, envoy.DefaultVariantHeader},
	}
	if mode == envoy.ModeExtProc || mode == envoy.ModeExtAuthz {
		a, err := envoy.ParseAddr(splitterGRPC)
		if err != nil {
			return p, fmt.Errorf("splitter address: %w", err)
		}
		p.Splitter = a
	}
	for _, b := range backends {
		a, err := envoy.ParseAddr(b.Addr)
		if err != nil {
			return p, fmt.Errorf("backend %s: %w", b.Version, err)
		}
		p.Backends = append(p.Backends, envoy.Backend{Version: b.Version, Addr: a})
	}
	if mode == envoy.ModeWeighted && len(p.Backends) > 0 {
		share := 100 / len(p.Backends)
		for i := range p.Backends {
			p.Backends[i].Weight = share
		}
		p.Backends[0].Weight += 100 - share*len(p.Backends)
		if len(p.Backends) == 2 {
			p.Backends[0].Weight, p.Backends[1].Weight = 80, 20
		}
	}
	return p, nil
}

// StartEnvoy renders p into the bed's directory and runs bin on it. It waits
// until the admin interface says LIVE and the listener is bound.
func (b *Bed) StartEnvoy(ctx context.Context, bin string, p envoy.Params, o EnvoyOptions) (*Envoy, error) {
	if o.Concurrency <= 0 {
		o.Concurrency = 1
	}
	if o.LogLevel == "" {
		o.LogLevel = "warn"
	}
	proc, err := b.newProc("envoy", bin)
	if err != nil {
		return nil, err
	}
	proc.Env = append(proc.Env, o.Env...)
	e := &Envoy{
		Proc:       proc,
		Params:     p,
		ConfigPath: b.path("envoy", ".yaml"),
		adminFile:  b.path("envoy-admin", ".txt"),
		opts:       o,
		http:       &http.Client{Timeout: 5 * time.Second},
		bed:        b,
	}
	// --base-id keeps shared-memory names apart; the config path is unique
	// per Envoy across beds and processes.
	h := fnv.New32a()
	_, _ = h.Write([]byte(e.ConfigPath))
	e.baseID = h.Sum32() % 1_000_000
	b.onClose(e.http.CloseIdleConnections)
	if err := e.start(ctx); err != nil {
		return nil, err
	}
	return e, nil
}

func (e *Envoy) start(ctx context.Context) error {
	render := envoy.Render
	if e.opts.Render != nil {
		render = e.opts.Render
	}
	cfg, err := render(e.Params)
	if err != nil {
		return err
	}
	if e.opts.Edit != nil {
		if cfg, err = e.opts.Edit(cfg); err != nil {
			return fmt.Errorf("envoy: edit bootstrap: %w", err)
		}
	}
	if err := os.WriteFile(e.ConfigPath, cfg, 0o644); err != nil {
		return err
	}
	if err := os.Remove(e.adminFile); err != nil && !os.IsNotExist(err) {
		return err
	}
	e.Args = []string{
		"-c", e.ConfigPath,
		"--concurrency", strconv.Itoa(e.opts.Concurrency),
		"--base-id", strconv.FormatUint(uint64(e.baseID), 10),
		"--log-level", e.opts.LogLevel,
		"--admin-address-path", e.adminFile,
	}
	if !e.opts.HotRestart {
		// Each bed's Envoy is independent: no shared memory with another one.
		e.Args = append(e.Args, "--disable-hot-restart")
	} else {
		e.Args = append(e.Args, "--restart-epoch", strconv.Itoa(e.epoch))
		if e.opts.DrainTime > 0 {
			e.Args = append(e.Args, "--drain-time-s", strconv.Itoa(int(e.opts.DrainTime.Seconds())))
		}
		if e.opts.ParentShutdownTime > 0 {
			e.Args = append(e.Args, "--parent-shutdown-time-s", strconv.Itoa(int(e.opts.ParentShutdownTime.Seconds())))
		}
	}
	if err := e.Proc.Start(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, StartupTimeout)
	defer cancel()
	err = e.poll(ctx, "admin LIVE and listener bound", func() error {
		if e.AdminAddr == "" {
			data, err := os.ReadFile(e.adminFile)
			if err != nil || len(strings.TrimSpace(string(data))) == 0 {
				return fmt.Errorf("no admin address file yet")
			}
			e.AdminAddr = strings.TrimSpace(string(data))
		}
		body, err := e.adminGet(ctx, "/ready")
		if err != nil {
			return err
		}
		if strings.TrimSpace(body) != "LIVE" {
			return fmt.Errorf("/ready: %s", body)
		}
		port, err := e.listenerPort(ctx)
		if err != nil {
			return err
		}
		e.ListenAddr = "127.0.0.1:" + strconv.Itoa(port)
		return nil
	})
	if err != nil {
		_ = e.Kill()
		return err
	}
	// A restart must come back on the same ports so clients keep their URL.
	lp, _ := strconv.Atoi(e.ListenAddr[strings.LastIndexByte(e.ListenAddr, ':')+1:])
	ap, _ := envoy.ParseAddr(e.AdminAddr)
	e.Params.Listen.Port, e.Params.Admin.Port = lp, ap.Port
	return nil
}

// Restart kills Envoy and starts it again on the same ports.
func (e *Envoy) Restart(ctx context.Context) error {
	if err := e.Kill(); err != nil {
		return err
	}
	return e.start(ctx)
}

// HotRestart starts the next epoch of e (started with
// EnvoyOptions.HotRestart): a new Envoy process on the same bootstrap,
// ports and --base-id, with --restart-epoch one more, while e runs. Envoy
// hands the listeners over and, after the drain and parent shutdown
// times, the new epoch stops e. The bootstrap is rendered again from e's
// parameters with the ports e bound (and e's Edit). It returns once the
// new epoch is LIVE.
func (e *Envoy) HotRestart(ctx context.Context) (*Envoy, error) {
	return e.HotRestartEdited(ctx, e.opts.Edit)
}

// HotRestartEdited is HotRestart with edit, instead of e's Edit, applied
// to the new epoch's bootstrap (a negative test breaks it, say). When the
// new epoch fails, the error says so and e keeps running.
func (e *Envoy) HotRestartEdited(ctx context.Context, edit func([]byte) ([]byte, error)) (*Envoy, error) {
	return e.hotRestart(ctx, edit, e.opts.Env)
}

// HotRestartEnv is HotRestart with env in place of e's environment
// additions: the upgrade tests point the new epoch at another build of
// the module (ModuleSearchPath).
func (e *Envoy) HotRestartEnv(ctx context.Context, env []string) (*Envoy, error) {
	return e.hotRestart(ctx, e.opts.Edit, env)
}

func (e *Envoy) hotRestart(ctx context.Context, edit func([]byte) ([]byte, error), env []string) (*Envoy, error) {
	if !e.opts.HotRestart {
		return nil, errors.New("envoy: hot restart is off for this Envoy (EnvoyOptions.HotRestart)")
	}
	proc, err := e.bed.newProc(fmt.Sprintf("envoy-epoch%d", e.epoch+1), e.Bin)
	if err != nil {
		return nil, err
	}
	proc.Env = append(proc.Env, env...)
	next := &Envoy{
		Proc:       proc,
		Params:     e.Params, // the ports the parent bound
		ConfigPath: e.bed.path("envoy", ".yaml"),
		adminFile:  e.bed.path("envoy-admin", ".txt"),
		opts:       e.opts,
		http:       &http.Client{Timeout: 5 * time.Second},
		bed:        e.bed,
		baseID:     e.baseID,
		epoch:      e.epoch + 1,
	}
	next.opts.Edit, next.opts.Env = edit, env
	e.bed.onClose(next.http.CloseIdleConnections)
	if err := next.start(ctx); err != nil {
		return nil, err
	}
	return next, nil
}

// URL is the listener's base URL plus path.
func (e *Envoy) URL(path string) string { return "http://" + e.ListenAddr + path }

func (e *Envoy) adminGet(ctx context.Context, path string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+e.AdminAddr+path, nil)
	if err != nil {
		return "", err
	}
	resp, err := e.http.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return string(data), fmt.Errorf("admin %s: %d %s", path, resp.StatusCode, strings.TrimSpace(string(data)))
	}
	return string(data), nil
}

func (e *Envoy) listenerPort(ctx context.Context) (int, error) {
	body, err := e.adminGet(ctx, "/listeners?format=json")
	if err != nil {
		return 0, err
	}
	var ls struct {
		ListenerStatuses []struct {
			Name         string `json:"name"`
			LocalAddress struct {
				SocketAddress struct {
					PortValue int `json:"port_value"`
				} `json:"socket_address"`
			} `json:"local_address"`
		} `json:"listener_statuses"`
	}
	if err := json.Unmarshal([]byte(body), &ls); err != nil {
		return 0, fmt.Errorf("/listeners: %w", err)
	}
	for _, l := range ls.ListenerStatuses {
		if l.Name == "ingress" && l.LocalAddress.SocketAddress.PortValue != 0 {
			return l.LocalAddress.SocketAddress.PortValue, nil
		}
	}
	return 0, fmt.Errorf("/listeners: ingress not bound yet: %s", body)
}

// Stats returns Envoy's counters and gauges whose names contain filter
// (all of them for "").
func (e *Envoy) Stats(ctx context.Context, filter string) (map[string]uint64, error) {
	path := "/stats"
	if filter != "" {
		path += "?filter=" + url.QueryEscape(regexp.QuoteMeta(filter))
	}
	body, err := e.adminGet(ctx, path)
	if err != nil {
		return nil, err
	}
	out := map[string]uint64{}
	for line := range strings.Lines(body) {
		name, val, ok := strings.Cut(strings.TrimSpace(line), ": ")
		if !ok {
			continue
		}
		if n, err := strconv.ParseUint(val, 10, 64); err == nil {
			out[name] = n
		}
	}
	return out, nil
}
