package check

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	apinetv1alpha3 "istio.io/api/networking/v1alpha3"
	clientnetv1 "istio.io/client-go/pkg/apis/networking/v1"
	clientnetv1alpha3 "istio.io/client-go/pkg/apis/networking/v1alpha3"
	clientsecv1 "istio.io/client-go/pkg/apis/security/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	// The Envoy types the recipes embed, registered for Any resolution.
	dmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/dynamic_modules/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/early_header_mutation/header_mutation/v3"
)

// The headers the splitter sets (its defaults): the route header, the
// reason header, the mirror header, the default experiment's header.
var splitterHeaders = []string{"x-route-version", "x-route-reason", "x-mirror-version", "x-variant"}

// The statistics the rollout guard reads per version's cluster.
var guardStats = []string{"upstream_rq_completed", "upstream_rq_5xx", "upstream_rq_time"}

// istioAdmin is the proxy's admin interface (ProxyConfig.proxyAdminPort's
// default), where a splitter in the pod reads Envoy's statistics.
const istioAdmin = "127.0.0.1:15000"

// proxyConfigAnnotation is the pod annotation Istio reads a ProxyConfig
// from.
const proxyConfigAnnotation = "proxy.istio.io/config"

// strict rejects unknown fields: a misspelt field would otherwise be
// dropped silently (Istio's own JSON unmarshalers allow unknown fields).
var strict = protojson.UnmarshalOptions{DiscardUnknown: false}

// doc is one YAML document of a recipe, as JSON.
type doc struct {
	file string
	n    int
	json []byte
	// kind is apiVersion/kind ("" for the Helm values of mesh-config.yaml).
	kind string
}

func (d doc) String() string { return fmt.Sprintf("%s document %d (%s)", d.file, d.n, d.kind) }

var docSep = regexp.MustCompile(`(?m)^---\s*$`)

// readRecipes reads every YAML document of examples/istio/.
func readRecipes(t *testing.T) []doc {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no recipes in examples/istio/: %v", err)
	}
	var out []doc
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, part := range docSep.Split(string(data), -1) {
			if strings.TrimSpace(stripComments(part)) == "" {
				continue
			}
			j, err := yaml.YAMLToJSONStrict([]byte(part))
			if err != nil {
				t.Fatalf("%s document %d: %v", filepath.Base(f), i+1, err)
			}
			var head struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
			}
			if err := json.Unmarshal(j, &head); err != nil {
				t.Fatalf("%s document %d: %v", filepath.Base(f), i+1, err)
			}
			kind := ""
			if head.Kind != "" {
				kind = head.APIVersion + "/" + head.Kind
			}
			out = append(out, doc{file: filepath.Base(f), n: i + 1, json: j, kind: kind})
		}
	}
	return out
}

func stripComments(s string) string {
	var b strings.Builder
	for line := range strings.Lines(s) {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line)
		}
	}
	return b.String()
}

// decodeJSON decodes data into v, rejecting unknown fields and trailing data.
func decodeJSON(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return fmt.Errorf("trailing data after the object")
	}
	return nil
}

// decodeIstio decodes an Istio resource: the envelope (apiVersion, kind,
// metadata) strictly into obj, the spec strictly into spec with protojson
// (Istio's spec types are protobuf messages).
func decodeIstio(d doc, obj any, spec proto.Message) error {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(d.json, &fields); err != nil {
		return err
	}
	specJSON, ok := fields["spec"]
	if !ok {
		return fmt.Errorf("no spec")
	}
	delete(fields, "spec")
	envelope, err := json.Marshal(fields)
	if err != nil {
		return err
	}
	if err := decodeJSON(envelope, obj); err != nil {
		return fmt.Errorf("envelope: %w", err)
	}
	if err := strict.Unmarshal(specJSON, spec); err != nil {
		return fmt.Errorf("spec: %w", err)
	}
	return nil
}

// validator is what go-control-plane's generated validators offer.
type validator interface{ ValidateAll() error }

// validateEnvoy validates m and, recursively, every Any inside it that
// carries an Envoy type: protoc-gen-validate stops at an Any.
func validateEnvoy(m proto.Message) error {
	if v, ok := m.(validator); ok {
		if err := v.ValidateAll(); err != nil {
			return fmt.Errorf("%s: %w", m.ProtoReflect().Descriptor().FullName(), err)
		}
	}
	var err error
	walkAny(m, func(a *anypb.Any) {
		if err != nil {
			return
		}
		inner, uerr := a.UnmarshalNew()
		if uerr != nil {
			err = fmt.Errorf("%s: %w", a.GetTypeUrl(), uerr)
			return
		}
		err = validateEnvoy(inner)
	})
	return err
}

// walkAny calls f on every Any directly inside m (not inside those Anys).
func walkAny(m proto.Message, f func(*anypb.Any)) {
	r := m.ProtoReflect()
	if a, ok := m.(*anypb.Any); ok {
		f(a)
		return
	}
	r.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			l := v.List()
			for i := range l.Len() {
				walkAny(l.Get(i).Message().Interface(), f)
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				walkAny(mv.Message().Interface(), f)
				return true
			})
		case fd.Message() != nil && !fd.IsList() && !fd.IsMap():
			walkAny(v.Message().Interface(), f)
		}
		return true
	})
}

// envoyFromStruct turns an EnvoyFilter patch value into the Envoy message
// it stands for, strictly.
func envoyFromStruct(s *structpb.Struct, into proto.Message) error {
	data, err := protojson.Marshal(s)
	if err != nil {
		return err
	}
	return strict.Unmarshal(data, into)
}

// recipes is every decoded resource, for the checks across documents.
type recipes struct {
	envoyFilters   []*clientnetv1alpha3.EnvoyFilter
	authz          []*clientsecv1.AuthorizationPolicy
	vs             []*clientnetv1.VirtualService
	dr             []*clientnetv1.DestinationRule
	serviceEntries []*clientnetv1.ServiceEntry
	services       []*corev1.Service
	configMaps     map[string]*corev1.ConfigMap // namespace/name
	deployments    []*appsv1.Deployment
	mesh           *meshv1alpha1.MeshConfig
	// bootstraps are the Envoy bootstrap fragments of ConfigMaps
	// (namespace/name/key), proxyConfigs the ProxyConfig annotations of
	// Deployments (namespace/name).
	bootstraps   map[string]*bootstrapv3.Bootstrap
	proxyConfigs map[string]*meshv1alpha1.ProxyConfig
	// envoy holds each EnvoyFilter patch as the Envoy message it patches in.
	extProc     []*extprocv3.ExternalProcessor
	extProcFile []string // the file of each extProc entry
	modules     []*dmv3.DynamicModuleFilter
	strips      []*hmv3.HeaderMutation
	contexts    map[string][]apinetv1alpha3.EnvoyFilter_PatchContext // file -> patch contexts
}

func newRecipes() *recipes {
	return &recipes{
		contexts:     map[string][]apinetv1alpha3.EnvoyFilter_PatchContext{},
		configMaps:   map[string]*corev1.ConfigMap{},
		bootstraps:   map[string]*bootstrapv3.Bootstrap{},
		proxyConfigs: map[string]*meshv1alpha1.ProxyConfig{},
	}
}

// decodeAll decodes every document with the upstream project's own types,
// unknown fields rejected, and validates every embedded Envoy message.
func decodeAll(docs []doc) (*recipes, error) {
	r := newRecipes()
	for _, d := range docs {
		if err := r.decode(d); err != nil {
			return nil, fmt.Errorf("%s: %w", d, err)
		}
	}
	return r, nil
}

func (r *recipes) decode(d doc) error {
	switch d.kind {
	case "networking.istio.io/v1alpha3/EnvoyFilter":
		o := &clientnetv1alpha3.EnvoyFilter{}
		if err := decodeIstio(d, o, &o.Spec); err != nil {
			return err
		}
		r.envoyFilters = append(r.envoyFilters, o)
		return r.envoyFilter(d, o)
	case "security.istio.io/v1/AuthorizationPolicy":
		o := &clientsecv1.AuthorizationPolicy{}
		r.authz = append(r.authz, o)
		return decodeIstio(d, o, &o.Spec)
	case "networking.istio.io/v1/VirtualService":
		o := &clientnetv1.VirtualService{}
		r.vs = append(r.vs, o)
		return decodeIstio(d, o, &o.Spec)
	case "networking.istio.io/v1/DestinationRule":
		o := &clientnetv1.DestinationRule{}
		r.dr = append(r.dr, o)
		return decodeIstio(d, o, &o.Spec)
	case "v1/Service":
		o := &corev1.Service{}
		r.services = append(r.services, o)
		return decodeJSON(d.json, o)
	case "networking.istio.io/v1/ServiceEntry":
		o := &clientnetv1.ServiceEntry{}
		r.serviceEntries = append(r.serviceEntries, o)
		return decodeIstio(d, o, &o.Spec)
	case "v1/ConfigMap":
		o := &corev1.ConfigMap{}
		if err := decodeJSON(d.json, o); err != nil {
			return err
		}
		r.configMaps[o.Namespace+"/"+o.Name] = o
		// A bootstrap fragment Istio merges into the proxy's bootstrap
		// (ISTIO_BOOTSTRAP_OVERRIDE): an Envoy Bootstrap, strictly.
		if frag, ok := o.Data["custom_bootstrap.json"]; ok {
			b := &bootstrapv3.Bootstrap{}
			if err := strict.Unmarshal([]byte(frag), b); err != nil {
				return fmt.Errorf("custom_bootstrap.json: %w", err)
			}
			if err := validateEnvoy(b); err != nil {
				return fmt.Errorf("custom_bootstrap.json: %w", err)
			}
			// Envoy refuses both at start-up (its validators do not).
			// Istio's own bootstrap sets neither.
			if b.GetStatsFlushOnAdmin() && b.GetStatsFlushInterval() != nil {
				return fmt.Errorf("custom_bootstrap.json: stats_flush_on_admin and stats_flush_interval: Envoy accepts only one")
			}
			r.bootstraps[o.Namespace+"/"+o.Name+"/custom_bootstrap.json"] = b
		}
		return nil
	case "apps/v1/Deployment":
		o := &appsv1.Deployment{}
		if err := decodeJSON(d.json, o); err != nil {
			return err
		}
		r.deployments = append(r.deployments, o)
		// The pod's ProxyConfig (YAML), strictly into Istio's type.
		if pc, ok := o.Spec.Template.Annotations[proxyConfigAnnotation]; ok {
			j, err := yaml.YAMLToJSONStrict([]byte(pc))
			if err != nil {
				return fmt.Errorf("%s: %w", proxyConfigAnnotation, err)
			}
			m := &meshv1alpha1.ProxyConfig{}
			if err := strict.Unmarshal(j, m); err != nil {
				return fmt.Errorf("%s: %w", proxyConfigAnnotation, err)
			}
			for _, re := range m.GetProxyStatsMatcher().GetInclusionRegexps() {
				if _, err := regexp.Compile(re); err != nil {
					return fmt.Errorf("%s: inclusionRegexps %q: %w", proxyConfigAnnotation, re, err)
				}
			}
			r.proxyConfigs[o.Namespace+"/"+o.Name] = m
		}
		return nil
	case "":
		// mesh-config.yaml: istiod's Helm values, meshConfig only.
		var values map[string]json.RawMessage
		if err := json.Unmarshal(d.json, &values); err != nil {
			return err
		}
		for k := range values {
			if k != "meshConfig" {
				return fmt.Errorf("unexpected top-level key %q (only meshConfig)", k)
			}
		}
		r.mesh = &meshv1alpha1.MeshConfig{}
		return strict.Unmarshal(values["meshConfig"], r.mesh)
	default:
		return fmt.Errorf("no decoder for %s", d.kind)
	}
}

// envoyFilter checks every patch: an HTTP filter inserted before the
// router, or the connection manager's early header mutation merged in,
// each a valid Envoy message.
func (r *recipes) envoyFilter(d doc, o *clientnetv1alpha3.EnvoyFilter) error {
	if len(o.Spec.GetConfigPatches()) == 0 {
		return fmt.Errorf("no configPatches")
	}
	for i, p := range o.Spec.GetConfigPatches() {
		where := fmt.Sprintf("configPatches[%d]", i)
		ctx := p.GetMatch().GetContext()
		if ctx != apinetv1alpha3.EnvoyFilter_GATEWAY && ctx != apinetv1alpha3.EnvoyFilter_SIDECAR_OUTBOUND {
			return fmt.Errorf("%s: context %v: routing is done at the gateway or on the calling side (SIDECAR_OUTBOUND)", where, ctx)
		}
		r.contexts[d.file] = append(r.contexts[d.file], ctx)
		filter := p.GetMatch().GetListener().GetFilterChain().GetFilter()
		if filter.GetName() != "envoy.filters.network.http_connection_manager" {
			return fmt.Errorf("%s: matches filter %q, want the HTTP connection manager", where, filter.GetName())
		}
		switch p.GetApplyTo() {
		case apinetv1alpha3.EnvoyFilter_HTTP_FILTER:
			if filter.GetSubFilter().GetName() != "envoy.filters.http.router" || p.GetPatch().GetOperation() != apinetv1alpha3.EnvoyFilter_Patch_INSERT_BEFORE {
				return fmt.Errorf("%s: must be inserted before envoy.filters.http.router (the route is picked again after it)", where)
			}
			f := &hcmv3.HttpFilter{}
			if err := envoyFromStruct(p.GetPatch().GetValue(), f); err != nil {
				return fmt.Errorf("%s value: %w", where, err)
			}
			if err := validateEnvoy(f); err != nil {
				return fmt.Errorf("%s value: %w", where, err)
			}
			inner, err := f.GetTypedConfig().UnmarshalNew()
			if err != nil {
				return err
			}
			switch c := inner.(type) {
			case *extprocv3.ExternalProcessor:
				r.extProc = append(r.extProc, c)
				r.extProcFile = append(r.extProcFile, d.file)
			case *dmv3.DynamicModuleFilter:
				r.modules = append(r.modules, c)
			default:
				return fmt.Errorf("%s: unexpected filter %T", where, inner)
			}
		case apinetv1alpha3.EnvoyFilter_NETWORK_FILTER:
			if p.GetPatch().GetOperation() != apinetv1alpha3.EnvoyFilter_Patch_MERGE {
				return fmt.Errorf("%s: want a MERGE into the connection manager", where)
			}
			// A MERGE value is a fragment: only its typed_config, whose
			// connection manager lacks the fields Istio fills in, so the
			// early header mutations are validated one by one.
			var frag struct {
				TypedConfig json.RawMessage `json:"typed_config"`
			}
			raw, err := protojson.Marshal(p.GetPatch().GetValue())
			if err != nil {
				return err
			}
			if err := decodeJSON(raw, &frag); err != nil {
				return fmt.Errorf("%s value: %w", where, err)
			}
			a := &anypb.Any{}
			if err := strict.Unmarshal(frag.TypedConfig, a); err != nil {
				return fmt.Errorf("%s typed_config: %w", where, err)
			}
			hcm := &hcmv3.HttpConnectionManager{}
			if err := a.UnmarshalTo(hcm); err != nil {
				return fmt.Errorf("%s typed_config: %w", where, err)
			}
			if len(hcm.GetEarlyHeaderMutationExtensions()) == 0 {
				return fmt.Errorf("%s: no early_header_mutation_extensions", where)
			}
			for _, ext := range hcm.GetEarlyHeaderMutationExtensions() {
				if err := validateEnvoy(ext); err != nil {
					return fmt.Errorf("%s: %w", where, err)
				}
				hm := &hmv3.HeaderMutation{}
				if err := ext.GetTypedConfig().UnmarshalTo(hm); err != nil {
					return fmt.Errorf("%s: %w", where, err)
				}
				r.strips = append(r.strips, hm)
			}
		default:
			return fmt.Errorf("%s: applyTo %v", where, p.GetApplyTo())
		}
	}
	return nil
}

// TestRecipesDecodeAndValidate: every document of examples/istio/ decodes
// into Istio's (or Kubernetes') own Go types with unknown fields rejected,
// every Envoy message an EnvoyFilter carries passes go-control-plane's
// validators, and the recipes hold together and say what the splitter
// needs.
func TestRecipesDecodeAndValidate(t *testing.T) {
	docs := readRecipes(t)
	r, err := decodeAll(docs)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d documents decoded", len(docs))

	// The splitter's Service: gRPC, so that Istio builds an HTTP/2 cluster.
	if len(r.services) != 1 {
		t.Fatalf("%d Services, want the splitter's", len(r.services))
	}
	svc := r.services[0]
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].AppProtocol == nil || *svc.Spec.Ports[0].AppProtocol != "grpc" {
		t.Fatalf("the splitter's Service port must have appProtocol grpc: %+v", svc.Spec.Ports)
	}
	host := fmt.Sprintf("%s.%s.svc.cluster.local", svc.Name, svc.Namespace)
	cluster := fmt.Sprintf("outbound|%d||%s", svc.Spec.Ports[0].Port, host)

	// The splitter in the ingress gateway's pod (gateway-guard.yaml): a
	// ServiceEntry for 127.0.0.1, named by that file's ext_proc filter and
	// by mesh-config.yaml's splitter-local provider.
	if len(r.serviceEntries) != 1 {
		t.Fatalf("%d ServiceEntries, want gateway-guard.yaml's", len(r.serviceEntries))
	}
	se := r.serviceEntries[0]
	if len(se.Spec.GetHosts()) != 1 || len(se.Spec.GetPorts()) != 1 || len(se.Spec.GetEndpoints()) != 1 ||
		se.Spec.GetEndpoints()[0].GetAddress() != "127.0.0.1" || se.Spec.GetPorts()[0].GetProtocol() != "GRPC" ||
		se.Spec.GetResolution().String() != "STATIC" {
		t.Fatalf("ServiceEntry %s: %v; want one host, one GRPC port, the endpoint 127.0.0.1, resolution STATIC", se.Name, &se.Spec)
	}
	localHost, localPort := se.Spec.GetHosts()[0], se.Spec.GetPorts()[0].GetNumber()
	localCluster := fmt.Sprintf("outbound|%d||%s", localPort, localHost)

	t.Run("ext_proc", func(t *testing.T) {
		if !slices.Equal(r.contexts["ext-proc.yaml"], []apinetv1alpha3.EnvoyFilter_PatchContext{apinetv1alpha3.EnvoyFilter_GATEWAY, apinetv1alpha3.EnvoyFilter_SIDECAR_OUTBOUND}) {
			t.Fatalf("want ext_proc in the gateway and the outbound sidecar, got %v", r.contexts["ext-proc.yaml"])
		}
		if !slices.Equal(r.contexts["gateway-guard.yaml"], []apinetv1alpha3.EnvoyFilter_PatchContext{apinetv1alpha3.EnvoyFilter_GATEWAY}) {
			t.Fatalf("want gateway-guard.yaml's ext_proc in the gateway, got %v", r.contexts["gateway-guard.yaml"])
		}
		if len(r.extProc) != 3 {
			t.Fatalf("%d ext_proc filters, want 3 (ext-proc.yaml's two, gateway-guard.yaml's)", len(r.extProc))
		}
		for i, c := range r.extProc {
			want := cluster
			if r.extProcFile[i] == "gateway-guard.yaml" {
				want = localCluster
			}
			pm := c.GetProcessingMode()
			switch {
			case c.GetGrpcService().GetEnvoyGrpc().GetClusterName() != want:
				t.Errorf("%s filter: cluster %q, want %q", r.extProcFile[i], c.GetGrpcService().GetEnvoyGrpc().GetClusterName(), want)
			case !c.GetFailureModeAllow():
				t.Errorf("filter %d: failure_mode_allow must be true (the splitter down means stable, not an error)", i)
			case pm.GetRequestHeaderMode() != extprocv3.ProcessingMode_SEND || pm.GetResponseHeaderMode() != extprocv3.ProcessingMode_SKIP ||
				pm.GetRequestBodyMode() != extprocv3.ProcessingMode_NONE || pm.GetResponseBodyMode() != extprocv3.ProcessingMode_NONE:
				t.Errorf("filter %d: processing_mode %v, want request headers only", i, pm)
			case c.GetMessageTimeout().AsDuration().Seconds() != 0.2:
				t.Errorf("filter %d: message_timeout %v, want 200ms", i, c.GetMessageTimeout().AsDuration())
			case c.GetRouteCacheAction() != extprocv3.ExternalProcessor_DEFAULT:
				t.Errorf("filter %d: route_cache_action %v: DEFAULT honours the splitter's clear_route_cache", i, c.GetRouteCacheAction())
			case !c.GetAllowModeOverride():
				t.Errorf("filter %d: allow_mode_override must be true: the splitter asks for the response headers of a request given a sticky key, to add its cookie", i)
			}
			allow := regexp.MustCompile(c.GetMutationRules().GetAllowExpression().GetRegex())
			for _, h := range append(slices.Clone(splitterHeaders), "set-cookie") {
				if !allow.MatchString(h) {
					t.Errorf("filter %d: mutation_rules do not allow %s", i, h)
				}
			}
		}
	})
	t.Run("ext_authz", func(t *testing.T) {
		if len(r.authz) != 1 || r.authz[0].Spec.GetAction().String() != "CUSTOM" {
			t.Fatalf("want one AuthorizationPolicy with action CUSTOM, got %d", len(r.authz))
		}
		name := r.authz[0].Spec.GetProvider().GetName()
		if r.mesh == nil {
			t.Fatal("no meshConfig")
		}
		want := map[string]string{
			"splitter":       fmt.Sprintf("%s:%d", host, svc.Spec.Ports[0].Port),
			"splitter-local": fmt.Sprintf("%s:%d", localHost, localPort),
		}
		seen := map[string]bool{}
		for _, p := range r.mesh.GetExtensionProviders() {
			seen[p.GetName()] = true
			g := p.GetEnvoyExtAuthzGrpc()
			addr, known := want[p.GetName()]
			if !known || g == nil || !g.GetClearRouteCache() || !g.GetFailOpen() || fmt.Sprintf("%s:%d", g.GetService(), g.GetPort()) != addr {
				t.Errorf("provider %q: %v; want envoyExtAuthzGrpc to %s with clearRouteCache and failOpen", p.GetName(), p, addr)
			}
		}
		for n := range want {
			if !seen[n] {
				t.Errorf("meshConfig.extensionProviders lacks %q", n)
			}
		}
		if !seen[name] {
			t.Fatalf("the AuthorizationPolicy names provider %q, which meshConfig.extensionProviders lacks", name)
		}
	})
	t.Run("module", func(t *testing.T) {
		if len(r.modules) != 1 {
			t.Fatalf("%d dynamic-module filters, want 1", len(r.modules))
		}
		m := r.modules[0]
		if m.GetFilterName() != "splitter" || !m.GetDynamicModuleConfig().GetDoNotClose() ||
			!strings.HasSuffix(m.GetDynamicModuleConfig().GetModule().GetLocal().GetFilename(), "/libsplitter.so") {
			t.Fatalf("module filter %v: want filter_name splitter, do_not_close, a local libsplitter.so", m)
		}
		s := &wrapperspb.StringValue{}
		if err := m.GetFilterConfig().UnmarshalTo(s); err != nil {
			t.Fatalf("filter_config must be a google.protobuf.StringValue: %v", err)
		}
		var settings map[string]any
		if err := json.Unmarshal([]byte(s.GetValue()), &settings); err != nil {
			t.Fatalf("filter_config is not a JSON object: %v", err)
		}
		if settings["config"] == nil {
			t.Fatalf("filter_config %v names no routing configuration", settings)
		}
	})
	t.Run("client route headers are stripped before routing", func(t *testing.T) {
		if !slices.Equal(r.contexts["strip-route-headers.yaml"], []apinetv1alpha3.EnvoyFilter_PatchContext{apinetv1alpha3.EnvoyFilter_GATEWAY, apinetv1alpha3.EnvoyFilter_SIDECAR_OUTBOUND}) {
			t.Fatalf("want the strip in the gateway and the outbound sidecar, got %v", r.contexts["strip-route-headers.yaml"])
		}
		for i, hm := range r.strips {
			var removed []string
			for _, m := range hm.GetMutations() {
				removed = append(removed, m.GetRemove())
			}
			for _, h := range splitterHeaders {
				if !slices.Contains(removed, h) {
					t.Errorf("strip %d removes %v, not %s", i, removed, h)
				}
			}
		}
	})
	t.Run("routing on x-route-version, mirroring on x-mirror-version", func(t *testing.T) {
		if len(r.vs) != 1 || len(r.dr) != 1 {
			t.Fatalf("want one VirtualService and one DestinationRule, got %d and %d", len(r.vs), len(r.dr))
		}
		subsets := map[string]bool{}
		for _, s := range r.dr[0].Spec.GetSubsets() {
			subsets[s.GetName()] = true
		}
		routes := r.vs[0].Spec.GetHttp()
		if len(routes) < 2 {
			t.Fatalf("%d HTTP routes, want one per canary version and the stable one", len(routes))
		}
		mirrors, plainSeen := 0, false
		for i, h := range routes {
			dest := h.GetRoute()[0].GetDestination()
			if dest.GetHost() != r.dr[0].Spec.GetHost() || !subsets[dest.GetSubset()] {
				t.Errorf("route %d goes to %s subset %q, which the DestinationRule lacks", i, dest.GetHost(), dest.GetSubset())
			}
			last := i == len(routes)-1
			if last != (len(h.GetMatch()) == 0) {
				t.Errorf("route %d: only the last route (the stable version) may match everything", i)
			}
			if last {
				continue
			}
			headers := h.GetMatch()[0].GetHeaders()
			if m := headers["x-route-version"]; m.GetExact() != dest.GetSubset() {
				t.Errorf("route %d matches x-route-version %v but goes to subset %q", i, m, dest.GetSubset())
			}
			if h.GetMirror() == nil {
				plainSeen = true
				continue
			}
			// A mirror route: before every other route (routes are tried
			// in order, and a route on x-route-version alone would take
			// its requests without the copy), copying every request it
			// matches (the splitter picks them) to the subset named by
			// x-mirror-version.
			mirrors++
			m := h.GetMirror()
			switch {
			case plainSeen:
				t.Errorf("mirror route %d comes after a route without a mirror, which takes its requests first", i)
			case m.GetHost() != r.dr[0].Spec.GetHost() || !subsets[m.GetSubset()]:
				t.Errorf("mirror route %d copies to %s subset %q, which the DestinationRule lacks", i, m.GetHost(), m.GetSubset())
			case headers["x-mirror-version"].GetExact() != m.GetSubset():
				t.Errorf("mirror route %d matches x-mirror-version %v but copies to subset %q", i, headers["x-mirror-version"], m.GetSubset())
			case h.GetMirrorPercentage() == nil || h.GetMirrorPercentage().GetValue() != 100:
				t.Errorf("mirror route %d: mirrorPercentage %v, want 100 (the splitter picks the requests)", i, h.GetMirrorPercentage())
			case m.GetSubset() == dest.GetSubset():
				t.Errorf("mirror route %d copies subset %q to itself", i, m.GetSubset())
			}
		}
		if mirrors == 0 {
			t.Error("no mirror route: the splitter's x-mirror-version would copy nothing")
		}
	})
	t.Run("the guard's statistics in the gateway", func(t *testing.T) {
		r.checkGuard(t, localPort)
	})
}

// checkGuard checks gateway-guard.yaml's Deployment: the splitter beside
// the proxy reads its admin interface; the proxy creates every statistic
// the guard reads for every cluster of the splitter's configuration, which
// are the DestinationRule's subsets, and flushes stats at every admin read.
func (r *recipes) checkGuard(t *testing.T, grpcPort uint32) {
	t.Helper()
	if len(r.deployments) != 2 {
		t.Fatalf("%d Deployments, want splitter.yaml's and gateway-guard.yaml's", len(r.deployments))
	}
	var dep *appsv1.Deployment
	for _, d := range r.deployments {
		if d.Spec.Template.Labels["istio"] == "ingressgateway" {
			dep = d
		}
	}
	if dep == nil {
		t.Fatal("no Deployment of the ingress gateway (istio: ingressgateway)")
	}
	pod := dep.Spec.Template.Spec
	if dep.Spec.Template.Labels["sidecar.istio.io/inject"] != "true" || dep.Spec.Template.Annotations["inject.istio.io/templates"] != "gateway" {
		t.Errorf("the gateway's pod must be injected with Istio's gateway template")
	}
	env := func(c corev1.Container) map[string]string {
		out := map[string]string{}
		for _, e := range c.Env {
			out[e.Name] = e.Value
		}
		return out
	}
	mountedConfigMap := func(c corev1.Container, dir string) *corev1.ConfigMap {
		for _, m := range c.VolumeMounts {
			if m.MountPath != dir {
				continue
			}
			if m.SubPath != "" {
				t.Errorf("%s mounts %s with a subPath: ConfigMap updates would never reach it", c.Name, dir)
			}
			for _, v := range pod.Volumes {
				if v.Name == m.Name && v.ConfigMap != nil {
					return r.configMaps[dep.Namespace+"/"+v.ConfigMap.Name]
				}
			}
		}
		return nil
	}
	var splitter, proxy *corev1.Container
	for i, c := range pod.InitContainers {
		if c.Name == "splitter" && c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			splitter = &pod.InitContainers[i]
		}
	}
	for i, c := range pod.Containers {
		if c.Name == "istio-proxy" {
			proxy = &pod.Containers[i]
		}
	}
	if splitter == nil || proxy == nil {
		t.Fatal("want the splitter as a native sidecar (an init container, restartPolicy Always) and the istio-proxy container")
	}

	se := env(*splitter)
	if se["SPLITTER_ENVOY_ADMIN"] != istioAdmin {
		t.Errorf("the splitter reads Envoy's admin at %q, want the proxy's %s", se["SPLITTER_ENVOY_ADMIN"], istioAdmin)
	}
	if want := fmt.Sprintf("127.0.0.1:%d", grpcPort); se["SPLITTER_GRPC_ADDR"] != want {
		t.Errorf("the splitter listens on %q, want %s (the ServiceEntry's endpoint and port)", se["SPLITTER_GRPC_ADDR"], want)
	}
	cfgPath := se["SPLITTER_CONFIG"]
	cm := mountedConfigMap(*splitter, filepath.Dir(cfgPath))
	if cm == nil || cm.Data[filepath.Base(cfgPath)] == "" {
		t.Fatalf("the splitter's configuration %s is not a key of a ConfigMap mounted at its directory", cfgPath)
	}
	var cfg struct {
		Services []struct {
			Weights  map[string]any    `json:"weights"`
			Clusters map[string]string `json:"clusters"`
		} `json:"services"`
	}
	if err := yaml.Unmarshal([]byte(cm.Data[filepath.Base(cfgPath)]), &cfg); err != nil || len(cfg.Services) == 0 {
		t.Fatalf("the splitter's configuration: %v", err)
	}
	subsets := map[string]bool{}
	for _, s := range r.dr[0].Spec.GetSubsets() {
		subsets[s.GetName()] = true
	}
	var clusters []string
	for v := range cfg.Services[0].Weights {
		c := cfg.Services[0].Clusters[v]
		parts := strings.Split(c, "|")
		if len(parts) != 4 || parts[0] != "outbound" || parts[2] != v || !subsets[v] || parts[3] != r.dr[0].Spec.GetHost() {
			t.Errorf("version %s is counted on cluster %q, want Istio's cluster of its subset: outbound|<port>|%s|%s", v, c, v, r.dr[0].Spec.GetHost())
		}
		clusters = append(clusters, c)
	}

	pc := r.proxyConfigs[dep.Namespace+"/"+dep.Name]
	if pc == nil {
		t.Fatalf("the gateway's pod has no %s annotation: Istio creates none of the per-cluster statistics the guard reads", proxyConfigAnnotation)
	}
	for _, c := range clusters {
		for _, st := range guardStats {
			name := "cluster." + c + "." + st
			if !slices.ContainsFunc(pc.GetProxyStatsMatcher().GetInclusionRegexps(), func(re string) bool {
				return regexp.MustCompile("^(?:" + re + ")$").MatchString(name)
			}) {
				t.Errorf("no proxyStatsMatcher.inclusionRegexps entry matches %s in full: Istio would not create it", name)
			}
		}
	}

	pe := env(*proxy)
	override := pe["ISTIO_BOOTSTRAP_OVERRIDE"]
	bcm := mountedConfigMap(*proxy, filepath.Dir(override))
	if override == "" || bcm == nil {
		t.Fatalf("istio-proxy: ISTIO_BOOTSTRAP_OVERRIDE %q is not a key of a ConfigMap mounted at its directory", override)
	}
	b := r.bootstraps[bcm.Namespace+"/"+bcm.Name+"/"+filepath.Base(override)]
	if b == nil || !b.GetStatsFlushOnAdmin() {
		t.Errorf("the proxy's bootstrap override %s does not set stats_flush_on_admin: Envoy would merge latency histograms every 5s only", override)
	}
}

// TestStrictDecodingCatchesMistakes: the checks above can fail. Each case
// breaks one recipe document the way a user might, and decoding or
// validation must reject it.
func TestStrictDecodingCatchesMistakes(t *testing.T) {
	docs := readRecipes(t)
	find := func(file, contains string) doc {
		for _, d := range docs {
			if d.file == file && bytes.Contains(d.json, []byte(contains)) {
				return d
			}
		}
		t.Fatalf("no document of %s contains %q", file, contains)
		return doc{}
	}
	cases := []struct {
		name, file, contains, old, new string
	}{
		{"a misspelt Envoy field", "ext-proc.yaml", "GATEWAY", `"failure_mode_allow"`, `"failure_mode_alow"`},
		{"an Envoy value out of range", "ext-proc.yaml", "GATEWAY", `"message_timeout":"0.2s"`, `"message_timeout":"-1s"`},
		{"an unknown Envoy type", "module.yaml", "dynamic_modules", `DynamicModuleFilter"`, `DynamicModuleFiltr"`},
		{"a misspelt EnvoyFilter field", "ext-proc.yaml", "GATEWAY", `"applyTo"`, `"applyto"`},
		{"an unknown patch context", "ext-proc.yaml", "GATEWAY", `"GATEWAY"`, `"GATEWAYS"`},
		{"a misspelt metadata field", "routing.yaml", "VirtualService", `"namespace"`, `"namespaces"`},
		{"a misspelt VirtualService field", "routing.yaml", "VirtualService", `"exact"`, `"exactly"`},
		{"a misspelt mesh provider field", "mesh-config.yaml", "extensionProviders", `"clearRouteCache"`, `"clearRouteCaches"`},
		{"a misspelt AuthorizationPolicy field", "ext-authz.yaml", "CUSTOM", `"provider"`, `"providers"`},
		{"a misspelt Service field", "splitter.yaml", `"Service"`, `"appProtocol"`, `"appProtocols"`},
		{"an extension without a name", "strip-route-headers.yaml", "GATEWAY", `"name":"envoy.http.early_header_mutation.header_mutation"`, `"name":""`},
		{"a misspelt ServiceEntry field", "gateway-guard.yaml", `"ServiceEntry"`, `"resolution"`, `"resolutions"`},
		{"a misspelt mirror field", "routing.yaml", "VirtualService", `"mirrorPercentage"`, `"mirrorPercentag"`},
		{"a misspelt bootstrap field", "gateway-guard.yaml", "custom_bootstrap.json", `stats_flush_on_admin`, `stats_flush_on_admn`},
		{"stats_flush_on_admin false", "gateway-guard.yaml", "custom_bootstrap.json", `\"stats_flush_on_admin\": true`, `\"stats_flush_on_admin\": false`},
		{"two stats flush settings", "gateway-guard.yaml", "custom_bootstrap.json", `\"stats_flush_on_admin\": true`, `\"stats_flush_on_admin\": true, \"stats_flush_interval\": \"1s\"`},
		{"a misspelt ProxyConfig field", "gateway-guard.yaml", "inject.istio.io/templates", `inclusionRegexps`, `inclusionRegexp`},
		{"a stats regexp that does not compile", "gateway-guard.yaml", "inject.istio.io/templates", `upstream_rq_time)'`, `upstream_rq_time'`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := find(tc.file, tc.contains)
			if !bytes.Contains(d.json, []byte(tc.old)) {
				t.Fatalf("%s has no %s to break", d, tc.old)
			}
			d.json = bytes.Replace(d.json, []byte(tc.old), []byte(tc.new), 1)
			r := newRecipes()
			err := r.decode(d)
			if err == nil {
				t.Fatalf("%s with %s accepted", d, tc.new)
			}
			t.Logf("rejected: %v", err)
		})
	}
}
