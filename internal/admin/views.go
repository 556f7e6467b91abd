package admin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/trafficsplit/splitter/internal/store"
	"github.com/trafficsplit/splitter/split"
)

// servicesView is GET /v1/services.
type servicesView struct {
	Services    []serviceView    `json:"services"`
	Experiments []experimentView `json:"experiments"`
	Config      configView       `json:"config"`
}

// serviceDetail is GET /v1/services/{name}.
type serviceDetail struct {
	serviceView
	Config configView `json:"config"`
}

// serviceView is one service: its effective weights, the file's, and
// whether a runtime override is in force.
type serviceView struct {
	Name            string        `json:"name"`
	Hosts           []string      `json:"hosts"`
	Stable          string        `json:"stable"`
	Weights         split.Weights `json:"weights"`
	FileWeights     split.Weights `json:"file_weights"`
	Override        bool          `json:"override"`
	OverrideWeights split.Weights `json:"override_weights,omitempty"`
	Sticky          *split.Key    `json:"sticky"`
	Rules           []split.Rule  `json:"rules"`
	// Mirror is the mirror in force (null: none); FileMirror the file's;
	// MirrorOverride says a runtime mirror is in force.
	Mirror         *split.Mirror `json:"mirror"`
	FileMirror     *split.Mirror `json:"file_mirror"`
	MirrorOverride bool          `json:"mirror_override,omitempty"`
	// WeightsOwner is the controller that owns the override (the Argo
	// Rollouts plugin), "" for none.
	WeightsOwner string `json:"weights_owner,omitempty"`
	// RuntimeRoutes are the routes added through the admin API, in
	// evaluation order, with their owners.
	RuntimeRoutes []store.Route `json:"runtime_routes"`
	// MirrorRoutes are the runtime mirror routes, in evaluation order
	// (before the mirror), with their owners.
	MirrorRoutes []store.MirrorRoute `json:"mirror_routes"`
}

type experimentView struct {
	Name     string        `json:"name"`
	Key      *split.Key    `json:"key"`
	Variants split.Weights `json:"variants"`
	Header   string        `json:"header"`
}

type configView struct {
	SHA256            string     `json:"sha256"`
	Source            string     `json:"source"`
	LoadedAt          time.Time  `json:"loaded_at"`
	Generation        uint64     `json:"generation"`
	LastReloadError   *string    `json:"last_reload_error"`
	LastReloadErrorAt *time.Time `json:"last_reload_error_at"`
	// Revision and Fleet are set in fleet mode only: the etcd revision of
	// the state in force, and this replica's connection to etcd.
	Revision int64 `json:"revision,omitempty"`
	Fleet    any   `json:"fleet,omitempty"`
	// Warnings: what works, but not as configured (Options.Warnings).
	Warnings []string `json:"warnings,omitempty"`
}

func (a *api) configView(snap *store.Snapshot) configView {
	v := configView{SHA256: snap.SHA256, Source: snap.Source, LoadedAt: snap.LoadedAt, Generation: snap.Generation, Revision: snap.Revision}
	if a.opts.FleetStatus != nil {
		v.Fleet = a.opts.FleetStatus()
	}
	if a.opts.Warnings != nil {
		v.Warnings = a.opts.Warnings()
	}
	if msg, at := a.opts.Store.LastReloadError(); msg != "" {
		v.LastReloadError, v.LastReloadErrorAt = &msg, &at
	}
	return v
}

// newServiceView describes service name, which must exist in snap.
func newServiceView(snap *store.Snapshot, name string) serviceView {
	eff, _ := snap.Table.Service(name)
	file, _ := snap.FileService(name)
	v := serviceView{
		Name:        name,
		Hosts:       eff.Hosts,
		Stable:      eff.Stable,
		Weights:     eff.Weights,
		FileWeights: file.Weights,
		Sticky:      newKeyView(eff.Sticky),
		Rules:       eff.Rules,
		Mirror:      eff.Mirror,
		FileMirror:  file.Mirror,
	}
	if w, ok := snap.Overrides[name]; ok {
		v.Override, v.OverrideWeights = true, w
	}
	_, v.MirrorOverride = snap.Mirrors[name]
	v.WeightsOwner = snap.Owners[name]
	v.RuntimeRoutes = snap.Routes[name]
	if v.RuntimeRoutes == nil {
		v.RuntimeRoutes = []store.Route{}
	}
	v.MirrorRoutes = snap.MirrorRoutes[name]
	if v.MirrorRoutes == nil {
		v.MirrorRoutes = []store.MirrorRoute{}
	}
	if v.Hosts == nil {
		v.Hosts = []string{}
	}
	if v.Rules == nil {
		v.Rules = []split.Rule{}
	}
	return v
}

func newKeyView(k *split.Key) *split.Key {
	if k == nil || (k.Header == "" && k.Cookie == "" && k.Assign == nil) {
		return nil
	}
	c := k.Clone()
	return &c
}

// weightsAnswer is {"service":"api","v1":50,"v2":50}: the service, then
// each version in declared order.
type weightsAnswer struct {
	service  string
	weights  split.Weights
	revision int64 // etcd revision of the commit; 0: not shown
	// notApplied adds "applied": false: committed, not yet in force here.
	notApplied bool
}

func (w weightsAnswer) MarshalJSON() ([]byte, error) {
	name, err := json.Marshal(w.service)
	if err != nil {
		return nil, err
	}
	ws, err := w.weights.MarshalJSON()
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.WriteString(`{"service":`)
	b.Write(name)
	if inner := bytes.TrimSuffix(bytes.TrimPrefix(ws, []byte("{")), []byte("}")); len(inner) > 0 {
		b.WriteByte(',')
		b.Write(inner)
	}
	if w.revision != 0 {
		fmt.Fprintf(&b, `,"revision":%d`, w.revision)
	}
	if w.notApplied {
		b.WriteString(`,"applied":false`)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}
