package fleet

import (
	"context"
	"errors"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"
)

// attemptTimeout bounds one request to one member. A request that
// exceeds it is tried again (round robin sends it to the next member) and
// its member is checked (members.suspect); requestTimeout bounds all the
// attempts of one operation.
const attemptTimeout = time.Second

// code is the gRPC code of an etcd client error.
func code(err error) codes.Code {
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return ee.Code()
	}
	return status.Code(err)
}

// isUnavailable says whether err means "no member could serve it now"
// (no connection, no leader, leader changed, server-side timeout): another
// attempt, maybe on another member, may succeed.
func isUnavailable(err error) bool { return code(err) == codes.Unavailable }

// attempt is the outcome of one try of an operation.
type attempt struct {
	// timedOut: the attempt's own deadline passed (not the caller's).
	timedOut bool
	member   string
}

// try runs op until it succeeds, fails for a reason another attempt would
// not change, the caller's ctx ends, or requestTimeout passes; each run
// gets attemptTimeout. The first run goes to the member this replica's
// watch follows, while it follows (it has just proved it answers: a
// member that hangs elsewhere costs nothing); the others through the
// client's round robin. A run that timed out on a member not heard from
// makes it suspect; one heard from is slow, not hung, and the next run
// gets twice the time rather than the same work abandoned again. op sees
// each failed run through after (may be nil), which returns false to stop
// trying (a write whose outcome is unknown is not simply sent again: see
// mutate).
func (s *Source) try(ctx context.Context, op func(ctx context.Context, c *clientv3.Client) error, after func(a attempt, err error) bool) error {
	return s.tryOn(ctx, true, op, after)
}

// tryOn is try, with the first run on the watch's member only when pin is
// set (the probe, which checks the watch, goes elsewhere).
func (s *Source) tryOn(ctx context.Context, pin bool, op func(ctx context.Context, c *clientv3.Client) error, after func(a attempt, err error) bool) error {
	deadline := s.now().Add(requestTimeout)
	limit := attemptTimeout
	for run := 0; ; run++ {
		c := s.client.Load()
		pinned := false
		if w := s.pinned.Load(); pin && run == 0 && w != nil && s.follow.following(s.now()) {
			c, pinned = w, true
		}
		if c == nil {
			return errUnavailable("not connected")
		}
		if !pinned && !reconnect(ctx, c.ActiveConnection()) {
			// No member accepts a connection: say so now rather than
			// wait out the attempts (etcd down, a wrong endpoint).
			return errUnavailable("no etcd member accepts a connection")
		}
		note := &callNote{}
		actx, cancel := context.WithTimeout(withNote(ctx, note), min(limit, max(time.Until(deadline), 10*time.Millisecond)))
		err := op(actx, c)
		a := attempt{timedOut: errors.Is(actx.Err(), context.DeadlineExceeded) && ctx.Err() == nil}
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return err
		}
		if s.members != nil {
			a.member = s.members.member(note)
			if a.timedOut {
				if s.members.heard(a.member, limit) {
					limit *= 2
				} else {
					s.members.suspect(a.member, "a request got no answer within "+limit.String())
				}
			}
		}
		// On the watch's client, anything but the server's own answer
		// (the client closed as the watch moved, say) is worth another
		// run elsewhere.
		retriable := a.timedOut || isUnavailable(err) || pinned && definite(err) == ""
		if !retriable {
			return err
		}
		if after != nil && !after(a, err) {
			return err
		}
		if !s.now().Before(deadline) {
			return err
		}
		if !a.timedOut && !pinned {
			// Refused at once (no leader yet, leader changed): let an
			// election finish rather than spin.
			sleep(ctx, 50*time.Millisecond)
		}
	}
}

// definite returns the code of an answer the server gave (a refusal that
// another attempt would not change), "" when err is not one.
func definite(err error) string {
	switch c := code(err); c {
	case codes.OK, codes.Unknown, codes.Canceled, codes.DeadlineExceeded, codes.Unavailable:
		return ""
	default:
		return c.String()
	}
}

// reconnect says whether conn can carry a request: at once unless every
// member refused it (transient failure); then it reconnects without the
// backoff and waits up to attemptTimeout for a member (one that just came
// back, which this replica's watch, on its own connection, may already
// follow).
func reconnect(ctx context.Context, conn *grpc.ClientConn) bool {
	if conn.GetState() != connectivity.TransientFailure {
		return true
	}
	conn.ResetConnectBackoff()
	wctx, cancel := context.WithTimeout(ctx, attemptTimeout)
	defer cancel()
	for st := conn.GetState(); st != connectivity.Ready; st = conn.GetState() {
		if !conn.WaitForStateChange(wctx, st) {
			return false
		}
	}
	return true
}
