package noop

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func TestServeAnswersEveryPhase(t *testing.T) {
	ready := filepath.Join(t.TempDir(), "ready.json")
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- Serve(ctx, Options{ReadyFile: ready}) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	var r Ready
	deadline := time.Now().Add(10 * time.Second)
	for {
		data, err := os.ReadFile(ready)
		if err == nil && json.Unmarshal(data, &r) == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no ready file: %v", err)
		}
		time.Sleep(10 * time.Millisecond) // polling a file: there is nothing to wait on
	}
	if _, _, err := net.SplitHostPort(r.AdminAddr); err != nil {
		t.Fatalf("admin address %q: %v", r.AdminAddr, err)
	}

	cc, err := grpc.NewClient("passthrough:///"+r.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := extprocv3.NewExternalProcessorClient(cc)
	hdrs := &extprocv3.HttpHeaders{Headers: &corev3.HeaderMap{}}
	tests := []struct {
		name string
		req  *extprocv3.ProcessingRequest
		want string // the reply's oneof case
	}{
		{"request headers", &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: hdrs}}, "*ext_procv3.ProcessingResponse_RequestHeaders"},
		{"response headers", &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: hdrs}}, "*ext_procv3.ProcessingResponse_ResponseHeaders"},
		{"request body", &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{}}}, "*ext_procv3.ProcessingResponse_RequestBody"},
		{"response body", &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{}}}, "*ext_procv3.ProcessingResponse_ResponseBody"},
		{"request trailers", &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestTrailers{RequestTrailers: &extprocv3.HttpTrailers{}}}, "*ext_procv3.ProcessingResponse_RequestTrailers"},
		{"response trailers", &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseTrailers{ResponseTrailers: &extprocv3.HttpTrailers{}}}, "*ext_procv3.ProcessingResponse_ResponseTrailers"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := client.Process(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if err := st.Send(tt.req); err != nil {
				t.Fatal(err)
			}
			resp, err := st.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if got := typeName(resp.GetResponse()); got != tt.want {
				t.Errorf("reply %s, want %s", got, tt.want)
			}
			if hr := resp.GetRequestHeaders(); hr != nil && hr.GetResponse().GetHeaderMutation() != nil {
				t.Error("the baseline set a header mutation")
			}
			if err := st.CloseSend(); err != nil {
				t.Fatal(err)
			}
		})
	}

	resp, err := http.Get("http://" + r.AdminAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(body), "\ngo_memstats_mallocs_total ") {
		t.Errorf("/metrics lacks go_memstats_mallocs_total:\n%s", body)
	}
}

func typeName(v any) string { return fmt.Sprintf("%T", v) }
