package extauthz

import (
	"context"
	"net"
	"sync"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/trafficsplit/splitter/adapter"
	"github.com/trafficsplit/splitter/internal/grpcserver"
	"github.com/trafficsplit/splitter/split"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	routeHdr  = "x-route-version"
	reasonHdr = "x-route-reason"
)

type source struct{ t *split.Table }

func (s source) Table() *split.Table { return s.t }

type panicSource struct{}

func (panicSource) Table() *split.Table { panic("injected") }

type recorder struct {
	mu      sync.Mutex
	results map[string]int
	decided int
}

func (r *recorder) Decided(string, *split.Decision) { r.mu.Lock(); r.decided++; r.mu.Unlock() }
func (r *recorder) StreamStarted(string)            {}
func (r *recorder) StreamEnded(_ string, res string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.results == nil {
		r.results = map[string]int{}
	}
	r.results[res]++
}
func (r *recorder) PhaseUnexpected(string, string) {}
func (r *recorder) Panic(string)                   {}

func compile(t *testing.T, cfg *split.Config) *split.Table {
	t.Helper()
	tab, err := split.Compile(cfg)
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	return tab
}

func hostConfig() *split.Config {
	return &split.Config{Services: []split.Service{{
		Name: "api", Hosts: []string{"api.example.com"},
		Weights: split.Weights{{Version: "v1", BasisPoints: 10000}},
	}}}
}

type hv struct{ name, value string }

// ok is the answer that removes remove and sets hs; a request that is not
// mirrored also loses any mirror header a client sent.
func ok(remove []string, hs ...hv) *authv3.CheckResponse {
	mirrored := false
	for _, h := range hs {
		mirrored = mirrored || h.name == "x-mirror-version"
	}
	if !mirrored {
		remove = append(remove, "x-mirror-version")
	}
	r := &authv3.OkHttpResponse{HeadersToRemove: remove}
	for _, h := range hs {
		r.Headers = append(r.Headers, &corev3.HeaderValueOption{
			Header:       &corev3.HeaderValue{Key: h.name, Value: h.value},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		})
	}
	return &authv3.CheckResponse{Status: &rpcstatus.Status{}, HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: r}}
}

func check(http *authv3.AttributeContext_HttpRequest) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: http}}}
}

func TestCheck(t *testing.T) {
	unmatched := ok([]string{routeHdr}, hv{reasonHdr, "unmatched"})
	beta := ok(nil, hv{routeHdr, "v2"}, hv{reasonHdr, "header_match"})
	hostV1 := ok(nil, hv{routeHdr, "v1"}, hv{reasonHdr, "weighted_routing"})
	for _, c := range []struct {
		name string
		cfg  func() *split.Config
		req  *authv3.CheckRequest
		want *authv3.CheckResponse
	}{
		{"headers map", split.Default, check(&authv3.AttributeContext_HttpRequest{
			Host: "api.example.com", Path: "/x", Method: "GET",
			Headers: map[string]string{":authority": "api.example.com", "x-beta": "true", routeHdr: "v1"},
		}), beta},
		{"header_map with raw values", split.Default, check(&authv3.AttributeContext_HttpRequest{
			HeaderMap: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
				{Key: ":authority", RawValue: []byte("api.example.com")},
				{Key: "x-beta", RawValue: []byte("true")},
			}},
		}), beta},
		{"authority from http.host", hostConfig, check(&authv3.AttributeContext_HttpRequest{
			Host: "api.example.com", Headers: map[string]string{":authority": "other.example.com"},
		}), hostV1},
		{"authority from :authority header", hostConfig, check(&authv3.AttributeContext_HttpRequest{
			Headers: map[string]string{":authority": "api.example.com:443"},
		}), hostV1},
		{"unmatched removes the route header", hostConfig, check(&authv3.AttributeContext_HttpRequest{
			Host: "other.example.com", Headers: map[string]string{routeHdr: "v2"},
		}), unmatched},
		{"no attributes at all", hostConfig, &authv3.CheckRequest{}, unmatched},
	} {
		t.Run(c.name, func(t *testing.T) {
			rec := &recorder{}
			s := New(source{compile(t, c.cfg())}, Options{Headers: adapter.Headers{Route: routeHdr, Reason: reasonHdr}, Recorder: rec})
			got, err := s.Check(t.Context(), c.req)
			if err != nil {
				t.Fatalf("Check: %v", err)
			}
			if d := cmp.Diff(c.want, got, protocmp.Transform()); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
			if rec.decided != 1 || rec.results[adapter.ResultOK] != 1 {
				t.Errorf("decided=%d results=%v", rec.decided, rec.results)
			}
		})
	}
}

func TestCheckExperimentHeader(t *testing.T) {
	tab := compile(t, split.Default())
	s := New(source{tab}, Options{Headers: adapter.Headers{Route: routeHdr}})
	got, err := s.Check(t.Context(), check(&authv3.AttributeContext_HttpRequest{
		Headers: map[string]string{"x-beta": "true", "x-user-id": "user-123"},
	}))
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	var hs []hv
	for _, h := range got.GetOkResponse().GetHeaders() {
		hs = append(hs, hv{h.GetHeader().GetKey(), h.GetHeader().GetValue()})
		if len(h.GetHeader().GetRawValue()) != 0 {
			t.Errorf("%s: raw_value set; ext_authz reads value", h.GetHeader().GetKey())
		}
	}
	if len(hs) != 2 || hs[0] != (hv{routeHdr, "v2"}) || hs[1].name != "x-variant" || (hs[1].value != "A" && hs[1].value != "B") {
		t.Errorf("headers = %v, want route v2 and x-variant A|B", hs)
	}
}

func TestCheckNeverDenies(t *testing.T) {
	for _, c := range []struct {
		name       string
		src        adapter.TableSource
		wantResult string
	}{
		{"no config", source{nil}, adapter.ResultNoConfig},
		{"panicking source", panicSource{}, adapter.ResultPanic},
	} {
		t.Run(c.name, func(t *testing.T) {
			rec := &recorder{}
			s := New(c.src, Options{Headers: adapter.Headers{Route: routeHdr}, Recorder: rec})
			got, err := s.Check(t.Context(), check(&authv3.AttributeContext_HttpRequest{Headers: map[string]string{routeHdr: "v2"}}))
			if err != nil {
				t.Fatalf("Check error %v: an error is a denial under failure_mode_allow false", err)
			}
			if d := cmp.Diff(ok([]string{routeHdr}), got, protocmp.Transform()); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
			if rec.results[c.wantResult] != 1 {
				t.Errorf("results = %v, want %s", rec.results, c.wantResult)
			}
		})
	}
}

func TestCheckOverGRPC(t *testing.T) {
	lis := bufconn.Listen(1 << 20)
	srv := grpcserver.New(grpcserver.Options{})
	New(source{compile(t, split.Default())}, Options{Headers: adapter.Headers{Route: routeHdr}}).Register(srv)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	conn, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer func() {
		conn.Close()
		srv.Stop()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	got, err := authv3.NewAuthorizationClient(conn).Check(t.Context(), check(&authv3.AttributeContext_HttpRequest{
		Headers: map[string]string{":authority": "api.example.com", "x-beta": "true"},
	}))
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	if d := cmp.Diff(ok(nil, hv{routeHdr, "v2"}), got, protocmp.Transform()); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
}
