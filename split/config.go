package split

import (
	"maps"
	"time"
)

// Buckets is the number of sticky/experiment buckets; weights are kept in
// basis points (1 bp = 0.01 %), so one bucket is one basis point.
const Buckets = 10000

// MaxExperiments bounds how many experiments one configuration may declare,
// so a Decision can carry every variant without allocating.
const MaxExperiments = 16

// Limits that keep a configuration (and the time to compile it) bounded. A
// file that exceeds one is rejected with an error naming the place.
const (
	MaxConfigBytes   = 1 << 20 // size of a configuration document (file, etcd value) given to Parse
	MaxServices      = 1000
	MaxHosts         = 1000 // per service
	MaxVersions      = 100  // per service, and variants per experiment
	MaxRules         = 1000 // per service
	MaxConditions    = 100  // per rule
	MaxNameLen       = 128  // service, version, variant, experiment and rule names
	MaxHeaderNameLen = 256
	MaxValueLen      = 4096 // condition operands, including regexes
)

// Config is the routing part of a configuration file (services and
// experiments). Process settings (addresses, tokens, header names) are not
// here: they belong to the adapter that reads the file.
type Config struct {
	Services    []Service    `json:"services"`
	Experiments []Experiment `json:"experiments,omitempty"`
}

// Service is one routed service as written in the file.
type Service struct {
	Name    string   `json:"name"`
	Hosts   []string `json:"hosts,omitempty"`  // "api.example.com", "*.example.com" or "*"; default ["*"]
	Stable  string   `json:"stable,omitempty"` // default: first declared version
	Weights Weights  `json:"weights"`          // declared order is kept
	Sticky  *Key     `json:"sticky,omitempty"` // nil: no sticky routing
	Rules   []Rule   `json:"rules,omitempty"`
	// Mirror copies a share of the service's requests to another version,
	// whose answers Envoy discards (a dark launch); nil: none.
	Mirror *Mirror `json:"mirror,omitempty"`
	// MirrorRoutes are conditional mirrors, evaluated in order before
	// Mirror: the first whose conditions all hold decides whether a
	// request is copied, and to which version. They are not read from a
	// configuration file: the store puts the runtime mirror routes here
	// (PUT /v1/services/{name}/mirror-routes/{route}), as it puts the
	// runtime routes ahead of Rules.
	MirrorRoutes []MirrorRoute `json:"mirror_routes,omitempty"`
	// Clusters maps a version to the Envoy cluster that serves it, where
	// its signals are read (rollouts); a version not listed is served by
	// the cluster of its own name.
	Clusters map[string]string `json:"clusters,omitempty"`
	Rollout  *Rollout          `json:"rollout,omitempty"` // nil: no rollout
}

// Weight is one version's share in basis points (0..10000).
type Weight struct {
	Version     string
	BasisPoints int
}

// Weights is an ordered list of version shares that sums to Buckets. It
// marshals to JSON as an object in declared order with percentages as
// numbers: {"v1":99.95,"v2":0.05}.
type Weights []Weight

// Key names where a sticky or experiment key is read: exactly one of a
// request header or a cookie. A service's sticky key may also (or only)
// have Assign: then a request that carries no key is given one.
type Key struct {
	Header string `json:"header,omitempty"`
	Cookie string `json:"cookie,omitempty"`
	// Assign gives a request without a key a fresh random one, set as a
	// cookie on its response and read as its key afterwards (sticky keys
	// only; nil: unkeyed requests follow the round-robin).
	Assign *Assign `json:"assign,omitempty"`
}

// Assign is how keys are given to requests that carry none
// (docs/anonymous-and-mirror.md).
type Assign struct {
	// Cookie is the cookie the key is set in and read from.
	Cookie string `json:"cookie"`
	// MaxAge is the cookie's Max-Age: how long a client keeps its key.
	MaxAge Duration `json:"max_age"`
	// Secure adds the Secure attribute (HTTPS only).
	Secure bool `json:"secure,omitempty"`
}

// Defaults of an assign block: `assign: {}` means a session cookie
// splitter-id kept for 30 days, without Secure.
const (
	DefaultAssignCookie = "splitter-id"
	DefaultAssignMaxAge = 30 * 24 * time.Hour
)

// DefaultAssign returns the assign block `assign: {}` means.
func DefaultAssign() Assign {
	return Assign{Cookie: DefaultAssignCookie, MaxAge: Duration(DefaultAssignMaxAge)}
}

// Mirror copies Percent of a service's requests to Version as well: Envoy
// sends the copy and discards its answer. A request that Version itself
// serves is not copied.
type Mirror struct {
	Version string  `json:"version"`
	Percent Percent `json:"percent"` // basis points of the service's requests
}

// MirrorRoute copies Percent of the requests for which every condition
// holds to Version (docs/anonymous-and-mirror.md, "Mirror routes").
type MirrorRoute struct {
	Name    string      `json:"name"`
	When    []Condition `json:"when"`
	Version string      `json:"version"`
	Percent Percent     `json:"percent"`
}

// Rule routes every request for which all conditions hold to Version.
type Rule struct {
	Name    string      `json:"name"` // default "rules[i]"
	When    []Condition `json:"when"`
	Version string      `json:"version"`
}

// Condition looks at one header, cookie or query parameter, or at the
// request's method or path. Exactly one source and exactly one operator
// are set.
type Condition struct {
	Header string `json:"header,omitempty"`
	Cookie string `json:"cookie,omitempty"`
	Query  string `json:"query,omitempty"`
	// Request names a part of the request line: "method" or "path" (the
	// path without the query string), compared with a value operator.
	Request    string  `json:"request,omitempty"`
	Exact      *string `json:"exact,omitempty"`
	Prefix     *string `json:"prefix,omitempty"`
	Suffix     *string `json:"suffix,omitempty"`
	Contains   *string `json:"contains,omitempty"`
	Regex      *string `json:"regex,omitempty"`
	Present    bool    `json:"present,omitempty"`
	Absent     bool    `json:"absent,omitempty"`
	IgnoreCase bool    `json:"ignore_case,omitempty"`
}

// Experiment assigns every request carrying Key a variant, deterministically.
type Experiment struct {
	Name     string  `json:"name"`
	Key      Key     `json:"key"`
	Variants Weights `json:"variants"`
	Header   string  `json:"header"` // request header the variant is written to
}

// DefaultYAML is the built-in configuration as a file; Parse(DefaultYAML)
// yields exactly Default().
const DefaultYAML = `services:
  - name: api
    hosts: ["*"]
    stable: v1
    weights: {v1: 80, v2: 20}
    sticky: {header: x-user-id}
    rules:
      - name: beta-testers
        when: [{header: x-beta, exact: "true"}]
        version: v2
experiments:
  - name: default
    key: {header: x-user-id}
    variants: {A: 50, B: 50}
    header: x-variant
`

// Default returns the built-in configuration (the seed's): service api on
// every host, v1 80 % / v2 20 %, sticky on x-user-id, x-beta: true pinned
// to v2, and the A/B experiment "default" keyed on x-user-id.
func Default() *Config {
	beta := "true"
	return &Config{
		Services: []Service{{
			Name:    "api",
			Hosts:   []string{"*"},
			Stable:  "v1",
			Weights: Weights{{Version: "v1", BasisPoints: 8000}, {Version: "v2", BasisPoints: 2000}},
			Sticky:  &Key{Header: "x-user-id"},
			Rules: []Rule{{
				Name:    "beta-testers",
				When:    []Condition{{Header: "x-beta", Exact: &beta}},
				Version: "v2",
			}},
		}},
		Experiments: []Experiment{{
			Name:     "default",
			Key:      Key{Header: "x-user-id"},
			Variants: Weights{{Version: "A", BasisPoints: 5000}, {Version: "B", BasisPoints: 5000}},
			Header:   "x-variant",
		}},
	}
}

// Clone returns a deep copy of c.
func (c *Config) Clone() *Config {
	if c == nil {
		return nil
	}
	out := &Config{}
	if c.Services != nil {
		out.Services = make([]Service, len(c.Services))
		for i := range c.Services {
			out.Services[i] = c.Services[i].Clone()
		}
	}
	if c.Experiments != nil {
		out.Experiments = make([]Experiment, len(c.Experiments))
		for i, e := range c.Experiments {
			e.Variants = e.Variants.Clone()
			e.Key = e.Key.Clone()
			out.Experiments[i] = e
		}
	}
	return out
}

// Clone returns a deep copy of s.
func (s Service) Clone() Service {
	out := s
	out.Hosts = cloneSlice(s.Hosts)
	out.Weights = s.Weights.Clone()
	if s.Sticky != nil {
		k := s.Sticky.Clone()
		out.Sticky = &k
	}
	if s.Mirror != nil {
		m := *s.Mirror
		out.Mirror = &m
	}
	out.Clusters = maps.Clone(s.Clusters)
	out.Rollout = s.Rollout.Clone()
	if s.Rules != nil {
		out.Rules = make([]Rule, len(s.Rules))
		for i, r := range s.Rules {
			r.When = cloneConditions(r.When)
			out.Rules[i] = r
		}
	}
	if s.MirrorRoutes != nil {
		out.MirrorRoutes = make([]MirrorRoute, len(s.MirrorRoutes))
		for i, r := range s.MirrorRoutes {
			r.When = cloneConditions(r.When)
			out.MirrorRoutes[i] = r
		}
	}
	return out
}

// cloneConditions returns a copy of when that shares nothing with it.
func cloneConditions(when []Condition) []Condition {
	out := cloneSlice(when)
	for j := range out {
		out[j] = out[j].clone()
	}
	return out
}

// Clone returns a copy of k that shares nothing with it.
func (k Key) Clone() Key {
	if k.Assign != nil {
		a := *k.Assign
		k.Assign = &a
	}
	return k
}

// Clone returns a copy of w that shares nothing with it.
func (w Weights) Clone() Weights { return cloneSlice(w) }

func (c Condition) clone() Condition {
	c.Exact = clonePtr(c.Exact)
	c.Prefix = clonePtr(c.Prefix)
	c.Suffix = clonePtr(c.Suffix)
	c.Contains = clonePtr(c.Contains)
	c.Regex = clonePtr(c.Regex)
	return c
}

func clonePtr(p *string) *string {
	if p == nil {
		return nil
	}
	s := *p
	return &s
}

func cloneSlice[T any](s []T) []T {
	if s == nil {
		return nil
	}
	return append(make([]T, 0, len(s)), s...)
}
