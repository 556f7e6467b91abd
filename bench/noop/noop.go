// Package noop is the benchmark baseline: an ext_proc server written the
// ordinary way (grpc-go defaults, a fresh response per message) that
// answers every request_headers message with an empty CommonResponse and
// decides nothing. What the splitter costs beyond it is the price of
// deciding; what it costs itself is the price of ext_proc over grpc-go.
package noop

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Server implements the ext_proc service and changes nothing.
type Server struct {
	extprocv3.UnimplementedExternalProcessorServer
}

// Process answers each message with the empty reply of its own phase.
func (Server) Process(st extprocv3.ExternalProcessor_ProcessServer) error {
	for {
		req, err := st.Recv()
		if err != nil {
			// Envoy half-closes and then resets every stream.
			if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled || errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		}
		if req.GetObservabilityMode() {
			continue
		}
		var resp *extprocv3.ProcessingResponse
		switch req.GetRequest().(type) {
		case *extprocv3.ProcessingRequest_RequestHeaders:
			resp = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{
				RequestHeaders: &extprocv3.HeadersResponse{Response: &extprocv3.CommonResponse{}}}}
		case *extprocv3.ProcessingRequest_ResponseHeaders:
			resp = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{
				ResponseHeaders: &extprocv3.HeadersResponse{}}}
		case *extprocv3.ProcessingRequest_RequestBody:
			resp = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{
				RequestBody: &extprocv3.BodyResponse{}}}
		case *extprocv3.ProcessingRequest_ResponseBody:
			resp = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{
				ResponseBody: &extprocv3.BodyResponse{}}}
		case *extprocv3.ProcessingRequest_RequestTrailers:
			resp = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestTrailers{
				RequestTrailers: &extprocv3.TrailersResponse{}}}
		case *extprocv3.ProcessingRequest_ResponseTrailers:
			resp = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseTrailers{
				ResponseTrailers: &extprocv3.TrailersResponse{}}}
		default:
			return status.Errorf(codes.InvalidArgument, "noop: unexpected message %T", req.GetRequest())
		}
		if err := st.Send(resp); err != nil {
			return err
		}
	}
}

// Options configures Serve.
type Options struct {
	GRPCAddr  string // default 127.0.0.1:0
	AdminAddr string // default 127.0.0.1:0; "-" disables the admin port
	ReadyFile string // if set, {"grpc_addr","admin_addr"} is written there once listening
	Logger    *slog.Logger
}

// Ready is the content of the ready file, the same shape as
// `splitter serve --ready-file`.
type Ready struct {
	GRPCAddr  string `json:"grpc_addr"`
	AdminAddr string `json:"admin_addr"`
}

// Serve runs the baseline until ctx is done. The admin port serves
// go_memstats_mallocs_total on /metrics so that the benchmark reads
// allocations the same way as from the splitter.
func Serve(ctx context.Context, opts Options) error {
	if opts.GRPCAddr == "" {
		opts.GRPCAddr = "127.0.0.1:0"
	}
	if opts.AdminAddr == "" {
		opts.AdminAddr = "127.0.0.1:0"
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var lc net.ListenConfig
	gl, err := lc.Listen(ctx, "tcp", opts.GRPCAddr)
	if err != nil {
		return fmt.Errorf("noop: grpc listen: %w", err)
	}
	gs := grpc.NewServer()
	extprocv3.RegisterExternalProcessorServer(gs, Server{})
	ready := Ready{GRPCAddr: gl.Addr().String()}

	var hs *http.Server
	var al net.Listener
	if opts.AdminAddr != "-" {
		al, err = lc.Listen(ctx, "tcp", opts.AdminAddr)
		if err != nil {
			gl.Close()
			return fmt.Errorf("noop: admin listen: %w", err)
		}
		mux := http.NewServeMux()
		mux.HandleFunc("GET /metrics", metrics)
		hs = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		ready.AdminAddr = al.Addr().String()
	}

	errc := make(chan error, 2)
	go func() { errc <- gs.Serve(gl) }()
	if hs != nil {
		go func() {
			if err := hs.Serve(al); !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}()
	}
	if opts.ReadyFile != "" {
		if err := WriteReady(opts.ReadyFile, ready); err != nil {
			gs.Stop()
			if hs != nil {
				hs.Close()
			}
			return err
		}
	}
	log.Info("noop ext_proc baseline listening", "grpc_addr", ready.GRPCAddr, "admin_addr", ready.AdminAddr)

	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	if hs != nil {
		hs.Close()
	}
	gs.Stop()
	if err != nil {
		return fmt.Errorf("noop: serve: %w", err)
	}
	return nil
}

// metrics writes the one Go runtime counter the benchmark reads, in the
// Prometheus text format and under the name client_golang gives it, so the
// baseline needs no metrics library (and its allocations stay its own).
func metrics(w http.ResponseWriter, _ *http.Request) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	fmt.Fprintf(w, "# HELP go_memstats_mallocs_total Total number of heap objects allocated.\n"+
		"# TYPE go_memstats_mallocs_total counter\ngo_memstats_mallocs_total %d\n", ms.Mallocs)
}

// WriteReady writes r to path atomically (temporary file, then rename),
// so a reader polling for the file never sees half of it.
func WriteReady(path string, r Ready) error {
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".ready-*")
	if err != nil {
		return fmt.Errorf("ready file %s: %w", path, err)
	}
	_, werr := tmp.Write(data)
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("ready file %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("ready file %s: %w", path, err)
	}
	return nil
}
