package envoy

import (
	"os"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

func TestGeneratedFilesUpToDate(t *testing.T) {
	for name, p := range Generated() {
		t.Run(name, func(t *testing.T) {
			want, err := Render(p)
			if err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(name)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(want) {
				t.Fatalf("%s differs from the template's output: run `go generate ./envoy/...` (and never edit it by hand)", name)
			}
		})
	}
}

func loopback(mode Mode, versions ...string) Params {
	p := Params{
		Mode:     mode,
		Listen:   Addr{Host: "127.0.0.1"},
		Admin:    Addr{Host: "127.0.0.1"},
		Splitter: Addr{Host: "127.0.0.1", Port: 9001},
	}
	for i, v := range versions {
		p.Backends = append(p.Backends, Backend{Version: v, Addr: Addr{Host: "127.0.0.1", Port: 8081 + i}, Weight: 100 / len(versions)})
	}
	return p
}

// doc is a rendered bootstrap decoded into generic maps, with helpers that
// walk a dotted path (numbers index lists) and fail the test when it is absent.
type doc struct {
	t *testing.T
	m any
}

func parse(t *testing.T, p Params) doc {
	t.Helper()
	out, err := Render(p)
	if err != nil {
		t.Fatal(err)
	}
	var m any
	if err := yaml.Unmarshal(out, &m); err != nil {
		t.Fatalf("rendered bootstrap is not YAML: %v\n%s", err, out)
	}
	return doc{t, m}
}

func (d doc) get(path string) any {
	d.t.Helper()
	v, ok := lookup(d.m, path)
	if !ok {
		d.t.Fatalf("%s: absent", path)
	}
	return v
}

func (d doc) has(path string) bool {
	_, ok := lookup(d.m, path)
	return ok
}

func lookup(v any, path string) (any, bool) {
	for _, key := range strings.Split(path, ".") {
		switch x := v.(type) {
		case map[string]any:
			var ok bool
			if v, ok = x[key]; !ok {
				return nil, false
			}
		case []any:
			i := 0
			for _, c := range key {
				if c < '0' || c > '9' {
					return nil, false
				}
				i = i*10 + int(c-'0')
			}
			if i >= len(x) {
				return nil, false
			}
			v = x[i]
		default:
			return nil, false
		}
	}
	return v, true
}

const hcm = "static_resources.listeners.0.filter_chains.0.filters.0.typed_config"

func TestRenderedBootstrap(t *testing.T) {
	cases := []struct {
		name   string
		p      Params
		checks func(t *testing.T, d doc)
	}{
		{
			name: "ext_proc strips client route headers before the route is picked",
			p:    loopback(ModeExtProc, "v1", "v2"),
			checks: func(t *testing.T, d doc) {
				ext := d.get(hcm + ".early_header_mutation_extensions.0")
				if got := d.get(hcm + ".early_header_mutation_extensions.0.name"); got != "envoy.http.early_header_mutation.header_mutation" {
					t.Fatalf("early mutation extension %v", ext)
				}
				if got := d.get(hcm + ".early_header_mutation_extensions.0.typed_config.mutations.0.remove"); got != "x-route-version" {
					t.Fatalf("first early mutation removes %v, want x-route-version", got)
				}
				if got := d.get(hcm + ".early_header_mutation_extensions.0.typed_config.mutations.1.remove"); got != "x-mirror-version" {
					t.Fatalf("second early mutation removes %v, want x-mirror-version", got)
				}
			},
		},
		{
			name: "ext_proc asks for request headers only and fails open",
			p:    loopback(ModeExtProc, "v1", "v2"),
			checks: func(t *testing.T, d doc) {
				f := hcm + ".http_filters.0.typed_config"
				want := map[string]any{
					".processing_mode.request_header_mode":   "SEND",
					".processing_mode.response_header_mode":  "SKIP",
					".processing_mode.request_body_mode":     "NONE",
					".processing_mode.response_body_mode":    "NONE",
					".processing_mode.request_trailer_mode":  "SKIP",
					".processing_mode.response_trailer_mode": "SKIP",
					".failure_mode_allow":                    true,
					".message_timeout":                       "0.2s",
					".route_cache_action":                    "DEFAULT",
					".allow_mode_override":                   true,
					".mutation_rules.disallow_all":           true,
					".mutation_rules.allow_expression.regex": "^(x-route-version|x-mirror-version|set-cookie)$",
				}
				for path, w := range want {
					if got := d.get(f + path); got != w {
						t.Errorf("%s = %v, want %v", path, got, w)
					}
				}
				if got := d.get(hcm + ".http_filters.1.name"); got != "envoy.filters.http.router" {
					t.Errorf("second filter %v, want the router", got)
				}
			},
		},
		{
			name: "routes: mirror pairs, then one per canary on the route header, stable last",
			p:    loopback(ModeExtProc, "v1", "v2", "v3"),
			checks: func(t *testing.T, d doc) {
				routes := d.get(hcm + ".route_config.virtual_hosts.0.routes").([]any)
				if len(routes) != 6+3 {
					t.Fatalf("%d routes, want 6 mirror routes and 3", len(routes))
				}
				i := 0
				for _, served := range []string{"v1", "v2", "v3"} {
					for _, m := range []string{"v1", "v2", "v3"} {
						if m == served {
							continue
						}
						r := doc{t, routes[i]}
						if r.get("match.headers.0.name") != "x-route-version" || r.get("match.headers.0.string_match.exact") != served ||
							r.get("match.headers.1.name") != "x-mirror-version" || r.get("match.headers.1.string_match.exact") != m ||
							r.get("route.cluster") != served || r.get("route.request_mirror_policies.0.cluster") != m || r.has("route.request_mirror_policies.1") {
							t.Errorf("route %d = %v, want %s mirrored to %s", i, routes[i], served, m)
						}
						i++
					}
				}
				routes = routes[6:]
				for i, v := range []string{"v2", "v3"} {
					r := doc{t, routes[i]}
					if r.get("match.headers.0.name") != "x-route-version" || r.get("match.headers.0.string_match.exact") != v || r.get("route.cluster") != v ||
						r.has("match.headers.1") || r.has("route.request_mirror_policies") {
						t.Errorf("route %d = %v, want x-route-version %s -> %s", i, routes[i], v, v)
					}
				}
				last := doc{t, routes[2]}
				if last.has("match.headers") || last.get("route.cluster") != "v1" {
					t.Errorf("last route %v, want the catch-all to v1", routes[2])
				}
			},
		},
		{
			name: "splitter cluster speaks HTTP/2 with raised circuit breakers",
			p:    loopback(ModeExtProc, "v1", "v2"),
			checks: func(t *testing.T, d doc) {
				c := doc{t, d.get("static_resources.clusters.2")}
				if c.get("name") != "splitter" || c.get("type") != "STATIC" {
					t.Fatalf("third cluster %v", c.m)
				}
				// The option's key has dots of its own: index the map directly.
				opts := c.get("typed_extension_protocol_options").(map[string]any)
				h := doc{t, opts["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]}
				if _, ok := h.get("explicit_http_config.http2_protocol_options").(map[string]any); !ok {
					t.Error("splitter cluster lacks explicit HTTP/2")
				}
				for _, k := range []string{"max_connections", "max_pending_requests", "max_requests", "max_retries"} {
					if v, _ := c.get("circuit_breakers.thresholds.0." + k).(float64); v < 10000 {
						t.Errorf("circuit breaker %s = %v, want it raised", k, v)
					}
				}
			},
		},
		{
			name: "ext_authz: V3, timeout, fail open, clear route cache, mutation rules",
			p: func() Params {
				p := loopback(ModeExtAuthz, "v1", "v2")
				p.MutableHeaders = []string{"x-route-reason", "x-variant"}
				p.MessageTimeout = 150 * time.Millisecond
				return p
			}(),
			checks: func(t *testing.T, d doc) {
				f := hcm + ".http_filters.0"
				want := map[string]any{
					".name":                               "envoy.filters.http.ext_authz",
					".typed_config.transport_api_version": "V3",
					".typed_config.grpc_service.timeout":  "0.15s",
					".typed_config.failure_mode_allow":    true,
					".typed_config.clear_route_cache":     true,
					".typed_config.decoder_header_mutation_rules.allow_expression.regex": "^(x-route-version|x-route-reason|x-variant|x-mirror-version)$",
				}
				for path, w := range want {
					if got := d.get(f + path); got != w {
						t.Errorf("%s = %v, want %v", path, got, w)
					}
				}
				if d.has(f + ".typed_config.with_request_body") {
					t.Error("with_request_body is set; the splitter needs headers only")
				}
				if d.get(hcm+".early_header_mutation_extensions.0.typed_config.mutations.0.remove") != "x-route-version" {
					t.Error("ext_authz bootstrap lacks the early strip of x-route-version")
				}
			},
		},
		{
			name: "weighted: Envoy's own split, no splitter cluster",
			p:    loopback(ModeWeighted, "v1", "v2"),
			checks: func(t *testing.T, d doc) {
				wc := hcm + ".route_config.virtual_hosts.0.routes.0.route.weighted_clusters.clusters"
				if d.get(wc+".0.name") != "v1" || d.get(wc+".0.weight") != float64(50) {
					t.Errorf("weighted clusters %v", d.get(wc))
				}
				if d.has("static_resources.clusters.2") {
					t.Error("weighted mode has a third (splitter) cluster")
				}
				if d.get(hcm+".http_filters.0.name") != "envoy.filters.http.router" {
					t.Error("weighted mode has a filter before the router")
				}
			},
		},
		{
			name: "module: the dynamic module filter with filter_config, early strip, no splitter cluster",
			p: func() Params {
				p := loopback(ModeModule, "v1", "v2")
				p.Splitter = Addr{}
				p.Module.Config = `{"config": "/etc/splitter/config.yaml", "admin_addr": "127.0.0.1:9002"}`
				return p
			}(),
			checks: func(t *testing.T, d doc) {
				f := hcm + ".http_filters.0"
				want := map[string]any{
					".name":               "envoy.filters.http.dynamic_modules",
					".typed_config.@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
					".typed_config.dynamic_module_config.name": "splitter",
					".typed_config.filter_name":                "splitter",
					".typed_config.filter_config.@type":        "type.googleapis.com/google.protobuf.StringValue",
					".typed_config.filter_config.value":        `{"config": "/etc/splitter/config.yaml", "admin_addr": "127.0.0.1:9002"}`,
				}
				for path, w := range want {
					if got := d.get(f + path); got != w {
						t.Errorf("%s = %v, want %v", path, got, w)
					}
				}
				if d.get(hcm+".early_header_mutation_extensions.0.typed_config.mutations.0.remove") != "x-route-version" {
					t.Error("module bootstrap lacks the early strip of x-route-version")
				}
				if d.has("static_resources.clusters.2") {
					t.Error("module mode has a third (splitter) cluster")
				}
				routes := d.get(hcm + ".route_config.virtual_hosts.0.routes").([]any)
				if len(routes) != 4 || (doc{t, routes[2]}).get("match.headers.0.string_match.exact") != "v2" {
					t.Errorf("routes %v", routes)
				}
			},
		},
		{
			name: "compose: DNS clusters, access log, admin on loopback",
			p:    Compose(ModeExtProc),
			checks: func(t *testing.T, d doc) {
				if d.get("static_resources.clusters.0.type") != "STRICT_DNS" || d.get("static_resources.clusters.2.load_assignment.endpoints.0.lb_endpoints.0.endpoint.address.socket_address.address") != "splitter" {
					t.Error("compose clusters are not DNS names")
				}
				if d.get("admin.address.socket_address.address") != "127.0.0.1" {
					t.Error("admin is not on loopback")
				}
				if !d.has(hcm + ".access_log") {
					t.Error("no access log")
				}
				// The stats listener passes GET /stats only, to the admin
				// interface on loopback.
				stats := "static_resources.listeners.1.filter_chains.0.filters.0.typed_config.route_config.virtual_hosts.0.routes"
				if d.get("static_resources.listeners.1.name") != "stats" || d.get(stats+".0.match.path") != "/stats" ||
					d.get(stats+".0.route.cluster") != "envoy_admin" || d.get(stats+".1.direct_response.status") != float64(404) {
					t.Errorf("stats listener routes: %v", d.get(stats))
				}
				admin := "static_resources.clusters.3.load_assignment.endpoints.0.lb_endpoints.0.endpoint.address.socket_address"
				if d.get("static_resources.clusters.3.name") != "envoy_admin" || d.get(admin+".address") != "127.0.0.1" || d.get(admin+".port_value") != float64(9901) {
					t.Errorf("envoy_admin cluster: %v", d.get("static_resources.clusters.3"))
				}
			},
		},
		{
			name: "kubernetes: the splitter reads the admin interface itself, no stats listener",
			p:    Kubernetes(),
			checks: func(t *testing.T, d doc) {
				if d.has("static_resources.listeners.1") {
					t.Error("a second listener in the pod's bootstrap")
				}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.checks(t, parse(t, tc.p))
		})
	}
}

func TestRenderRejectsBadParams(t *testing.T) {
	cases := []struct {
		name string
		edit func(*Params)
		want string
	}{
		{"unknown mode", func(p *Params) { p.Mode = "lua" }, "mode"},
		{"no backends", func(p *Params) { p.Backends = nil }, "backends"},
		{"duplicate version", func(p *Params) { p.Backends[1].Version = "v1" }, "repeated"},
		{"cluster name clash", func(p *Params) { p.Backends[1].Version = "splitter" }, "cluster name"},
		{"yaml injection in a host", func(p *Params) { p.Backends[0].Addr.Host = "a } }" }, "host"},
		{"upper-case header", func(p *Params) { p.MutableHeaders = []string{"X-Variant"} }, "mutable_headers[1]"},
		{"mirror header is the route header", func(p *Params) { p.MirrorHeader = "x-route-version" }, "mirror_header"},
		{"mirror header injection", func(p *Params) { p.MirrorHeader = "x-m } }" }, "mirror_header"},
		{"sub-millisecond timeout", func(p *Params) { p.MessageTimeout = 1500 * time.Microsecond }, "message_timeout"},
		{"splitter port unknown", func(p *Params) { p.Splitter.Port = 0 }, "splitter"},
		{"admin cluster name clash", func(p *Params) { p.Backends[1].Version = "envoy_admin" }, "cluster name"},
		{"stats without a fixed admin port", func(p *Params) { p.Stats = Addr{Host: "127.0.0.1", Port: 9902}; p.Admin.Port = 0 }, "stats"},
		{"module config not JSON", func(p *Params) { p.Mode = ModeModule; p.Module.Config = "config: x" }, "module.config"},
		{"module config not an object", func(p *Params) { p.Mode = ModeModule; p.Module.Config = `["x"]` }, "module.config"},
		{"module name with a path", func(p *Params) { p.Mode = ModeModule; p.Module.Name = "../evil" }, "module.name"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := loopback(ModeExtProc, "v1", "v2")
			tc.edit(&p)
			_, err := Render(p)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Render error %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}
