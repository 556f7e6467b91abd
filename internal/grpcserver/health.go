package grpcserver

import (
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Service names reported by Health besides "" (the whole server). Envoy's
// grpc_health_check usually names the ext_proc service.
const (
	ExtProcService  = "envoy.service.ext_proc.v3.ExternalProcessor"
	ExtAuthzService = "envoy.service.auth.v3.Authorization"
)

// Health wraps grpc-go's health server: NOT_SERVING until a configuration
// is loaded, SERVING after, NOT_SERVING for good once draining starts.
// A nil *Health ignores every call.
type Health struct {
	srv *health.Server
}

var healthServices = [...]string{"", ExtProcService, ExtAuthzService}

// NewHealth returns a Health reporting NOT_SERVING.
func NewHealth() *Health {
	h := &Health{srv: health.NewServer()}
	h.set(healthpb.HealthCheckResponse_NOT_SERVING)
	return h
}

// Register adds grpc.health.v1.Health to s.
func (h *Health) Register(s grpc.ServiceRegistrar) {
	healthpb.RegisterHealthServer(s, h.srv)
}

// Server returns the underlying health server.
func (h *Health) Server() *health.Server { return h.srv }

// SetServing reports SERVING; call it once a configuration is loaded. It
// has no effect after Drain.
func (h *Health) SetServing() {
	if h != nil {
		h.set(healthpb.HealthCheckResponse_SERVING)
	}
}

// Drain reports NOT_SERVING and ignores later SetServing calls, so a
// reload racing with shutdown cannot bring the server back.
func (h *Health) Drain() {
	if h != nil {
		h.srv.Shutdown()
	}
}

func (h *Health) set(st healthpb.HealthCheckResponse_ServingStatus) {
	for _, name := range healthServices {
		h.srv.SetServingStatus(name, st)
	}
}
