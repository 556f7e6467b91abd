package adapter

import (
	"unicode/utf8"

	"github.com/trafficsplit/splitter/split"
)

// Plan is what a decision writes into a request: the headers to remove
// (the route header, when nothing was decided; the mirror header, when the
// request is not mirrored) and the headers to set, in order: route,
// reason, mirror (when mirrored), then each experiment's variant in
// declared order; and, for a request given a fresh sticky key, that its
// response must set the key's cookie (Assigned).
// Every adapter writes exactly its Plan, so the same decision sets the same
// headers through ext_proc, ext_authz and the module. A Plan lives on the
// stack: filling it does not allocate.
type Plan struct {
	// Remove is the header to remove ("" for none).
	Remove string
	// RemoveMirror is the mirror header, removed from every request that
	// is not mirrored, so that no client can ask for a copy even if an
	// Envoy in front does not strip it ("" when mirrored).
	RemoveMirror string
	// Assigned: the request was given a fresh key (split.Decision.Assigned),
	// so its response must carry the key's Set-Cookie. The cookie itself is
	// per request and not part of the plan.
	Assigned bool
	set      [3 + split.MaxExperiments]split.Header
	n        int
	// Skipped counts experiment headers left out because their name or
	// value cannot be written (validation makes this impossible for a
	// loaded configuration; adapters log it where they build answers).
	Skipped int
	// Unrouted is true when the decision names no version (no service
	// matched, no configuration, or a version that is not a valid header
	// value): the route header is removed and Envoy's default route applies.
	Unrouted bool
}

// Set returns the headers to set, in order.
func (p *Plan) Set() []split.Header { return p.set[:p.n] }

func (p *Plan) add(name, value string) {
	p.set[p.n] = split.Header{Name: name, Value: value}
	p.n++
}

// PlanFor fills p with what d writes. A nil d is a request that could not
// be decided (no configuration, or a recovered panic): it goes on to the
// stable route with the client's route header removed.
//
// An unrouted request never keeps a client-sent route header, so nobody
// can pin a version by sending it; its reason is "unmatched" and no
// experiment header is set (there is no decision to label).
func (h Headers) PlanFor(d *split.Decision, p *Plan) {
	h = h.orDefault()
	*p = Plan{RemoveMirror: h.Mirror}
	if d == nil || d.Version == "" || !ValidHeaderValue(d.Version) {
		p.Unrouted = true
		p.Remove = h.Route
		if h.Reason != "" {
			p.add(h.Reason, split.ReasonUnmatched.String())
		}
		return
	}
	p.add(h.Route, d.Version)
	if h.Reason != "" {
		p.add(h.Reason, d.Reason.String())
	}
	if m := d.Mirror(); m != "" && ValidHeaderValue(m) {
		p.add(h.Mirror, m)
		p.RemoveMirror = ""
	}
	p.Assigned = d.Assigned()
	for _, v := range d.Variants() {
		if !ValidHeaderName(v.Header) || !ValidHeaderValue(v.Variant) || !utf8.ValidString(v.Variant) || h.Clashes(v.Header) {
			p.Skipped++
			continue
		}
		p.add(v.Header, v.Variant)
	}
}
