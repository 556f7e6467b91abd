// Package abi is every line of cgo of the splitter's Envoy dynamic module:
// the C hooks Envoy resolves (hooks.c), the declarations of the Envoy
// callbacks they use (envoy_abi.h, Envoy 1.40, ABI v0.2.0), and the three
// Go functions C calls: filter config new and destroy, and one decision
// per request. Everything else (settings, the control plane, the decision
// glue) is package module, tested without cgo; this package implements
// its Host over C memory and Envoy's callbacks.
//
// Rules kept here: C never keeps a Go pointer (Go copies its answer into
// the calling thread's C buffer); Go never keeps a C pointer past the call
// that handed it (header values are Envoy's, valid during the hook, and
// dropped before splitterDecide returns); every exported function recovers
// its panics and answers so that Envoy carries on.
package abi

/*
#cgo CFLAGS: -O2 -Wall
// The Envoy callbacks are resolved when Envoy loads the library; cgo's own
// link step (an executable, to find dynamic imports) must not fail on them.
#cgo LDFLAGS: -Wl,--unresolved-symbols=ignore-all
#include <stdlib.h>
#include "splitter.h"
*/
import "C"

import (
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"time"
	"unsafe"

	"github.com/trafficsplit/splitter/internal/signals"
	"github.com/trafficsplit/splitter/module"
)

// process is the module's one state per Envoy process: Envoy calls the
// library's hooks as plain C functions, so there is no value to hang it
// on. It starts its control plane at the first filter configuration.
var process = module.NewProcess(host{})

// The C side's sizes are package module's (a compile error otherwise).
var (
	_ = [1]struct{}{}[C.SP_MAX_THREADS-module.MaxThreads]
	_ = [1]struct{}{}[C.SP_MAX_PAIRS-module.MaxPairs]
	_ = [1]struct{}{}[C.SP_CLASSES-module.NumClasses]
	_ = [1]struct{}{}[C.SP_RESET-module.ClassReset]
	_ = [1]struct{}{}[C.SP_ABORTED-module.ClassAborted]
	_ = [1]struct{}{}[C.SP_PLAN_MAX-module.MaxPlanBytes]
	_ = [1]struct{}{}[C.SP_COOKIE_MAX-module.MaxCookieBytes]
	_ = [1]struct{}{}[C.SP_RETRY-int(module.StatusRetry)]
	_ = [1]struct{}{}[C.SP_NO_CONFIG-int(module.StatusNoConfig)]
	_ = [1]struct{}{}[C.SP_PANIC-int(module.StatusPanic)]
	_ = [1]struct{}{}[C.SP_LAT_BUCKETS-signals.LatencyBuckets]
)

// readsGrace is how long a replaced set of header names stays allocated: a
// hook holds one for microseconds.
const readsGrace = 10 * time.Second

// host is module.Host over C memory and Envoy's callbacks.
type host struct{}

func (host) SetReads(id uint32, names []string) {
	n := len(names)
	r := (*C.sp_reads)(C.calloc(1, C.size_t(unsafe.Sizeof(C.sp_reads{}))+C.size_t(n)*C.size_t(unsafe.Sizeof(C.sp_str{}))))
	if r == nil {
		return // keep the previous set: requests decide with what they read
	}
	r.id, r.n = C.uint32_t(id), C.uint32_t(n)
	strs := unsafe.Slice((*C.sp_str)(unsafe.Add(unsafe.Pointer(r), unsafe.Sizeof(C.sp_reads{}))), n)
	for i, name := range names {
		strs[i] = C.sp_str{ptr: (*C.char)(C.CBytes([]byte(name))), len: C.size_t(len(name))}
	}
	if old := C.sp_set_reads(r); old != nil {
		time.AfterFunc(readsGrace, func() { freeReads(old) })
	}
}

func freeReads(r *C.sp_reads) {
	strs := unsafe.Slice((*C.sp_str)(unsafe.Add(unsafe.Pointer(r), unsafe.Sizeof(C.sp_reads{}))), int(r.n))
	for _, s := range strs {
		C.free(unsafe.Pointer(s.ptr))
	}
	C.free(unsafe.Pointer(r))
}

func (host) SetFallback(plan []byte) {
	if len(plan) == 0 {
		return
	}
	C.sp_set_fallback((*C.uint8_t)(unsafe.Pointer(&plan[0])), C.uint32_t(len(plan)))
}

func (host) Concurrency() int { return int(C.envoy_dynamic_module_callback_get_concurrency()) }

func (host) ValidationMode() bool { return bool(C.envoy_dynamic_module_callback_is_validation_mode()) }

func (host) Counts(pair int32) [module.NumClasses]uint64 {
	var out [module.NumClasses]C.uint64_t
	C.sp_counts(C.int32_t(pair), &out[0])
	var r [module.NumClasses]uint64
	for i, v := range out {
		r[i] = uint64(v)
	}
	return r
}

// Latency implements the module's latency host: pair's responses timed
// in C, by bucket.
func (host) Latency(pair int32) [signals.LatencyBuckets]uint64 {
	var out [signals.LatencyBuckets]C.uint64_t
	C.sp_latency(C.int32_t(pair), &out[0])
	var r [signals.LatencyBuckets]uint64
	for i, v := range out {
		r[i] = uint64(v)
	}
	return r
}

// SetLatencyBounds hands C the latency buckets' bounds before any request
// (the first filter configuration comes first); C keeps the first.
func (host) SetLatencyBounds(ns []uint64) {
	if len(ns) > 0 {
		C.sp_set_latency_bounds((*C.uint64_t)(unsafe.Pointer(&ns[0])), C.uint32_t(len(ns)))
	}
}

func (host) Log(level slog.Level, msg string) {
	var l C.envoy_dynamic_module_type_log_level = C.envoy_dynamic_module_type_log_level_Info
	switch {
	case level >= slog.LevelError:
		l = C.envoy_dynamic_module_type_log_level_Error
	case level >= slog.LevelWarn:
		l = C.envoy_dynamic_module_type_log_level_Warn
	case level < slog.LevelInfo:
		l = C.envoy_dynamic_module_type_log_level_Debug
	}
	if msg == "" {
		return
	}
	b := []byte(msg)
	C.envoy_dynamic_module_callback_log(l, C.envoy_dynamic_module_type_module_buffer{
		ptr: (*C.char)(unsafe.Pointer(&b[0])), length: C.size_t(len(b))})
}

// logf reports what cannot go through a started module's logger.
func logf(format string, args ...any) {
	msg := fmt.Sprintf("splitter module: "+format, args...)
	defer func() {
		if recover() != nil {
			fmt.Fprintln(os.Stderr, msg)
		}
	}()
	host{}.Log(slog.LevelError, msg)
}

//export splitterConfigNew
func splitterConfigNew(name *C.char, nameLen C.size_t, config *C.char, configLen C.size_t) (handle C.uint64_t) {
	defer func() {
		if r := recover(); r != nil {
			logf("filter config panic: %v", r)
			handle = 0
		}
	}()
	n := C.GoStringN(name, C.int(nameLen))
	raw := C.GoBytes(unsafe.Pointer(config), C.int(configLen))
	h, err := process.NewConfig(n, raw)
	if err != nil {
		logf("filter %q rejected: %v", n, err)
		return 0
	}
	return C.uint64_t(h)
}

//export splitterConfigDestroy
func splitterConfigDestroy(handle C.uint64_t) {
	defer func() {
		if r := recover(); r != nil {
			logf("filter config destroy panic: %v", r)
		}
	}()
	process.DestroyConfig(uint64(handle))
}

// splitterDecide is the one call per request: C read the headers of the
// set readsID into hs (names in C memory, values in Envoy's header map);
// Go decides and copies the plan into out, C's buffer for this thread.
//
//export splitterDecide
func splitterDecide(slot C.int32_t, readsID C.uint32_t, hs *C.sp_hdr, n C.size_t, retried, yield C.int, out *C.sp_out) (status C.int32_t) {
	defer func() {
		if r := recover(); r != nil {
			status = C.SP_GO_FAILED
		}
	}()
	r := process.Begin(int(slot))
	if n > 0 {
		for _, h := range unsafe.Slice(hs, int(n)) {
			r.Add(unsafe.String((*byte)(unsafe.Pointer(h.key_ptr)), int(h.key_length)),
				unsafe.String((*byte)(unsafe.Pointer(h.value_ptr)), int(h.value_length)))
		}
	}
	var res module.Result
	process.Decide(r, uint32(readsID), retried != 0, &res)
	if yield != 0 {
		runtime.Gosched()
	}
	if res.Status == module.StatusRetry {
		return C.SP_RETRY
	}
	if len(res.Plan) == 0 || len(res.Plan) > C.SP_PLAN_MAX {
		return C.SP_GO_FAILED // C applies the fallback plan
	}
	out.pair = C.int32_t(res.Pair)
	out.plan_len = C.uint32_t(copy(unsafe.Slice((*byte)(unsafe.Pointer(&out.plan[0])), C.SP_PLAN_MAX), res.Plan))
	out.cookie_len = 0
	if n := len(res.Cookie); n > 0 && n <= C.SP_COOKIE_MAX {
		out.cookie_len = C.uint32_t(copy(unsafe.Slice((*byte)(unsafe.Pointer(&out.cookie[0])), C.SP_COOKIE_MAX), res.Cookie))
	}
	return C.int32_t(res.Status)
}
