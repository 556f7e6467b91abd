package main

import (
	"github.com/argoproj/argo-rollouts/pkg/apis/rollouts/v1alpha1"
	"github.com/argoproj/argo-rollouts/rollout/trafficrouting/plugin/rpc"
	"github.com/argoproj/argo-rollouts/utils/plugin/types"

	"github.com/trafficsplit/splitter/argo-rollouts/router"
)

// plugin is Argo's TrafficRouterPlugin over the router: it turns Argo's
// types into the router's and the router's errors into Argo's RpcError,
// whose text is the splitter's own message.
type plugin struct {
	r *router.Router
}

var _ rpc.TrafficRouterPlugin = (*plugin)(nil)

// InitPlugin has nothing to do: every Rollout brings its own
// configuration.
func (p *plugin) InitPlugin() types.RpcError { return types.RpcError{} }

// Type names the router in the controller's log.
func (p *plugin) Type() string { return router.Name }

// UpdateHash has nothing to do: splitter routes to versions whose Envoy
// clusters are the Rollout's stable and canary Services, which Argo
// points at the right pods itself.
func (p *plugin) UpdateHash(*v1alpha1.Rollout, string, string, []v1alpha1.WeightDestination) types.RpcError {
	return types.RpcError{}
}

func (p *plugin) SetWeight(ro *v1alpha1.Rollout, desired int32, extra []v1alpha1.WeightDestination) types.RpcError {
	ctx, cancel := p.r.Context()
	defer cancel()
	return rpcError(p.r.SetWeight(ctx, rollout(ro), desired, len(extra)))
}

func (p *plugin) VerifyWeight(ro *v1alpha1.Rollout, desired int32, extra []v1alpha1.WeightDestination) (types.RpcVerified, types.RpcError) {
	ctx, cancel := p.r.Context()
	defer cancel()
	ok, err := p.r.VerifyWeight(ctx, rollout(ro), desired, len(extra))
	if ok && err == nil {
		return types.Verified, types.RpcError{}
	}
	return types.NotVerified, rpcError(err)
}

func (p *plugin) SetHeaderRoute(ro *v1alpha1.Rollout, h *v1alpha1.SetHeaderRoute) types.RpcError {
	ctx, cancel := p.r.Context()
	defer cancel()
	if h == nil {
		h = &v1alpha1.SetHeaderRoute{}
	}
	matches := make([]router.HeaderMatch, 0, len(h.Match))
	for _, m := range h.Match {
		matches = append(matches, router.HeaderMatch{Header: m.HeaderName, Value: stringMatch(m.HeaderValue)})
	}
	return rpcError(p.r.SetHeaderRoute(ctx, rollout(ro), h.Name, matches))
}

func (p *plugin) SetMirrorRoute(ro *v1alpha1.Rollout, m *v1alpha1.SetMirrorRoute) types.RpcError {
	ctx, cancel := p.r.Context()
	defer cancel()
	if m == nil {
		m = &v1alpha1.SetMirrorRoute{}
	}
	mr := router.MirrorRoute{Name: m.Name, Percentage: m.Percentage}
	for _, rm := range m.Match {
		mm := router.MirrorMatch{Method: stringMatch(rm.Method), Path: stringMatch(rm.Path)}
		if len(rm.Headers) > 0 {
			mm.Headers = map[string]router.StringMatch{}
			for name, v := range rm.Headers {
				mm.Headers[name] = *stringMatch(&v)
			}
		}
		mr.Matches = append(mr.Matches, mm)
	}
	return rpcError(p.r.SetMirrorRoute(ctx, rollout(ro), mr))
}

func (p *plugin) RemoveManagedRoutes(ro *v1alpha1.Rollout) types.RpcError {
	ctx, cancel := p.r.Context()
	defer cancel()
	return rpcError(p.r.RemoveManagedRoutes(ctx, rollout(ro)))
}

// rollout reads what the router needs of ro.
func rollout(ro *v1alpha1.Rollout) router.Rollout {
	if ro == nil {
		return router.Rollout{}
	}
	out := router.Rollout{Namespace: ro.Namespace, Name: ro.Name}
	c := ro.Spec.Strategy.Canary
	if c == nil || c.TrafficRouting == nil {
		return out
	}
	tr := c.TrafficRouting
	out.Config = tr.Plugins[router.Name]
	if tr.MaxTrafficWeight != nil {
		out.MaxWeight = *tr.MaxTrafficWeight
	}
	for _, m := range tr.ManagedRoutes {
		out.ManagedRoutes = append(out.ManagedRoutes, m.Name)
	}
	return out
}

func stringMatch(m *v1alpha1.StringMatch) *router.StringMatch {
	if m == nil {
		return nil
	}
	return &router.StringMatch{Exact: m.Exact, Prefix: m.Prefix, Regex: m.Regex}
}

// rpcError is Argo's error for err ("" for none).
func rpcError(err error) types.RpcError {
	if err == nil {
		return types.RpcError{}
	}
	return types.RpcError{ErrorString: err.Error()}
}
