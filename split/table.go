package split

import (
	"fmt"
	"slices"
	"strings"
)

// Outcomes returns how many distinct header outcomes t's decisions can have
// (see Decision.Outcome), or 0 when there are more than MaxOutcomes.
func (t *Table) Outcomes() int { return t.outcomes }

// RequestHeaders returns the lower-case names of the request headers that
// t's decisions read, each once, ":authority" first and the others in
// order of first use: every header a condition, sticky key or experiment
// key names, "cookie" when one of them is a cookie (or a service assigns
// keys, which it reads back from a cookie), ":path" when a condition
// looks at the query string or the path, and ":method" when one looks at
// the method (mirror routes' conditions included).
// Headers not listed cannot change a decision of t, so an adapter that
// pays per header read (the in-process module) reads only these.
func (t *Table) RequestHeaders() []string { return slices.Clone(t.reads) }

func (t *Table) requestHeaders() []string {
	out := []string{":authority"}
	add := func(name string) {
		if !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	key := func(k keySource) {
		switch {
		case k.header != "":
			add(k.header)
		case k.cookie != "":
			add("cookie")
		}
	}
	conds := func(cs []condition) {
		for _, c := range cs {
			switch c.src {
			case srcHeader:
				add(c.name)
			case srcCookie:
				add("cookie")
			case srcQuery, srcPath:
				add(":path")
			case srcMethod:
				add(":method")
			}
		}
	}
	for _, s := range t.services {
		for _, r := range s.rules {
			conds(r.conds)
		}
		for _, r := range s.mirrorRoutes {
			conds(r.conds)
		}
		key(s.sticky)
		if s.assign != nil {
			add("cookie")
		}
	}
	for _, e := range t.exps {
		key(e.key)
	}
	return out
}

// Config returns a deep copy of the configuration the table was compiled
// from, with defaults filled in (hosts, stable version, rule names) and
// header names lower-cased.
func (t *Table) Config() *Config { return t.cfg.Clone() }

// Service returns the compiled view of one service's configuration (as in
// Config). Names are matched exactly.
func (t *Table) Service(name string) (Service, bool) {
	i, ok := t.byName[name]
	if !ok {
		return Service{}, false
	}
	return t.cfg.Services[i].Clone(), true
}

// Assign returns the variant of experiment for key ("" experiment: the
// default experiment, the one named "default", else the first).
func (t *Table) Assign(experiment, key string) (Variant, error) {
	i := t.defaultExp
	if experiment != "" {
		var ok bool
		if i, ok = t.expByName[experiment]; !ok {
			return Variant{}, fmt.Errorf("%w %q", ErrUnknownExperiment, experiment)
		}
	}
	if i < 0 || i >= len(t.exps) {
		return Variant{}, fmt.Errorf("%w: no experiments are configured", ErrUnknownExperiment)
	}
	if key == "" {
		return Variant{}, &FieldError{Path: "key", Reason: "is empty"}
	}
	e := &t.exps[i]
	b := Bucket(e.name, key)
	return Variant{Experiment: e.name, Header: e.header, Variant: e.variants[pick(e.upper, b)], Bucket: b}, nil
}

// WithWeights returns a new Table in which service has weights w (validated
// as in Compile, with error paths relative to the service, such as
// "weights.v3" or "rules[0].version"). Round-robin counters of untouched
// services carry over.
//
// When w names exactly the service's versions it is laid out in the
// service's declared order, whatever order it lists them in: the sticky
// bucket ranges follow the declared order, so the same shares listed in
// another order must not move anyone.
func (t *Table) WithWeights(service string, w Weights) (*Table, error) {
	i, ok := t.byName[service]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownService, service)
	}
	cfg := t.cfg.Clone()
	cfg.Services[i].Weights = InDeclaredOrder(w, t.cfg.Services[i].Weights)
	nt, errs := compile(cfg, t)
	if len(errs) > 0 {
		prefix := index("services", i) + "."
		for _, e := range errs {
			e.Path = strings.TrimPrefix(e.Path, prefix)
		}
		return nil, joinFieldErrors(errs)
	}
	return nt, nil
}

// CanaryWeights returns the weights of a two-version service with the
// canary (non-stable version) at basisPoints and stable at the rest, in
// declared order. It fails for services that do not have exactly two
// versions (ErrNotTwoVersions) or unknown services (ErrUnknownService).
func (t *Table) CanaryWeights(service string, basisPoints int) (Weights, error) {
	i, ok := t.byName[service]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownService, service)
	}
	s := &t.cfg.Services[i]
	if len(s.Weights) != 2 {
		return nil, fmt.Errorf("%s has %d versions: %w", service, len(s.Weights), ErrNotTwoVersions)
	}
	if basisPoints < 0 || basisPoints > Buckets {
		return nil, &FieldError{Path: "percentage", Reason: fmt.Sprintf("must be between 0 and 100 (got %s)", FormatPercent(basisPoints))}
	}
	w := s.Weights.Clone()
	for j := range w {
		if w[j].Version == s.Stable {
			w[j].BasisPoints = Buckets - basisPoints
		} else {
			w[j].BasisPoints = basisPoints
		}
	}
	return w, nil
}

// InDeclaredOrder returns a copy of w listed in the order of declared when
// both name the same versions (declared's shares are ignored); otherwise a
// plain copy of w, for validation to report what does not match.
func InDeclaredOrder(w, declared Weights) Weights {
	if len(w) != len(declared) {
		return w.Clone()
	}
	out := make(Weights, 0, len(w))
	for _, d := range declared {
		bp, ok := w.Get(d.Version)
		if !ok {
			return w.Clone()
		}
		out = append(out, Weight{Version: d.Version, BasisPoints: bp})
	}
	return out
}

// WithMirror returns a new Table in which service mirrors as m (nil: not
// at all), validated as in Compile with error paths relative to the
// service ("mirror.version"). Round-robin positions carry over, the
// mirror's own included when its share did not change.
func (t *Table) WithMirror(service string, m *Mirror) (*Table, error) {
	i, ok := t.byName[service]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownService, service)
	}
	cfg := t.cfg.Clone()
	if m != nil {
		c := *m
		m = &c
	}
	cfg.Services[i].Mirror = m
	nt, errs := compile(cfg, t)
	if len(errs) > 0 {
		prefix := index("services", i) + "."
		for _, e := range errs {
			e.Path = strings.TrimPrefix(e.Path, prefix)
		}
		return nil, joinFieldErrors(errs)
	}
	return nt, nil
}

// Equal reports whether two mirrors (either may be nil) are the same.
func (m *Mirror) Equal(o *Mirror) bool {
	if m == nil || o == nil {
		return m == o
	}
	return *m == *o
}
