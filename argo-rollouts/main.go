// Command splitter-argo-rollouts is splitter's traffic-router plugin for
// Argo Rollouts: the controller starts it through hashicorp go-plugin
// (net/rpc), registered as "trafficsplit/splitter" in the
// argo-rollouts-config ConfigMap, and each Rollout that names it in
// spec.strategy.canary.trafficRouting.plugins has its weights, header
// routes and weight checks carried out on a splitter service through the
// splitter's admin API (docs/argo-rollouts.md). Run by hand, it says that
// it is a plugin and exits.
package main

import (
	"log/slog"
	"os"

	goplugin "github.com/hashicorp/go-plugin"

	"github.com/argoproj/argo-rollouts/rollout/trafficrouting/plugin/rpc"

	"github.com/trafficsplit/splitter/argo-rollouts/router"
)

// handshake is Argo's for traffic routers (its trafficrouting plugin
// client): a binary started with another cookie refuses to run.
var handshake = goplugin.HandshakeConfig{
	ProtocolVersion:  1,
	MagicCookieKey:   "ARGO_ROLLOUTS_RPC_PLUGIN",
	MagicCookieValue: "trafficrouter",
}

func main() {
	// go-plugin hands the plugin's stderr to the controller's log.
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("plugin", router.Name)
	impl := &plugin{r: router.New(router.Options{Logger: log})}
	goplugin.Serve(&goplugin.ServeConfig{
		HandshakeConfig: handshake,
		Plugins: map[string]goplugin.Plugin{
			"RpcTrafficRouterPlugin": &rpc.RpcTrafficRouterPlugin{Impl: impl},
		},
	})
}
