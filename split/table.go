package split

import (
	"fmt"
	"strings"
)

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
func (t *Table) WithWeights(service string, w Weights) (*Table, error) {
	i, ok := t.byName[service]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownService, service)
	}
	cfg := t.cfg.Clone()
	cfg.Services[i].Weights = w.Clone()
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
