// cbase.c: the benchmark's C baseline, an Envoy dynamic module that does
// only what the splitter's module must do to route a request and nothing
// else: set x-route-version (always "v1") and clear the route cache, in
// plain C, with no Go runtime in the process. bench/viaenvoy compiles it
// (cc -O2 -shared -fPIC -I module/abi) into libsplitter_cbase.so and runs it
// beside the real module, so that "as fast as a C module" is a ratio
// measured in the same rounds. Every HTTP-filter hook Envoy 1.40 resolves is
// defined, as in module/abi/hooks.c.
#include <stdint.h>
#include <stdlib.h>

#include "envoy_abi.h"

#define RH envoy_dynamic_module_type_http_header_type_RequestHeader

static const char route[] = "x-route-version", version[] = "v1";
static int config_token, stream_token;

envoy_dynamic_module_type_abi_version_module_ptr envoy_dynamic_module_on_program_init(void) {
  return SPLITTER_ABI_VERSION;
}

envoy_dynamic_module_type_http_filter_config_module_ptr envoy_dynamic_module_on_http_filter_config_new(
    envoy_dynamic_module_type_http_filter_config_envoy_ptr filter_config_envoy_ptr,
    envoy_dynamic_module_type_envoy_buffer name, envoy_dynamic_module_type_envoy_buffer config) {
  (void)filter_config_envoy_ptr; (void)name; (void)config;
  return &config_token;
}
void envoy_dynamic_module_on_http_filter_config_destroy(envoy_dynamic_module_type_http_filter_config_module_ptr c) {
  (void)c;
}
envoy_dynamic_module_type_http_filter_module_ptr envoy_dynamic_module_on_http_filter_new(
    envoy_dynamic_module_type_http_filter_config_module_ptr filter_config_ptr,
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr) {
  (void)filter_config_ptr; (void)filter_envoy_ptr;
  return &stream_token;
}
void envoy_dynamic_module_on_http_filter_destroy(envoy_dynamic_module_type_http_filter_module_ptr m) { (void)m; }

envoy_dynamic_module_type_on_http_filter_request_headers_status envoy_dynamic_module_on_http_filter_request_headers(
    envoy_dynamic_module_type_http_filter_envoy_ptr f, envoy_dynamic_module_type_http_filter_module_ptr m,
    bool end_of_stream) {
  (void)m; (void)end_of_stream;
  envoy_dynamic_module_callback_http_set_header(f, RH,
      (envoy_dynamic_module_type_module_buffer){route, sizeof route - 1},
      (envoy_dynamic_module_type_module_buffer){version, sizeof version - 1});
  envoy_dynamic_module_callback_http_clear_route_cache(f);
  return envoy_dynamic_module_type_on_http_filter_request_headers_status_Continue;
}
envoy_dynamic_module_type_on_http_filter_response_headers_status envoy_dynamic_module_on_http_filter_response_headers(
    envoy_dynamic_module_type_http_filter_envoy_ptr f, envoy_dynamic_module_type_http_filter_module_ptr m, bool eos) {
  (void)f; (void)m; (void)eos;
  return envoy_dynamic_module_type_on_http_filter_response_headers_status_Continue;
}

// The hooks with nothing to do.
#include "idle_hooks.h"
