// splitter.h: what the C hooks (hooks.c) and the Go side (abi.go) share.
// Declarations only: cgo forbids definitions in the preamble of a file that
// exports Go functions. The sizes mirror package module's constants; a Go
// test checks that they agree.
#pragma once
#include "envoy_abi.h"

#define SP_MAX_THREADS 256  // module.MaxThreads: worker threads with their own slot
#define SP_MAX_PAIRS 1024   // module.MaxPairs: (service, version) pairs counted
#define SP_CLASSES 7        // module.NumClasses: reset, 1xx .. 5xx, aborted
#define SP_RESET 0          // module.ClassReset: Envoy cut the response off (upstream failure)
#define SP_ABORTED 6        // module.ClassAborted: the client went away before any response
#define SP_PLAN_MAX 8192    // module.MaxPlanBytes
#define SP_COOKIE_MAX 512   // module.MaxCookieBytes
#define SP_YIELD_NS 5000000 // a worker lets Go's scheduler run at most this often
#define SP_LAT_BUCKETS 124  // signals.LatencyBuckets: the latency histogram's buckets

// Decide's statuses (module.Status), plus SP_GO_FAILED for a Go call that
// did not answer (a panic outside the decision): C applies the fallback.
enum { SP_OK = 0, SP_RETRY = 1, SP_NO_CONFIG = 2, SP_PANIC = 3, SP_GO_FAILED = -1 };

// One header handed to Go: Envoy's own layout, so a name C owns and a value
// pointing into Envoy's header map (valid during the hook only).
typedef envoy_dynamic_module_type_envoy_http_header sp_hdr;

// A string in C memory.
typedef struct { const char *ptr; size_t len; } sp_str;

// The headers read before each decision, published by Go (sp_set_reads).
// A set stays valid for a grace period after it is replaced, far longer
// than any hook holds it.
typedef struct sp_reads {
  uint32_t id;
  uint32_t n;
  sp_str names[];
} sp_reads;

// Go's answer to one request, written into the calling thread's buffer.
typedef struct {
  int32_t pair;      // counter pair of the decided version, -1 for none
  uint32_t plan_len; // bytes of plan
  uint32_t cookie_len; // bytes of cookie; 0 unless the request was given a sticky key
  uint8_t plan[SP_PLAN_MAX]; // encoded plan (module.EncodePlan)
  char cookie[SP_COOKIE_MAX]; // the Set-Cookie value its response must carry
} sp_out;

// What the module keeps per HTTP stream: the decided version's pair and
// what answered it (the response's class, SP_RESET, or SP_ABORTED until a
// response or an upstream failure is seen), counted when the stream is
// destroyed; and, for a request given a fresh sticky key only, the
// Set-Cookie value its response headers get (malloc'd, freed with the
// stream). Per-stream response accounting (a timestamp for latency, say)
// goes here too: the record is reused from the thread's free list.
typedef struct sp_stream {
  struct sp_stream *next; // free list
  int32_t pair;
  int32_t cls;
  char *cookie;
  uint32_t cookie_len;
  uint64_t start_ns; // CLOCK_MONOTONIC at the request headers; 0: not timed
} sp_stream;

// Set by Go, read by the hooks.
sp_reads *sp_set_reads(sp_reads *next); // returns the replaced set
void sp_set_fallback(const uint8_t *plan, uint32_t len);
// Read by Go: the responses counted for pair, by class, over every thread.
void sp_counts(int32_t pair, uint64_t out[SP_CLASSES]);
// Set by Go once: the latency histogram's bucket bounds in nanoseconds
// (signals.LatencyBoundsNs); responses are timed from then on.
void sp_set_latency_bounds(const uint64_t *ns, uint32_t n);
// Read by Go: the responses of pair timed so far, by latency bucket, over
// every thread.
void sp_latency(int32_t pair, uint64_t out[SP_LAT_BUCKETS]);
