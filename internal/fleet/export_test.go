package fleet

import "context"

// WithTerm returns ctx as the decision loop's on a leadership whose
// election key is key, created at rev: its writes are fenced on it.
func WithTerm(ctx context.Context, key string, rev int64) context.Context {
	tctx, cancel := context.WithCancel(ctx)
	return context.WithValue(ctx, termKey{}, &term{ctx: tctx, cancel: cancel, key: key, rev: rev})
}

// AfterRead makes f run between every full read's answer and its apply
// (reason: "start", "reload", "resync").
func AfterRead(s *Source, f func(reason string)) { s.afterRead.Store(&f) }
