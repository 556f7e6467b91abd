package fleet

import (
	"context"
	"errors"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
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
// gets attemptTimeout. A run that timed out makes its member suspect. op
// sees each failed attempt through after (may be nil), which returns false
// to stop trying (a write whose outcome is unknown is not simply sent
// again: see mutate).
func (s *Source) try(ctx context.Context, op func(ctx context.Context) error, after func(a attempt, err error) bool) error {
	deadline := s.now().Add(requestTimeout)
	for {
		if c := s.client.Load(); c != nil && c.ActiveConnection().GetState() == connectivity.TransientFailure {
			// No member accepts a connection: say so now rather than
			// wait out the attempts (etcd down, a wrong endpoint).
			return errUnavailable("no etcd member accepts a connection")
		}
		note := &callNote{}
		actx, cancel := context.WithTimeout(withNote(ctx, note), min(attemptTimeout, max(time.Until(deadline), 10*time.Millisecond)))
		err := op(actx)
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
				s.members.suspect(a.member, "a request got no answer within "+attemptTimeout.String())
			}
		}
		if !a.timedOut && !isUnavailable(err) {
			return err
		}
		if after != nil && !after(a, err) {
			return err
		}
		if !s.now().Before(deadline) {
			return err
		}
		if !a.timedOut {
			// Refused at once (no leader yet, leader changed): let an
			// election finish rather than spin.
			sleep(ctx, 50*time.Millisecond)
		}
	}
}
