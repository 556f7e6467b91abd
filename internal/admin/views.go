package admin

import (
	"bytes"
	"encoding/json"
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
	Sticky          *keyView      `json:"sticky"`
	Rules           []ruleView    `json:"rules"`
}

type keyView struct {
	Header string `json:"header,omitempty"`
	Cookie string `json:"cookie,omitempty"`
}

type ruleView struct {
	Name    string          `json:"name"`
	Version string          `json:"version"`
	When    []conditionView `json:"when"`
}

// conditionView is a condition with the configuration file's keys.
type conditionView struct {
	Header     string  `json:"header,omitempty"`
	Cookie     string  `json:"cookie,omitempty"`
	Query      string  `json:"query,omitempty"`
	Exact      *string `json:"exact,omitempty"`
	Prefix     *string `json:"prefix,omitempty"`
	Suffix     *string `json:"suffix,omitempty"`
	Contains   *string `json:"contains,omitempty"`
	Regex      *string `json:"regex,omitempty"`
	Present    bool    `json:"present,omitempty"`
	Absent     bool    `json:"absent,omitempty"`
	IgnoreCase bool    `json:"ignore_case,omitempty"`
}

type experimentView struct {
	Name     string        `json:"name"`
	Key      *keyView      `json:"key"`
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
}

func (a *api) configView(snap *store.Snapshot) configView {
	v := configView{SHA256: snap.SHA256, Source: snap.Source, LoadedAt: snap.LoadedAt, Generation: snap.Generation}
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
		Rules:       make([]ruleView, 0, len(eff.Rules)),
	}
	if w, ok := snap.Overrides[name]; ok {
		v.Override, v.OverrideWeights = true, w
	}
	if v.Hosts == nil {
		v.Hosts = []string{}
	}
	for _, r := range eff.Rules {
		rv := ruleView{Name: r.Name, Version: r.Version, When: make([]conditionView, 0, len(r.When))}
		for _, c := range r.When {
			rv.When = append(rv.When, conditionView{
				Header: c.Header, Cookie: c.Cookie, Query: c.Query,
				Exact: c.Exact, Prefix: c.Prefix, Suffix: c.Suffix, Contains: c.Contains, Regex: c.Regex,
				Present: c.Present, Absent: c.Absent, IgnoreCase: c.IgnoreCase,
			})
		}
		v.Rules = append(v.Rules, rv)
	}
	return v
}

func newKeyView(k *split.Key) *keyView {
	if k == nil || (k.Header == "" && k.Cookie == "") {
		return nil
	}
	return &keyView{Header: k.Header, Cookie: k.Cookie}
}

// weightsAnswer is {"service":"api","v1":50,"v2":50}: the service, then
// each version in declared order.
type weightsAnswer struct {
	service string
	weights split.Weights
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
	b.WriteByte('}')
	return b.Bytes(), nil
}
