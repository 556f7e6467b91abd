package store

import (
	"errors"
	"fmt"
	"strings"
)

// ErrOlderReplicas: a change the replicas of an older splitter holding a
// lease in the same fleet would not apply (or could not read), so it is
// refused until they are upgraded (docs/upgrading.md). The admin API
// answers 409.
var ErrOlderReplicas = errors.New("replicas of an older splitter would not apply it")

// OlderReplicasError names the change and the replicas that lack it. It
// wraps ErrOlderReplicas.
type OlderReplicasError struct {
	// What is the change, with the key it would write ("runtime mirrors
	// (mirrors/<service>)").
	What string
	// Feature is the name the replicas' records list when they apply it
	// (GET /v1/fleet, "features").
	Feature string
	// Replicas are the replicas without it: node id and version.
	Replicas []string
}

func (e *OlderReplicasError) Error() string {
	return fmt.Sprintf("%s: %v: %s (their records in GET /v1/fleet do not list %q); upgrade them first, "+
		"or wait until they have left the fleet (docs/upgrading.md)",
		e.What, ErrOlderReplicas, strings.Join(e.Replicas, ", "), e.Feature)
}

func (e *OlderReplicasError) Unwrap() error { return ErrOlderReplicas }
