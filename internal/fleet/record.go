package fleet

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/trafficsplit/splitter/internal/compat"
	"github.com/trafficsplit/splitter/internal/store"
	"github.com/trafficsplit/splitter/split"
)

// overrideRecord is the value of overrides/<service>:
//
//	{"weights": {"v1": 50, "v2": 50}, "against": {"v1": 80, "v2": 20},
//	 "set_at": "2026-01-02T15:04:05.123456789Z", "node": "pod-a", "actor": "token:0a1b2c3d4e5f"}
//
// against holds the configuration's weights for the service when the
// override was set: the override applies only while the configuration
// still has them. set_at is the writer's clock at the write; every replica
// measures propagation against it.
type overrideRecord struct {
	Weights split.Weights `json:"weights"`
	Against split.Weights `json:"against"`
	SetAt   time.Time     `json:"set_at"`
	Node    string        `json:"node,omitempty"`
	Actor   string        `json:"actor,omitempty"`
	// Owner names the controller that set the override (the Argo
	// Rollouts plugin), "" for none. Replicas of the release before this
	// field refuse a record that has it, so it is not written while one
	// holds a lease (compat.go).
	Owner string `json:"owner,omitempty"`
	// unknown are the fields of the record this build does not know.
	unknown []string
}

// maxRecordBytes caps an override record; it holds a few weights.
const maxRecordBytes = 64 << 10

func decodeOverride(data []byte) (overrideRecord, error) {
	var r overrideRecord
	if len(data) > maxRecordBytes {
		return r, fmt.Errorf("larger than %d bytes", maxRecordBytes)
	}
	// Fields a newer build added are ignored (and named once in the
	// log by the reader); the ones this build knows are checked.
	unknown, err := compat.DecodeObject(data, &r)
	if err != nil {
		return r, err
	}
	r.unknown = unknown
	if len(r.Weights) == 0 {
		return r, errors.New("weights: missing")
	}
	return r, nil
}

func (r overrideRecord) encode() ([]byte, error) { return json.Marshal(r) }

func (r overrideRecord) override() store.Override {
	return store.Override{Weights: r.Weights, Against: r.Against, Owner: r.Owner}
}

// ReplicaRecord is the value of replicas/<node_id>, written under the
// replica's lease after every applied change: GET /v1/fleet lists them.
type ReplicaRecord struct {
	NodeID string `json:"node_id"`
	// Revision is the etcd revision of the state in force.
	Revision int64 `json:"revision"`
	// SHA256 is the configuration document's; StateSHA256 covers the
	// document and the overrides in force, so replicas that agree on it
	// decide alike.
	SHA256      string    `json:"sha256"`
	StateSHA256 string    `json:"state_sha256"`
	Version     string    `json:"version"`
	AppliedAt   time.Time `json:"applied_at"`
	// Error is why the document in etcd is not in force (the last good one
	// serves), empty when it is.
	Error   string     `json:"error,omitempty"`
	ErrorAt *time.Time `json:"error_at,omitempty"`
	// Features are what the replica's build applies beyond the state
	// every release reads (compat.go); none: a release before them.
	Features []string `json:"features,omitempty"`
}

// cacheDoc is the cache file: the last applied state.
type cacheDoc struct {
	Revision  int64             `json:"revision"`
	ClusterID uint64            `json:"cluster_id"`
	Config    string            `json:"config"` // the last good document
	SHA256    string            `json:"sha256"`
	Overrides map[string]string `json:"overrides"` // key -> raw record
	// Routes are the runtime routes' and mirror routes' records, key ->
	// raw record.
	Routes    map[string]string `json:"routes,omitempty"`
	WrittenAt time.Time         `json:"written_at"`
}
