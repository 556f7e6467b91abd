// hooks.c: every HTTP-filter hook Envoy 1.40 resolves, in C. Only the
// request-headers hook enters Go, once per request (and the filter config
// hooks, at configuration time); the others do their small work in C or
// nothing. See docs/module.md.
//
// What is counted per version (docs/module.md, "what is an error"): the
// status of the response headers that reach the filter, which include the
// 502/503/504 Envoy answers itself when the upstream fails before
// responding; SP_RESET when Envoy cut a started response off (it reports an
// upstream failure through the local-reply hook after the response
// headers); SP_ABORTED when the stream ends with neither, i.e. the client
// went away first. Aborted streams are neither requests nor errors for the
// rollout guard: a client must not be able to fail (or dilute) a version.
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "splitter.h"
#include "_cgo_export.h"

#define RH envoy_dynamic_module_type_http_header_type_RequestHeader
#define RESP envoy_dynamic_module_type_http_header_type_ResponseHeader
#define MAX_FREE_STREAMS 4096 // per thread; beyond, streams go back to malloc

// One Envoy worker thread's state, made on its first stream. Only a pointer
// lives in thread-local storage: a dlopen'd library's static TLS is small.
typedef struct {
  int32_t slot;   // index in sp_threads and Go's scratch slot; -1 beyond SP_MAX_THREADS
  uint64_t last_yield_ns;
  sp_hdr *hdrs;   // headers handed to Go
  size_t cap;
  sp_stream *free;
  uint32_t nfree;
  uint64_t (*counts)[SP_CLASSES]; // own[] or, without a slot, sp_shared_counts
  // This thread's latency histograms per pair, allocated at its first
  // timed response (pages are touched only for the pairs in use);
  // published atomically for sp_latency. NULL until then, and without a
  // slot (sp_shared_lat instead).
  uint64_t (*lat)[SP_LAT_BUCKETS];
  sp_out out;
  uint64_t own[SP_MAX_PAIRS][SP_CLASSES]; // written by this thread only
} sp_thread;

static sp_thread *sp_threads[SP_MAX_THREADS];
static uint32_t sp_nthreads;
static uint64_t sp_shared_counts[SP_MAX_PAIRS][SP_CLASSES]; // atomic adds
static sp_reads *sp_cur_reads;
// The latency histogram's bounds (ns), set once by Go before the first
// request; sp_lat_n is 0 until then (nothing is timed).
static uint64_t sp_lat_bounds[SP_LAT_BUCKETS - 1];
static uint32_t sp_lat_n;
static uint64_t (*sp_shared_lat)[SP_LAT_BUCKETS]; // threads without a slot: atomic adds
typedef struct { uint32_t len; uint8_t plan[]; } sp_plan;
static sp_plan *sp_fallback;
static __thread sp_thread *tls_thread;
static sp_stream sp_no_stream = {NULL, -1, SP_ABORTED, NULL, 0}; // when malloc fails: never written

static inline envoy_dynamic_module_type_module_buffer mb(const char *p, size_t n) {
  return (envoy_dynamic_module_type_module_buffer){p, n};
}

static sp_thread *thread_state(void) {
  sp_thread *t = tls_thread;
  if (__builtin_expect(t != NULL, 1)) return t;
  t = calloc(1, sizeof *t);
  if (t == NULL) return NULL;
  t->cap = 16;
  t->hdrs = malloc(t->cap * sizeof *t->hdrs);
  if (t->hdrs == NULL) {
    free(t);
    return NULL;
  }
  uint32_t i = __atomic_fetch_add(&sp_nthreads, 1, __ATOMIC_RELAXED);
  if (i < SP_MAX_THREADS) {
    t->slot = (int32_t)i;
    t->counts = t->own;
    __atomic_store_n(&sp_threads[i], t, __ATOMIC_RELEASE);
  } else {
    t->slot = -1;
    t->counts = sp_shared_counts;
  }
  tls_thread = t;
  return t;
}

sp_reads *sp_set_reads(sp_reads *next) {
  return __atomic_exchange_n(&sp_cur_reads, next, __ATOMIC_ACQ_REL);
}

void sp_set_fallback(const uint8_t *plan, uint32_t len) {
  sp_plan *p = malloc(sizeof *p + len);
  if (p == NULL) return;
  p->len = len;
  memcpy(p->plan, plan, len);
  // Set once per process (the first filter configuration); the replaced
  // one, if any, may still be read by a hook: it is left allocated.
  __atomic_store_n(&sp_fallback, p, __ATOMIC_RELEASE);
}

void sp_counts(int32_t pair, uint64_t out[SP_CLASSES]) {
  memset(out, 0, SP_CLASSES * sizeof out[0]);
  if (pair < 0 || pair >= SP_MAX_PAIRS) return;
  uint32_t n = __atomic_load_n(&sp_nthreads, __ATOMIC_RELAXED);
  for (uint32_t i = 0; i < n && i < SP_MAX_THREADS; i++) {
    sp_thread *t = __atomic_load_n(&sp_threads[i], __ATOMIC_ACQUIRE);
    if (t == NULL) continue;
    for (int c = 0; c < SP_CLASSES; c++) out[c] += __atomic_load_n(&t->own[pair][c], __ATOMIC_RELAXED);
  }
  for (int c = 0; c < SP_CLASSES; c++) out[c] += __atomic_load_n(&sp_shared_counts[pair][c], __ATOMIC_RELAXED);
}

void sp_set_latency_bounds(const uint64_t *ns, uint32_t n) {
  if (n > SP_LAT_BUCKETS - 1) n = SP_LAT_BUCKETS - 1;
  if (n == 0 || __atomic_load_n(&sp_lat_n, __ATOMIC_ACQUIRE) != 0) return; // once
  memcpy(sp_lat_bounds, ns, n * sizeof ns[0]);
  __atomic_store_n(&sp_lat_n, n, __ATOMIC_RELEASE);
}

static void add_latency(uint64_t out[SP_LAT_BUCKETS], uint64_t (*lat)[SP_LAT_BUCKETS], int32_t pair) {
  if (lat == NULL) return;
  for (int b = 0; b < SP_LAT_BUCKETS; b++) out[b] += __atomic_load_n(&lat[pair][b], __ATOMIC_RELAXED);
}

void sp_latency(int32_t pair, uint64_t out[SP_LAT_BUCKETS]) {
  memset(out, 0, SP_LAT_BUCKETS * sizeof out[0]);
  if (pair < 0 || pair >= SP_MAX_PAIRS) return;
  uint32_t n = __atomic_load_n(&sp_nthreads, __ATOMIC_RELAXED);
  for (uint32_t i = 0; i < n && i < SP_MAX_THREADS; i++) {
    sp_thread *t = __atomic_load_n(&sp_threads[i], __ATOMIC_ACQUIRE);
    if (t != NULL) add_latency(out, __atomic_load_n(&t->lat, __ATOMIC_ACQUIRE), pair);
  }
  add_latency(out, __atomic_load_n(&sp_shared_lat, __ATOMIC_ACQUIRE), pair);
}

static uint64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

// lat_table is where thread t counts its timed responses: its own table
// (allocated once, on its first), or the shared one; NULL when out of
// memory (the response is not timed).
static uint64_t (*lat_table(sp_thread *t))[SP_LAT_BUCKETS] {
  if (t->slot >= 0) {
    if (t->lat == NULL) __atomic_store_n(&t->lat, calloc(SP_MAX_PAIRS, sizeof *t->lat), __ATOMIC_RELEASE);
    return t->lat;
  }
  uint64_t (*shared)[SP_LAT_BUCKETS] = __atomic_load_n(&sp_shared_lat, __ATOMIC_ACQUIRE);
  if (shared != NULL) return shared;
  uint64_t (*fresh)[SP_LAT_BUCKETS] = calloc(SP_MAX_PAIRS, sizeof *fresh);
  if (fresh == NULL) return NULL;
  if (!__atomic_compare_exchange_n(&sp_shared_lat, &shared, fresh, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
    free(fresh); // another thread won: shared is its table
    return shared;
  }
  return fresh;
}

// time_response counts how long stream s took, from its request headers
// to its end, in the bucket whose bound is the first above it (as
// signals.LatencyBucket); no allocation past the thread's first.
static void time_response(sp_thread *t, const sp_stream *s) {
  uint32_t n = __atomic_load_n(&sp_lat_n, __ATOMIC_ACQUIRE);
  if (n == 0 || s->start_ns == 0 || s->pair < 0 || s->pair >= SP_MAX_PAIRS) return;
  uint64_t d = mono_ns() - s->start_ns;
  uint32_t lo = 0, hi = n;
  while (lo < hi) {
    uint32_t mid = lo + (hi - lo) / 2;
    if (sp_lat_bounds[mid] > d) hi = mid;
    else lo = mid + 1;
  }
  uint64_t (*lat)[SP_LAT_BUCKETS] = lat_table(t);
  if (lat == NULL) return;
  uint64_t *c = &lat[s->pair][lo];
  if (t->slot >= 0) // single writer, as count()
    __atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
  else
    __atomic_fetch_add(c, 1, __ATOMIC_RELAXED);
}

static void count(sp_thread *t, int32_t pair, int32_t cls) {
  if (pair < 0 || pair >= SP_MAX_PAIRS || cls < 0 || cls >= SP_CLASSES) return;
  uint64_t *c = &t->counts[pair][cls];
  if (t->slot >= 0) // single writer: a plain increment, published atomically
    __atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
  else
    __atomic_fetch_add(c, 1, __ATOMIC_RELAXED);
}

// apply writes an encoded plan (module.EncodePlan): a count, then per
// header an operation (0 remove, 1 set), two 16-bit lengths and the bytes.
// Envoy copies key and value during set_header.
static void apply(void *f, const uint8_t *p, uint32_t len) {
  if (len == 0) return;
  const uint8_t *end = p + len;
  unsigned n = *p++;
  for (unsigned i = 0; i < n && p + 5 <= end; i++) {
    uint8_t op = p[0];
    size_t nl = (size_t)p[1] | (size_t)p[2] << 8, vl = (size_t)p[3] | (size_t)p[4] << 8;
    p += 5;
    if (p + nl + vl > end) return;
    const char *name = (const char *)p, *value = (const char *)p + nl;
    p += nl + vl;
    envoy_dynamic_module_callback_http_set_header(f, RH, mb(name, nl), op == 1 ? mb(value, vl) : mb(NULL, 0));
  }
}

// keep_cookie copies the Set-Cookie Go answered for a request given a
// fresh sticky key into the stream, for its response headers. Only such
// requests allocate; a failed malloc means no cookie (the client is given
// another key next time).
static void keep_cookie(sp_stream *s, const sp_out *out) {
  if (out->cookie_len == 0 || out->cookie_len > SP_COOKIE_MAX) return;
  char *c = malloc(out->cookie_len);
  if (c == NULL) return;
  memcpy(c, out->cookie, out->cookie_len);
  free(s->cookie);
  s->cookie = c;
  s->cookie_len = out->cookie_len;
}

static void apply_fallback(void *f) {
  sp_plan *p = __atomic_load_n(&sp_fallback, __ATOMIC_ACQUIRE);
  if (p != NULL) apply(f, p->plan, p->len);
}

// read_headers fills t->hdrs with every value of each header in r, one
// get_header call per value, and returns how many it read.
static size_t read_headers(sp_thread *t, void *f, const sp_reads *r) {
  size_t n = 0;
  if (r == NULL) return 0;
  for (uint32_t i = 0; i < r->n; i++) {
    envoy_dynamic_module_type_module_buffer key = mb(r->names[i].ptr, r->names[i].len);
    size_t count = 0;
    for (size_t k = 0;; k++) {
      envoy_dynamic_module_type_envoy_buffer v = {NULL, 0};
      if (!envoy_dynamic_module_callback_http_get_header(f, RH, key, &v, k, k == 0 ? &count : NULL)) break;
      if (n == t->cap) {
        sp_hdr *grown = realloc(t->hdrs, 2 * t->cap * sizeof *grown);
        if (grown == NULL) return n;
        t->hdrs = grown;
        t->cap *= 2;
      }
      t->hdrs[n++] = (sp_hdr){key.ptr, key.length, v.ptr != NULL ? v.ptr : "", v.length};
      if (k + 1 >= count) break;
    }
  }
  return n;
}

static uint64_t coarse_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

envoy_dynamic_module_type_abi_version_module_ptr envoy_dynamic_module_on_program_init(void) {
  return SPLITTER_ABI_VERSION;
}

// The module pointer of a filter configuration is Go's handle itself
// (never 0): nothing to allocate, nothing Envoy dereferences.
envoy_dynamic_module_type_http_filter_config_module_ptr envoy_dynamic_module_on_http_filter_config_new(
    envoy_dynamic_module_type_http_filter_config_envoy_ptr filter_config_envoy_ptr,
    envoy_dynamic_module_type_envoy_buffer name, envoy_dynamic_module_type_envoy_buffer config) {
  (void)filter_config_envoy_ptr;
  uint64_t h = splitterConfigNew((char *)name.ptr, name.length, (char *)config.ptr, config.length);
  return (envoy_dynamic_module_type_http_filter_config_module_ptr)(uintptr_t)h;
}

void envoy_dynamic_module_on_http_filter_config_destroy(envoy_dynamic_module_type_http_filter_config_module_ptr c) {
  splitterConfigDestroy((uint64_t)(uintptr_t)c);
}

envoy_dynamic_module_type_http_filter_module_ptr envoy_dynamic_module_on_http_filter_new(
    envoy_dynamic_module_type_http_filter_config_module_ptr filter_config_ptr,
    envoy_dynamic_module_type_http_filter_envoy_ptr filter_envoy_ptr) {
  (void)filter_config_ptr; (void)filter_envoy_ptr;
  sp_thread *t = thread_state();
  sp_stream *s = NULL;
  if (t != NULL && t->free != NULL) {
    s = t->free;
    t->free = s->next;
    t->nfree--;
  } else {
    s = malloc(sizeof *s);
  }
  if (s == NULL) return &sp_no_stream;
  s->next = NULL;
  s->pair = -1;
  s->start_ns = 0;
  s->cls = SP_ABORTED; // until a response or an upstream failure is seen
  s->cookie = NULL;
  s->cookie_len = 0;
  return s;
}

envoy_dynamic_module_type_on_http_filter_request_headers_status envoy_dynamic_module_on_http_filter_request_headers(
    envoy_dynamic_module_type_http_filter_envoy_ptr f, envoy_dynamic_module_type_http_filter_module_ptr m,
    bool end_of_stream) {
  (void)end_of_stream;
  sp_stream *s = (sp_stream *)m;
  if (s != &sp_no_stream && __atomic_load_n(&sp_lat_n, __ATOMIC_RELAXED) != 0) s->start_ns = mono_ns();
  sp_thread *t = thread_state();
  if (t == NULL) {
    apply_fallback(f);
  } else {
    // A C thread that keeps calling Go holds its P without the scheduler
    // ever running on it; now and then, let it (docs/module.md, threads).
    int yield = 0;
    uint64_t now = coarse_ns();
    if (now - t->last_yield_ns >= SP_YIELD_NS) {
      t->last_yield_ns = now;
      yield = 1;
    }
    int32_t st = SP_GO_FAILED;
    for (int attempt = 0; attempt < 2; attempt++) {
      const sp_reads *r = __atomic_load_n(&sp_cur_reads, __ATOMIC_ACQUIRE);
      size_t n = read_headers(t, f, r);
      st = splitterDecide(t->slot, r != NULL ? r->id : 0, t->hdrs, n, attempt, yield, &t->out);
      yield = 0;
      if (st != SP_RETRY) break;
    }
    if (st == SP_GO_FAILED || st == SP_RETRY) {
      apply_fallback(f);
    } else {
      apply(f, t->out.plan, t->out.plan_len);
      if (s != &sp_no_stream) {
        s->pair = t->out.pair;
        keep_cookie(s, &t->out);
      }
    }
  }
  envoy_dynamic_module_callback_http_clear_route_cache(f);
  return envoy_dynamic_module_type_on_http_filter_request_headers_status_Continue;
}

// response_headers adds the Set-Cookie of a request given a fresh sticky
// key (beside the backend's own: add, never set) and notes the status class
// for the stream's counter; no Go. Envoy's own answers to an upstream
// failure (503 on a reset or refused connection, 504 on a timeout) come
// through here too. A status that is not three digits 1xx..5xx (Envoy
// never sends one) counts as a reset.
envoy_dynamic_module_type_on_http_filter_response_headers_status envoy_dynamic_module_on_http_filter_response_headers(
    envoy_dynamic_module_type_http_filter_envoy_ptr f, envoy_dynamic_module_type_http_filter_module_ptr m,
    bool end_of_stream) {
  (void)end_of_stream;
  sp_stream *s = (sp_stream *)m;
  if (s == &sp_no_stream) return envoy_dynamic_module_type_on_http_filter_response_headers_status_Continue;
  if (s->cookie != NULL) {
    static const char set_cookie[] = "set-cookie";
    envoy_dynamic_module_callback_http_add_header(f, RESP, mb(set_cookie, sizeof set_cookie - 1),
                                                  mb(s->cookie, s->cookie_len));
    free(s->cookie);
    s->cookie = NULL;
  }
  if (s->pair < 0) return envoy_dynamic_module_type_on_http_filter_response_headers_status_Continue;
  static const char status[] = ":status";
  envoy_dynamic_module_type_envoy_buffer v = {NULL, 0};
  envoy_dynamic_module_callback_http_get_header(f, RESP, mb(status, sizeof status - 1), &v, 0, NULL);
  int cls = SP_RESET;
  if (v.ptr != NULL && v.length == 3 && v.ptr[0] >= '1' && v.ptr[0] <= '5' && v.ptr[1] >= '0' && v.ptr[1] <= '9' &&
      v.ptr[2] >= '0' && v.ptr[2] <= '9')
    cls = v.ptr[0] - '0';
  s->cls = cls;
  return envoy_dynamic_module_type_on_http_filter_response_headers_status_Continue;
}

// local_reply is Envoy answering (or ending) the stream itself. Before any
// response headers it is followed by them (a 503 for an upstream reset, a
// 504 for a timeout, a 4xx for a bad request), which set the class; noting
// its code here also counts one whose headers never come. After response
// headers, the response is being cut off: a 5xx code means the upstream
// failed mid-response (Envoy 1.40 reports "upstream_reset_after_response_
// started" with 502 here), counted as SP_RESET; a lower one is the
// client's doing and leaves the class the upstream answered.
envoy_dynamic_module_type_on_http_filter_local_reply_status envoy_dynamic_module_on_http_filter_local_reply(
    envoy_dynamic_module_type_http_filter_envoy_ptr f, envoy_dynamic_module_type_http_filter_module_ptr m,
    uint32_t response_code, envoy_dynamic_module_type_envoy_buffer details, bool reset_imminent) {
  (void)f; (void)details; (void)reset_imminent;
  sp_stream *s = (sp_stream *)m;
  if (s != &sp_no_stream && s->pair >= 0) {
    if (s->cls == SP_ABORTED)
      s->cls = response_code >= 100 && response_code <= 599 ? (int32_t)(response_code / 100) : SP_RESET;
    else if (response_code >= 500)
      s->cls = SP_RESET;
  }
  return envoy_dynamic_module_type_on_http_filter_local_reply_status_Continue;
}

// destroy counts the stream's response (or its reset, or the client's
// abort) for its version, on the thread that runs it, and keeps the stream
// for reuse.
void envoy_dynamic_module_on_http_filter_destroy(envoy_dynamic_module_type_http_filter_module_ptr m) {
  sp_stream *s = (sp_stream *)m;
  if (s == &sp_no_stream) return;
  free(s->cookie); // a stream that ended before its response headers
  s->cookie = NULL;
  sp_thread *t = thread_state();
  if (t == NULL) {
    free(s);
    return;
  }
  if (s->pair >= 0) {
    count(t, s->pair, s->cls);
    // A response (1xx..5xx) is timed; a stream that ended without one
    // is not, as Envoy records upstream_rq_time only on a response.
    if (s->cls >= 1 && s->cls <= 5) time_response(t, s);
  }
  if (t->nfree < MAX_FREE_STREAMS) {
    s->next = t->free;
    t->free = s;
    t->nfree++;
  } else {
    free(s);
  }
}

// The hooks with nothing to do: never entering Go.
#define SPLITTER_OWN_LOCAL_REPLY
#include "idle_hooks.h"
