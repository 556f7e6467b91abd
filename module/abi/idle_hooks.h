// idle_hooks.h: the HTTP-filter hooks Envoy 1.40 resolves that splitter has
// nothing to do in (per-route configuration, which is not supported,
// bodies, trailers, stream completion, scheduling, callouts, watermarks,
// and, unless the includer defines SPLITTER_OWN_LOCAL_REPLY, local
// replies). Each answers "continue" or does nothing, in plain C, so
// these phases never enter the Go runtime. Included
// by exactly one C file of each library that needs the full hook set: the
// module (hooks.c) and the benchmark's C baseline (bench/cmodule/cbase.c),
// so the two cannot drift apart.
#ifndef SPLITTER_IDLE_HOOKS_H
#define SPLITTER_IDLE_HOOKS_H

#include "envoy_abi.h"

// Per-route configuration is not supported: Envoy rejects it.
envoy_dynamic_module_type_http_filter_per_route_config_module_ptr envoy_dynamic_module_on_http_filter_per_route_config_new(
    envoy_dynamic_module_type_envoy_buffer name, envoy_dynamic_module_type_envoy_buffer config) {
  (void)name; (void)config;
  return NULL;
}
void envoy_dynamic_module_on_http_filter_per_route_config_destroy(
    envoy_dynamic_module_type_http_filter_per_route_config_module_ptr p) { (void)p; }


envoy_dynamic_module_type_on_http_filter_request_body_status envoy_dynamic_module_on_http_filter_request_body(
    envoy_dynamic_module_type_http_filter_envoy_ptr f, envoy_dynamic_module_type_http_filter_module_ptr m, bool eos) {
  (void)f; (void)m; (void)eos;
  return envoy_dynamic_module_type_on_http_filter_request_body_status_Continue;
}
envoy_dynamic_module_type_on_http_filter_request_trailers_status envoy_dynamic_module_on_http_filter_request_trailers(
    envoy_dynamic_module_type_http_filter_envoy_ptr f, envoy_dynamic_module_type_http_filter_module_ptr m) {
  (void)f; (void)m;
  return envoy_dynamic_module_type_on_http_filter_request_trailers_status_Continue;
}
envoy_dynamic_module_type_on_http_filter_response_body_status envoy_dynamic_module_on_http_filter_response_body(
    envoy_dynamic_module_type_http_filter_envoy_ptr f, envoy_dynamic_module_type_http_filter_module_ptr m, bool eos) {
  (void)f; (void)m; (void)eos;
  return envoy_dynamic_module_type_on_http_filter_response_body_status_Continue;
}
envoy_dynamic_module_type_on_http_filter_response_trailers_status envoy_dynamic_module_on_http_filter_response_trailers(
    envoy_dynamic_module_type_http_filter_envoy_ptr f, envoy_dynamic_module_type_http_filter_module_ptr m) {
  (void)f; (void)m;
  return envoy_dynamic_module_type_on_http_filter_response_trailers_status_Continue;
}
void envoy_dynamic_module_on_http_filter_stream_complete(envoy_dynamic_module_type_http_filter_envoy_ptr f,
                                                         envoy_dynamic_module_type_http_filter_module_ptr m) {
  (void)f; (void)m;
}
#ifndef SPLITTER_OWN_LOCAL_REPLY // the module counts local replies (hooks.c)
envoy_dynamic_module_type_on_http_filter_local_reply_status envoy_dynamic_module_on_http_filter_local_reply(
    envoy_dynamic_module_type_http_filter_envoy_ptr f, envoy_dynamic_module_type_http_filter_module_ptr m,
    uint32_t response_code, envoy_dynamic_module_type_envoy_buffer details, bool reset_imminent) {
  (void)f; (void)m; (void)response_code; (void)details; (void)reset_imminent;
  return envoy_dynamic_module_type_on_http_filter_local_reply_status_Continue;
}
#endif
void envoy_dynamic_module_on_http_filter_scheduled(envoy_dynamic_module_type_http_filter_envoy_ptr f,
                                                   envoy_dynamic_module_type_http_filter_module_ptr m, uint64_t event_id) {
  (void)f; (void)m; (void)event_id;
}
void envoy_dynamic_module_on_http_filter_config_scheduled(envoy_dynamic_module_type_http_filter_config_envoy_ptr ce,
                                                          envoy_dynamic_module_type_http_filter_config_module_ptr cm,
                                                          uint64_t event_id) {
  (void)ce; (void)cm; (void)event_id;
}
void envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    envoy_dynamic_module_type_http_filter_envoy_ptr f, envoy_dynamic_module_type_http_filter_module_ptr m) {
  (void)f; (void)m;
}
void envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    envoy_dynamic_module_type_http_filter_envoy_ptr f, envoy_dynamic_module_type_http_filter_module_ptr m) {
  (void)f; (void)m;
}

// HTTP callouts and streams the filter would start: splitter starts none.
void envoy_dynamic_module_on_http_filter_http_callout_done(
    envoy_dynamic_module_type_http_filter_envoy_ptr f, envoy_dynamic_module_type_http_filter_module_ptr m,
    uint64_t callout_id, envoy_dynamic_module_type_http_callout_result result,
    envoy_dynamic_module_type_envoy_http_header *headers, size_t headers_size,
    envoy_dynamic_module_type_envoy_buffer *body_chunks, size_t body_chunks_size) {
  (void)f; (void)m; (void)callout_id; (void)result; (void)headers; (void)headers_size; (void)body_chunks;
  (void)body_chunks_size;
}
void envoy_dynamic_module_on_http_filter_http_stream_headers(
    envoy_dynamic_module_type_http_filter_envoy_ptr f, envoy_dynamic_module_type_http_filter_module_ptr m,
    uint64_t stream_id, envoy_dynamic_module_type_envoy_http_header *headers, size_t headers_size, bool end_stream) {
  (void)f; (void)m; (void)stream_id; (void)headers; (void)headers_size; (void)end_stream;
}
void envoy_dynamic_module_on_http_filter_http_stream_data(
    envoy_dynamic_module_type_http_filter_envoy_ptr f, envoy_dynamic_module_type_http_filter_module_ptr m,
    uint64_t stream_id, const envoy_dynamic_module_type_envoy_buffer *data, size_t data_count, bool end_stream) {
  (void)f; (void)m; (void)stream_id; (void)data; (void)data_count; (void)end_stream;
}
void envoy_dynamic_module_on_http_filter_http_stream_trailers(
    envoy_dynamic_module_type_http_filter_envoy_ptr f, envoy_dynamic_module_type_http_filter_module_ptr m,
    uint64_t stream_id, envoy_dynamic_module_type_envoy_http_header *trailers, size_t trailers_size) {
  (void)f; (void)m; (void)stream_id; (void)trailers; (void)trailers_size;
}
void envoy_dynamic_module_on_http_filter_http_stream_complete(
    envoy_dynamic_module_type_http_filter_envoy_ptr f, envoy_dynamic_module_type_http_filter_module_ptr m,
    uint64_t stream_id) {
  (void)f; (void)m; (void)stream_id;
}
void envoy_dynamic_module_on_http_filter_http_stream_reset(
    envoy_dynamic_module_type_http_filter_envoy_ptr f, envoy_dynamic_module_type_http_filter_module_ptr m,
    uint64_t stream_id, envoy_dynamic_module_type_http_stream_reset_reason reason) {
  (void)f; (void)m; (void)stream_id; (void)reason;
}
void envoy_dynamic_module_on_http_filter_config_http_callout_done(
    envoy_dynamic_module_type_http_filter_config_envoy_ptr ce, envoy_dynamic_module_type_http_filter_config_module_ptr cm,
    uint64_t callout_id, envoy_dynamic_module_type_http_callout_result result,
    envoy_dynamic_module_type_envoy_http_header *headers, size_t headers_size,
    envoy_dynamic_module_type_envoy_buffer *body_chunks, size_t body_chunks_size) {
  (void)ce; (void)cm; (void)callout_id; (void)result; (void)headers; (void)headers_size; (void)body_chunks;
  (void)body_chunks_size;
}
void envoy_dynamic_module_on_http_filter_config_http_stream_headers(
    envoy_dynamic_module_type_http_filter_config_envoy_ptr ce, envoy_dynamic_module_type_http_filter_config_module_ptr cm,
    uint64_t stream_id, envoy_dynamic_module_type_envoy_http_header *headers, size_t headers_size, bool end_stream) {
  (void)ce; (void)cm; (void)stream_id; (void)headers; (void)headers_size; (void)end_stream;
}
void envoy_dynamic_module_on_http_filter_config_http_stream_data(
    envoy_dynamic_module_type_http_filter_config_envoy_ptr ce, envoy_dynamic_module_type_http_filter_config_module_ptr cm,
    uint64_t stream_id, const envoy_dynamic_module_type_envoy_buffer *data, size_t data_count, bool end_stream) {
  (void)ce; (void)cm; (void)stream_id; (void)data; (void)data_count; (void)end_stream;
}
void envoy_dynamic_module_on_http_filter_config_http_stream_trailers(
    envoy_dynamic_module_type_http_filter_config_envoy_ptr ce, envoy_dynamic_module_type_http_filter_config_module_ptr cm,
    uint64_t stream_id, envoy_dynamic_module_type_envoy_http_header *trailers, size_t trailers_size) {
  (void)ce; (void)cm; (void)stream_id; (void)trailers; (void)trailers_size;
}
void envoy_dynamic_module_on_http_filter_config_http_stream_complete(
    envoy_dynamic_module_type_http_filter_config_envoy_ptr ce, envoy_dynamic_module_type_http_filter_config_module_ptr cm,
    uint64_t stream_id) {
  (void)ce; (void)cm; (void)stream_id;
}
void envoy_dynamic_module_on_http_filter_config_http_stream_reset(
    envoy_dynamic_module_type_http_filter_config_envoy_ptr ce, envoy_dynamic_module_type_http_filter_config_module_ptr cm,
    uint64_t stream_id, envoy_dynamic_module_type_http_stream_reset_reason reason) {
  (void)ce; (void)cm; (void)stream_id; (void)reason;
}

#endif  // SPLITTER_IDLE_HOOKS_H
