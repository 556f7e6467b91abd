package adapter

import (
	"errors"
	"fmt"
	"strings"

	"github.com/trafficsplit/splitter/split"
)

// Default header names.
const (
	DefaultRouteHeader  = "x-route-version"
	DefaultReasonHeader = "x-route-reason"
	DefaultMirrorHeader = "x-mirror-version"
)

// Headers are the names of the headers an adapter writes besides the
// experiments': the route header (the version Envoy routes on), the
// reason header ("" disables it) and the mirror header (the version a
// mirrored request is also copied to; Envoy's routes carry the mirror
// policies). Build them with NewHeaders and WithMirror; the zero value
// means the defaults, and so does an empty Mirror.
type Headers struct {
	Route  string
	Reason string
	Mirror string
}

// DefaultHeaders returns the default route, reason and mirror headers.
func DefaultHeaders() Headers {
	return Headers{Route: DefaultRouteHeader, Reason: DefaultReasonHeader, Mirror: DefaultMirrorHeader}
}

// NewHeaders validates and lower-cases the names (HTTP header names are
// case-insensitive; Envoy carries them in lower case). route must be a
// header name; reason may be "" (disabled) and must differ from route.
// Errors name the setting: route_header or reason_header.
func NewHeaders(route, reason string) (Headers, error) {
	var errs []error
	route, reason = strings.ToLower(route), strings.ToLower(reason)
	if err := CheckHeaderName(route); err != nil {
		errs = append(errs, fmt.Errorf("route_header: %w", err))
	}
	if reason != "" {
		if err := CheckHeaderName(reason); err != nil {
			errs = append(errs, fmt.Errorf("reason_header: %w", err))
		} else if reason == route {
			errs = append(errs, errors.New("reason_header: must differ from route_header"))
		}
	}
	if len(errs) > 0 {
		return Headers{}, errors.Join(errs...)
	}
	return Headers{Route: route, Reason: reason, Mirror: DefaultMirrorHeader}.WithMirror(DefaultMirrorHeader)
}

// WithMirror returns h with the mirror header name (lower-cased): a valid
// header name that differs from the route and reason headers. Errors name
// the setting mirror_header.
func (h Headers) WithMirror(mirror string) (Headers, error) {
	h = h.orDefault()
	mirror = strings.ToLower(mirror)
	if err := CheckHeaderName(mirror); err != nil {
		return Headers{}, fmt.Errorf("mirror_header: %w", err)
	}
	switch {
	case mirror == h.Route:
		return Headers{}, errors.New("mirror_header: must differ from route_header")
	case mirror == h.Reason:
		return Headers{}, errors.New("mirror_header: must differ from reason_header")
	}
	h.Mirror = mirror
	return h, nil
}

// orDefault returns h, or the defaults for the zero value.
func (h Headers) orDefault() Headers {
	if h.Route == "" {
		return DefaultHeaders()
	}
	if h.Mirror == "" {
		h.Mirror = DefaultMirrorHeader
	}
	return h
}

// Clashes reports whether an experiment writing header would overwrite the
// route, reason or mirror header (compared case-insensitively).
func (h Headers) Clashes(header string) bool {
	h = h.orDefault()
	return strings.EqualFold(header, h.Route) || (h.Reason != "" && strings.EqualFold(header, h.Reason)) ||
		strings.EqualFold(header, h.Mirror)
}

// CheckConfig rejects a routing configuration whose experiments would
// write the route, reason or mirror header: a variant there would overwrite the
// version Envoy routes on. The engine cannot see this on its own, since the
// header names are process settings. Names compare case-insensitively, as
// HTTP header names do.
func (h Headers) CheckConfig(cfg *split.Config) error {
	h = h.orDefault()
	var errs []error
	for i, e := range cfg.Experiments {
		path := fmt.Sprintf("experiments[%d].header", i)
		switch {
		case e.Header == "":
		case strings.EqualFold(e.Header, h.Route):
			errs = append(errs, &split.FieldError{Path: path,
				Reason: fmt.Sprintf("%q is the route header (route_header %q); a variant would overwrite the version", e.Header, h.Route)})
		case h.Reason != "" && strings.EqualFold(e.Header, h.Reason):
			errs = append(errs, &split.FieldError{Path: path,
				Reason: fmt.Sprintf("%q is the reason header (reason_header %q)", e.Header, h.Reason)})
		case strings.EqualFold(e.Header, h.Mirror):
			errs = append(errs, &split.FieldError{Path: path,
				Reason: fmt.Sprintf("%q is the mirror header (mirror_header %q); a variant would decide what is mirrored", e.Header, h.Mirror)})
		}
	}
	return errors.Join(errs...)
}

// CheckHeaderName accepts a header name a mutation may set: RFC 9110 token
// characters, not a pseudo-header. Upper-case letters are accepted by
// NewHeaders (which lower-cases) but not here: callers hand names to Envoy,
// which carries them in lower case.
func CheckHeaderName(name string) error {
	if name == "" {
		return errors.New("must not be empty")
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		case c >= 'A' && c <= 'Z':
			return fmt.Errorf("%q must be lower case", name)
		default:
			return fmt.Errorf("%q is not a valid header name (byte %q at %d)", name, c, i)
		}
	}
	return nil
}

// ValidHeaderName reports whether CheckHeaderName accepts name.
func ValidHeaderName(name string) bool { return CheckHeaderName(name) == nil }

// ValidHeaderValue reports whether s may be written as a header value:
// Envoy rejects a whole mutation (a local 500, even when failing open) for
// CR, LF or NUL, and an empty route value would never match a route.
func ValidHeaderValue(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '\r' || c == '\n' || c == 0 {
			return false
		}
	}
	return true
}
