package console

import (
	"context"
	"errors"
	"time"

	"github.com/trafficsplit/splitter/internal/admin"
	"github.com/trafficsplit/splitter/internal/rollout"
	"github.com/trafficsplit/splitter/internal/store"
	"github.com/trafficsplit/splitter/split"
)

// fleetTimeout bounds the read of the fleet's replicas for one state.
const fleetTimeout = time.Second

// State is the console's one document: GET /v1/console/state, and every
// "state" event of the stream.
type State struct {
	// Loaded is false before the first configuration (the page says so).
	Loaded   bool           `json:"loaded"`
	Config   *ConfigView    `json:"config"`
	Auth     AuthView       `json:"auth"`
	Signals  SignalsView    `json:"signals"`
	Services []ServiceState `json:"services"`
	// Fleet is set in fleet mode (etcd) only.
	Fleet *FleetView `json:"fleet,omitempty"`
	// Audit is the recent changes: admin mutations that passed the door
	// (accepted or not) and rollout transitions, newest first.
	Audit []admin.AuditEvent `json:"audit"`
	// Refusals are the attempts refused at the door (no or a wrong token,
	// cross-site, a non-loopback Host), kept apart so that they cannot
	// push the changes out.
	Refusals RefusalsView `json:"refusals"`
}

// RefusalsView counts the refusals since the process started and shows
// the last few.
type RefusalsView struct {
	Count  uint64             `json:"count"`
	Recent []admin.AuditEvent `json:"recent"`
}

// ConfigView is where the configuration in force came from.
type ConfigView struct {
	SHA256            string     `json:"sha256"`
	Source            string     `json:"source"`
	LoadedAt          time.Time  `json:"loaded_at"`
	Generation        uint64     `json:"generation"`
	Revision          int64      `json:"revision,omitempty"`
	LastReloadError   string     `json:"last_reload_error,omitempty"`
	LastReloadErrorAt *time.Time `json:"last_reload_error_at,omitempty"`
}

// AuthView tells the page whether changes need the admin token.
type AuthView struct {
	TokenRequired bool `json:"token_required"`
}

// SignalsView is where per-version rates come from and how they are
// sampled.
type SignalsView struct {
	Source          string    `json:"source"` // "" when there is none
	Error           string    `json:"error,omitempty"`
	MetricsError    string    `json:"metrics_error,omitempty"`
	IntervalSeconds float64   `json:"interval_seconds"`
	Buckets         int       `json:"buckets"`
	SampledAt       time.Time `json:"sampled_at,omitzero"`
}

// ServiceState is one service as the page shows it.
type ServiceState struct {
	Name   string `json:"name"`
	Stable string `json:"stable"`
	// Canary is the other version when the service has exactly two (the
	// canary control is shown then), else "".
	Canary   string          `json:"canary"`
	Versions []VersionWeight `json:"versions"`
	Override bool            `json:"override"`
	// Rollout is set for a service with a rollout block.
	Rollout      *RolloutView `json:"rollout,omitempty"`
	RolloutError string       `json:"rollout_error,omitempty"`
	Traffic      *Traffic     `json:"traffic,omitempty"`
	Reasons      []Reason     `json:"reasons"`
	// Mirror is the share of requests copied to a version (a dark
	// launch), when the service mirrors; AssignCookie the cookie keys are
	// given in to clients without one (sticky.assign), "" when none.
	Mirror       *MirrorView `json:"mirror,omitempty"`
	AssignCookie string      `json:"assign_cookie,omitempty"`
	// MirrorRoutes are the runtime mirror routes, in the order they are
	// tried (before Mirror).
	MirrorRoutes []MirrorRouteView `json:"mirror_routes,omitempty"`
}

// MirrorRouteView is a runtime mirror route: the share of the requests
// matching When copied to Version, and the controller that owns it.
type MirrorRouteView struct {
	Name    string  `json:"name"`
	Version string  `json:"version"`
	Percent float64 `json:"percent"`
	When    string  `json:"when"`
	Owner   string  `json:"owner,omitempty"`
}

// MirrorView is a service's mirror in force: the version copied to, the
// share in percent, and whether it was set at runtime (PUT .../mirror, a
// rollout's shadow step) rather than by the file.
type MirrorView struct {
	Version string  `json:"version"`
	Percent float64 `json:"percent"`
	Runtime bool    `json:"runtime"`
}

// VersionWeight is one version's share in percent: in force, in the file,
// and set by an override (when one is).
type VersionWeight struct {
	Version  string   `json:"version"`
	Weight   float64  `json:"weight"`
	File     float64  `json:"file"`
	Override *float64 `json:"override,omitempty"`
}

// RolloutView is the rollout's status plus the hold timer in seconds, for
// the page.
type RolloutView struct {
	rollout.Status
	HeldSeconds float64 `json:"held_seconds"`
	HoldSeconds float64 `json:"hold_seconds"`
	// Actions are the ones that apply in the rollout's state.
	Actions []rollout.Action `json:"actions"`
}

// FleetView is the fleet's replicas (GET /v1/fleet) or why they cannot be
// read.
type FleetView struct {
	Status any    `json:"status,omitempty"` // this replica's connection to etcd
	View   any    `json:"view,omitempty"`
	Error  string `json:"error,omitempty"`
}

// state builds the document as of now.
func (c *Console) state(ctx context.Context) State {
	now := c.now()
	out := State{Services: []ServiceState{}, Audit: []admin.AuditEvent{}, Refusals: RefusalsView{Recent: []admin.AuditEvent{}}}
	if c.opts.TokenRequired != nil {
		out.Auth.TokenRequired = c.opts.TokenRequired()
	}
	srcErr, gathErr, at := c.sampler.status()
	out.Signals = SignalsView{
		Source: c.opts.SignalsName, Error: srcErr, MetricsError: gathErr,
		IntervalSeconds: c.sampler.width.Seconds(), Buckets: Buckets, SampledAt: at,
	}
	if c.opts.Audit != nil {
		out.Audit = c.opts.Audit.Recent()
		out.Refusals.Count, out.Refusals.Recent = c.opts.Audit.Refusals()
	}
	if c.opts.Fleet != nil {
		fctx, cancel := context.WithTimeout(ctx, fleetTimeout)
		v, err := c.opts.Fleet(fctx)
		cancel()
		out.Fleet = &FleetView{View: v}
		if err != nil {
			out.Fleet = &FleetView{Error: err.Error()}
		}
		if c.opts.FleetStatus != nil {
			out.Fleet.Status = c.opts.FleetStatus()
		}
	}
	snap := c.opts.Store.Load()
	if snap == nil {
		if msg, at := c.opts.Store.LastReloadError(); msg != "" {
			out.Config = &ConfigView{LastReloadError: msg, LastReloadErrorAt: &at}
		}
		return out
	}
	out.Loaded = true
	out.Config = &ConfigView{
		SHA256: snap.SHA256, Source: snap.Source, LoadedAt: snap.LoadedAt, Generation: snap.Generation, Revision: snap.Revision,
	}
	if msg, at := c.opts.Store.LastReloadError(); msg != "" {
		out.Config.LastReloadError, out.Config.LastReloadErrorAt = msg, &at
	}
	for _, fs := range snap.File.Services {
		out.Services = append(out.Services, c.service(snap, fs.Name, now))
	}
	return out
}

// service describes service name of snap.
func (c *Console) service(snap *store.Snapshot, name string, now time.Time) ServiceState {
	eff, _ := snap.Table.Service(name)
	file, _ := snap.FileService(name)
	ov, overridden := snap.Overrides[name]
	s := ServiceState{Name: name, Stable: eff.Stable, Override: overridden, Versions: []VersionWeight{}, Reasons: []Reason{}}
	for _, w := range eff.Weights {
		v := VersionWeight{Version: w.Version, Weight: percent(w.BasisPoints)}
		if bp, ok := file.Weights.Get(w.Version); ok {
			v.File = percent(bp)
		}
		if overridden {
			if bp, ok := ov.Get(w.Version); ok {
				p := percent(bp)
				v.Override = &p
			}
		}
		s.Versions = append(s.Versions, v)
		if len(eff.Weights) == 2 && w.Version != eff.Stable {
			s.Canary = w.Version
		}
	}
	if m := eff.Mirror; m != nil {
		_, runtime := snap.Mirrors[name]
		s.Mirror = &MirrorView{Version: m.Version, Percent: percent(int(m.Percent)), Runtime: runtime}
	}
	for _, r := range snap.MirrorRoutes[name] {
		s.MirrorRoutes = append(s.MirrorRoutes, MirrorRouteView{Name: r.Name, Version: r.Version, Percent: percent(int(r.Percent)),
			When: store.DescribeWhen(r.When), Owner: r.Owner})
	}
	if eff.Sticky != nil && eff.Sticky.Assign != nil {
		s.AssignCookie = eff.Sticky.Assign.Cookie
	}
	if eff.Rollout != nil && c.opts.Rollouts != nil {
		st, err := c.opts.Rollouts.Status(name)
		switch {
		case err == nil:
			s.Rollout = &RolloutView{
				Status: st, HeldSeconds: time.Duration(st.Held).Seconds(), HoldSeconds: time.Duration(st.Hold).Seconds(),
				Actions: actions(st.State),
			}
		case !errors.Is(err, rollout.ErrNoRollout):
			s.RolloutError = err.Error()
		}
	}
	if t, reasons, ok := c.sampler.view(name, now); ok {
		s.Traffic, s.Reasons = &t, reasons
	}
	return s
}

// actions are the rollout actions that apply in phase p (rollout.Act
// answers 409 to the others).
func actions(p rollout.Phase) []rollout.Action {
	switch p {
	case rollout.Progressing, rollout.Waiting:
		return []rollout.Action{rollout.Pause, rollout.Abort, rollout.Promote}
	case rollout.Paused:
		return []rollout.Action{rollout.Resume, rollout.Abort, rollout.Promote}
	}
	return []rollout.Action{rollout.Start}
}

func percent(bp int) float64 { return float64(bp) / (split.Buckets / 100) }
