// Package router is what splitter does for each call of Argo Rollouts'
// traffic-router plugin interface: it drives one splitter service through
// the splitter's admin API (docs/argo-rollouts.md). It knows nothing of
// Kubernetes: package main turns Argo's types into the plain ones here,
// so the decisions are tested without them.
package router

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
)

// Name is the plugin's name: in the argo-rollouts-config ConfigMap's
// trafficRouterPlugins, and the key of a Rollout's
// spec.strategy.canary.trafficRouting.plugins.
const Name = "trafficsplit/splitter"

// Config is a Rollout's trafficRouting.plugins["trafficsplit/splitter"]:
//
//	{"service": "api", "adminURL": "http://splitter-admin.mesh:9002", "tokenFile": "/var/run/splitter/token"}
type Config struct {
	// Service is the splitter service whose weights the Rollout drives:
	// it has exactly two versions, the stable one and the canary.
	Service string `json:"service"`
	// AdminURL is the splitter's admin API (in a fleet, any replica's).
	AdminURL string `json:"adminURL"`
	// TokenFile holds the admin token (read on every call, so it can be
	// rotated); empty: no token is sent.
	TokenFile string `json:"tokenFile,omitempty"`
}

// configPath names the configuration in errors.
const configPath = `spec.strategy.canary.trafficRouting.plugins["` + Name + `"]`

// ParseConfig reads a Rollout's plugin configuration strictly: unknown
// fields, a missing service or admin URL and a URL that is not http(s)
// are errors naming the field.
func ParseConfig(raw []byte) (Config, error) {
	var c Config
	if len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null" {
		return c, fmt.Errorf("%s: missing: the Rollout must give {service, adminURL}", configPath)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		var typeErr *json.UnmarshalTypeError
		switch {
		case errors.As(err, &typeErr):
			return c, fmt.Errorf("%s.%s: must be a %s", configPath, typeErr.Field, typeErr.Type)
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			return c, fmt.Errorf("%s: %s (known: service, adminURL, tokenFile)", configPath, strings.TrimPrefix(err.Error(), "json: "))
		}
		return c, fmt.Errorf("%s: %w", configPath, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return c, fmt.Errorf("%s: unexpected data after the object", configPath)
	}
	var errs []error
	if c.Service == "" {
		errs = append(errs, fmt.Errorf("%s.service: required: the splitter service the Rollout drives", configPath))
	} else if strings.ContainsAny(c.Service, "/?#% ") {
		errs = append(errs, fmt.Errorf("%s.service: %q is not a service name", configPath, c.Service))
	}
	switch u, err := url.Parse(c.AdminURL); {
	case c.AdminURL == "":
		errs = append(errs, fmt.Errorf("%s.adminURL: required: the splitter's admin API, such as http://splitter-admin:9002", configPath))
	case err != nil:
		errs = append(errs, fmt.Errorf("%s.adminURL: %w", configPath, err))
	case u.Scheme != "http" && u.Scheme != "https" || u.Host == "":
		errs = append(errs, fmt.Errorf("%s.adminURL: %q must be an http:// or https:// URL with a host", configPath, c.AdminURL))
	case u.RawQuery != "" || u.Fragment != "":
		errs = append(errs, fmt.Errorf("%s.adminURL: %q must not have a query or fragment", configPath, c.AdminURL))
	}
	return c, errors.Join(errs...)
}

// Rollout is what the router reads of an Argo Rollout.
type Rollout struct {
	Namespace, Name string
	// Config is trafficRouting.plugins["trafficsplit/splitter"]; nil when
	// the Rollout has none.
	Config json.RawMessage
	// MaxWeight is trafficRouting.maxTrafficWeight (0: the default, 100).
	MaxWeight int32
	// ManagedRoutes are the names in trafficRouting.managedRoutes.
	ManagedRoutes []string
}

// Owner is the name the plugin's changes carry in splitter: the weights
// it sets and the routes it makes belong to this Rollout.
func (r Rollout) Owner() string {
	if r.Namespace == "" {
		return "argo-rollouts:" + r.Name
	}
	return "argo-rollouts:" + r.Namespace + "/" + r.Name
}

func (r Rollout) maxWeight() int32 {
	if r.MaxWeight <= 0 {
		return 100
	}
	return r.MaxWeight
}

// StringMatch is Argo's StringMatch: exactly one of the three is set.
type StringMatch struct {
	Exact, Prefix, Regex string
}

// HeaderMatch is one match of a setHeaderRoute step.
type HeaderMatch struct {
	Header string
	Value  *StringMatch
}

// condition is a splitter rule condition as the admin API takes it: a
// header, or a part of the request line (request: method or path).
type condition struct {
	Header  string  `json:"header,omitempty"`
	Request string  `json:"request,omitempty"`
	Exact   *string `json:"exact,omitempty"`
	Prefix  *string `json:"prefix,omitempty"`
	Regex   *string `json:"regex,omitempty"`
}

// conditions turns a setHeaderRoute's matches into splitter conditions
// (all must hold, as Argo's matches of one route must).
func conditions(matches []HeaderMatch) ([]condition, error) {
	out := make([]condition, 0, len(matches))
	for i, m := range matches {
		at := fmt.Sprintf("setHeaderRoute.match[%d]", i)
		if m.Header == "" {
			return nil, fmt.Errorf("%s.headerName: required", at)
		}
		if m.Value == nil {
			return nil, fmt.Errorf("%s.headerValue: required (one of exact, prefix, regex)", at)
		}
		c := condition{Header: m.Header}
		set := 0
		for _, op := range []struct {
			val string
			dst **string
		}{{m.Value.Exact, &c.Exact}, {m.Value.Prefix, &c.Prefix}, {m.Value.Regex, &c.Regex}} {
			if op.val != "" {
				v := op.val
				*op.dst = &v
				set++
			}
		}
		switch set {
		case 0:
			return nil, fmt.Errorf("%s.headerValue: set one of exact, prefix, regex", at)
		case 1:
		default:
			return nil, fmt.Errorf("%s.headerValue: set only one of exact, prefix, regex", at)
		}
		out = append(out, c)
	}
	return out, nil
}

// basisPoints converts Argo's desired weight (out of maxWeight) into a
// splitter share in basis points (1 = 0.01 %), rounded to the nearest.
func basisPoints(desired, maxWeight int32) (int, error) {
	if desired < 0 || desired > maxWeight {
		return 0, fmt.Errorf("desired weight %d is outside 0..%d (maxTrafficWeight)", desired, maxWeight)
	}
	return int((int64(desired)*10000 + int64(maxWeight)/2) / int64(maxWeight)), nil
}

// percentText renders basis points as the admin API's percentage: "12.5".
func percentText(bp int) string {
	if bp%100 == 0 {
		return strconv.Itoa(bp / 100)
	}
	return strings.TrimRight(fmt.Sprintf("%d.%02d", bp/100, bp%100), "0")
}
