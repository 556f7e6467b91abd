package router

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"slices"
	"time"
)

// DefaultTimeout bounds one call from Argo (all its admin API requests).
const DefaultTimeout = 20 * time.Second

// Options configure a Router.
type Options struct {
	Logger *slog.Logger // nil: discard
	// HTTP calls the admin API; nil: a client with Timeout per request.
	HTTP    *http.Client
	Timeout time.Duration // per call from Argo; 0: DefaultTimeout
}

// Router carries out Argo's calls on splitter. It keeps no state between
// calls (Argo may restart the plugin at any time): what the plugin made
// is recorded in splitter itself, as the owner of the weights and of the
// routes. It is safe for concurrent use.
type Router struct {
	log     *slog.Logger
	http    *http.Client
	timeout time.Duration
}

// New returns a Router.
func New(o Options) *Router {
	r := &Router{log: o.Logger, http: o.HTTP, timeout: o.Timeout}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.timeout <= 0 {
		r.timeout = DefaultTimeout
	}
	if r.http == nil {
		r.http = &http.Client{Timeout: r.timeout}
	}
	return r
}

// Context returns the context one call from Argo runs under (net/rpc
// carries none).
func (r *Router) Context() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), r.timeout)
}

// target parses ro's configuration and returns it with its admin client.
func (r *Router) target(ro Rollout) (Config, adminClient, error) {
	c, err := ParseConfig(ro.Config)
	if err != nil {
		return c, adminClient{}, fmt.Errorf("Rollout %s: %w", ro.Owner(), err)
	}
	return c, r.admin(c), nil
}

// errExtraDestinations refuses Argo's additional destinations (experiment
// steps that give their ReplicaSets traffic).
func errExtraDestinations(n int) error {
	return fmt.Errorf("%d additional destinations (an experiment step with traffic weights) are not supported: splitter moves traffic between a service's stable and canary versions only", n)
}

// SetWeight gives the canary desired (of the Rollout's maxTrafficWeight)
// and the stable version the rest, as the Rollout's owner of the
// service's weights. splitter refuses (and the error says why) when
// another owner holds them or a splitter rollout drives the service.
func (r *Router) SetWeight(ctx context.Context, ro Rollout, desired int32, extra int) error {
	if extra > 0 {
		return errExtraDestinations(extra)
	}
	c, a, err := r.target(ro)
	if err != nil {
		return err
	}
	bp, err := basisPoints(desired, ro.maxWeight())
	if err != nil {
		return err
	}
	body := map[string]any{"percentage": jsonNumber(percentText(bp)), "owner": ro.Owner()}
	if err := a.do(ctx, http.MethodPut, "/v1/services/"+url.PathEscape(c.Service)+"/canary", nil, body, nil); err != nil {
		return err
	}
	r.log.Debug("weight set", "rollout", ro.Owner(), "service", c.Service, "canary_percent", percentText(bp))
	return nil
}

// Verified is VerifyWeight's answer.
type Verified bool

// VerifyWeight reports whether the service's canary serves at desired
// everywhere: on the admin URL's splitter, and in fleet mode on every
// replica in GET /v1/fleet, each at least at the revision that splitter
// serves (so each has applied the change). A splitter in file mode is
// one replica.
func (r *Router) VerifyWeight(ctx context.Context, ro Rollout, desired int32, extra int) (Verified, error) {
	if extra > 0 {
		return false, errExtraDestinations(extra)
	}
	c, a, err := r.target(ro)
	if err != nil {
		return false, err
	}
	want, err := basisPoints(desired, ro.maxWeight())
	if err != nil {
		return false, err
	}
	v, err := a.service(ctx, c.Service)
	if err != nil {
		return false, err
	}
	canary, err := v.canary()
	if err != nil {
		return false, err
	}
	if got := int(math.Round(v.Weights[canary] * 100)); got != want {
		r.log.Debug("weight not verified", "rollout", ro.Owner(), "service", c.Service, "want", percentText(want), "serving", percentText(got))
		return false, nil
	}
	var f fleetView
	switch err := a.do(ctx, http.MethodGet, "/v1/fleet", nil, nil, &f); {
	case statusOf(err) == http.StatusNotFound:
		return true, nil // file mode: the splitter that answered is the one
	case err != nil:
		return false, err
	}
	if len(f.Replicas) == 0 {
		return false, nil
	}
	for _, rep := range f.Replicas {
		if rep.Revision < v.Config.Revision {
			r.log.Debug("weight not yet applied everywhere", "rollout", ro.Owner(), "service", c.Service,
				"replica", rep.NodeID, "replica_revision", rep.Revision, "want_revision", v.Config.Revision)
			return false, nil
		}
	}
	return true, nil
}

// SetHeaderRoute makes the route name send every request whose headers
// match to the canary (a runtime route owned by the Rollout, ahead of the
// service's own rules); with no matches it removes that route.
func (r *Router) SetHeaderRoute(ctx context.Context, ro Rollout, name string, matches []HeaderMatch) error {
	if name == "" {
		return fmt.Errorf("setHeaderRoute: name is required (and listed in trafficRouting.managedRoutes)")
	}
	c, a, err := r.target(ro)
	if err != nil {
		return err
	}
	if len(matches) == 0 {
		return r.removeRoute(ctx, a, c.Service, name, ro.Owner())
	}
	when, err := conditions(matches)
	if err != nil {
		return err
	}
	v, err := a.service(ctx, c.Service)
	if err != nil {
		return err
	}
	canary, err := v.canary()
	if err != nil {
		return err
	}
	body := map[string]any{"when": when, "version": canary, "owner": ro.Owner()}
	path := "/v1/services/" + url.PathEscape(c.Service) + "/routes/" + url.PathEscape(name)
	if err := a.do(ctx, http.MethodPut, path, nil, body, nil); err != nil {
		return err
	}
	r.log.Debug("header route set", "rollout", ro.Owner(), "service", c.Service, "route", name, "version", canary)
	return nil
}

// removeRoute deletes the Rollout's route name; a route of that name that
// another owner (or an operator) made is not the plugin's, and stays. A
// name splitter refuses (400) names no route that can exist.
func (r *Router) removeRoute(ctx context.Context, a adminClient, service, name, owner string) error {
	path := "/v1/services/" + url.PathEscape(service) + "/routes/" + url.PathEscape(name)
	err := a.do(ctx, http.MethodDelete, path, url.Values{"owner": {owner}}, nil, nil)
	switch statusOf(err) {
	case http.StatusConflict:
		r.log.Info("route left alone: not made by this Rollout", "rollout", owner, "service", service, "route", name, "error", err)
		return nil
	case http.StatusBadRequest:
		r.log.Info("no route to remove: splitter refuses the name", "rollout", owner, "service", service, "route", name, "error", err)
		return nil
	}
	return err
}

// RemoveManagedRoutes removes what the plugin made for the Rollout: the
// routes and the mirror routes that carry its owner (and the routes of
// trafficRouting.managedRoutes that do). Those of other owners and the
// operator's are left alone (a runtime mirror, a shadow step's mirror and
// the file's are never the plugin's), and so are the weights (Argo sets
// them next).
func (r *Router) RemoveManagedRoutes(ctx context.Context, ro Rollout) error {
	c, a, err := r.target(ro)
	if err != nil {
		return err
	}
	v, err := a.service(ctx, c.Service)
	if err != nil {
		return err
	}
	owner := ro.Owner()
	names := slices.Clone(ro.ManagedRoutes)
	for _, rt := range v.RuntimeRoutes {
		if rt.Owner == owner {
			names = append(names, rt.Name)
		}
	}
	slices.Sort(names)
	for _, name := range slices.Compact(names) {
		if err := r.removeRoute(ctx, a, c.Service, name, owner); err != nil {
			return err
		}
	}
	return r.removeMirrorRoutes(ctx, a, c.Service, v, owner, func(string) bool { return true })
}

// jsonNumber is a number written as given ("12.5"), so that a share is
// sent exactly as computed.
type jsonNumber string

func (n jsonNumber) MarshalJSON() ([]byte, error) { return []byte(n), nil }
