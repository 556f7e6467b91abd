package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"

	"github.com/trafficsplit/splitter/internal/compat"
	"github.com/trafficsplit/splitter/internal/fsutil"
	"github.com/trafficsplit/splitter/split"
)

// maxStateBytes caps the state file; it holds a few weights per service.
const maxStateBytes = 1 << 20

// stateDoc is the state file's JSON form:
//
//	{"file_sha256": "...",
//	 "overrides":    {"api": {"v1": 50, "v2": 50}},
//	 "file_weights": {"api": {"v1": 80, "v2": 20}},
//	 "owners":       {"api": "argo-rollouts:default/api"},
//	 "routes":       {"api": [{"name": "canary-testers", "when": [...], "version": "v2", "owner": "..."}]},
//	 "mirror_routes": {"api": [{"name": "mirror", "when": [...], "version": "v2", "percent": 50, "owner": "..."}]},
//	 "rollouts":     {"api": {...}}}
//
// file_weights are the file's weights for each overridden service when the
// override was set; they decide whether the override survives the file it
// meets at the next start. owners name the controller that set an
// override, and go with it. routes are the runtime routes, and
// mirror_routes the runtime mirror routes, kept while they fit the file. rollouts are the rollout states, kept here for package
// rollout and opaque to the store (SaveRollout).
type stateDoc struct {
	FileSHA256  string                     `json:"file_sha256"`
	Overrides   map[string]json.RawMessage `json:"overrides"`
	FileWeights map[string]json.RawMessage `json:"file_weights,omitempty"`
	Owners      map[string]string          `json:"owners,omitempty"`
	Routes      map[string][]Route         `json:"routes,omitempty"`
	// MirrorRoutes are the runtime mirror routes, kept while they fit the
	// file.
	MirrorRoutes map[string][]MirrorRoute   `json:"mirror_routes,omitempty"`
	Rollouts     map[string]json.RawMessage `json:"rollouts,omitempty"`
	// Mirrors are the runtime mirrors, FileMirrors the file's mirror of
	// each of their services when it was set (null: none).
	Mirrors     map[string]split.Mirror  `json:"mirrors,omitempty"`
	FileMirrors map[string]*split.Mirror `json:"file_mirrors,omitempty"`
}

// state is a decoded state file.
type state struct {
	fileSHA     string
	overrides   map[string]split.Weights
	fileWeights map[string]split.Weights
	runtime     runtimeState
	rollouts    map[string]json.RawMessage
	mirrors     map[string]split.Mirror
	fileMirrors map[string]*split.Mirror
	// unknown are the document's fields this build does not know.
	unknown []string
}

// readState reads path; a missing file is an empty state.
func readState(path string) (*state, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("state file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxStateBytes+1))
	if err != nil {
		return nil, fmt.Errorf("state file %s: %w", path, err)
	}
	if len(data) > maxStateBytes {
		return nil, fmt.Errorf("state file %s: larger than %d bytes", path, maxStateBytes)
	}
	st, err := decodeState(data)
	if err != nil {
		return nil, fmt.Errorf("state file %s: %w", path, err)
	}
	return st, nil
}

func decodeState(data []byte) (*state, error) {
	var doc stateDoc
	// A newer build's fields are ignored (named in the log once); the
	// ones this build knows are checked as strictly as ever.
	unknown, err := compat.DecodeObject(data, &doc)
	if err != nil {
		return nil, err
	}
	st := &state{
		unknown:     unknown,
		fileSHA:     doc.FileSHA256,
		overrides:   make(map[string]split.Weights, len(doc.Overrides)),
		fileWeights: make(map[string]split.Weights, len(doc.FileWeights)),
		rollouts:    doc.Rollouts,
		mirrors:     doc.Mirrors,
		fileMirrors: doc.FileMirrors,
	}
	for name, m := range doc.Mirrors {
		if m.Version == "" || m.Percent < 0 || m.Percent > split.Buckets {
			return nil, fmt.Errorf("mirrors.%s: needs a version and a percent from 0 to 100", name)
		}
	}
	for _, name := range sortedKeys(doc.Owners) {
		if _, ok := doc.Overrides[name]; !ok {
			return nil, fmt.Errorf("owners.%s: the service has no override", name)
		}
		if err := CheckOwner(doc.Owners[name]); err != nil {
			return nil, fmt.Errorf("owners.%s: %w", name, err)
		}
	}
	st.runtime.owners = nilIfEmpty(doc.Owners)
	mr, err := decodeNamed(doc.MirrorRoutes)
	if err != nil {
		return nil, err
	}
	st.runtime.mirrorRoutes = mr
	if st.runtime.routes, err = decodeNamed(doc.Routes); err != nil {
		return nil, err
	}
	for _, name := range sortedKeys(doc.Overrides) {
		w, err := split.ParseWeightsJSON(doc.Overrides[name])
		if err != nil {
			return nil, fmt.Errorf("overrides.%s: %w", name, err)
		}
		st.overrides[name] = w
	}
	for _, name := range sortedKeys(doc.FileWeights) {
		w, err := split.ParseWeightsJSON(doc.FileWeights[name])
		if err != nil {
			return nil, fmt.Errorf("file_weights.%s: %w", name, err)
		}
		st.fileWeights[name] = w
	}
	return st, nil
}

func encodeState(overrides, fileWeights map[string]split.Weights, rt runtimeState, rollouts map[string]json.RawMessage, sha string,
	mirrors map[string]split.Mirror, fileMirrors map[string]*split.Mirror) ([]byte, error) {
	doc := stateDoc{
		FileSHA256:   sha,
		Overrides:    make(map[string]json.RawMessage, len(overrides)),
		FileWeights:  make(map[string]json.RawMessage, len(fileWeights)),
		Owners:       rt.owners,
		Routes:       rt.routes,
		MirrorRoutes: rt.mirrorRoutes,
		Rollouts:     rollouts,
		Mirrors:      nilIfEmpty(mirrors),
	}
	if len(mirrors) > 0 {
		doc.FileMirrors = make(map[string]*split.Mirror, len(mirrors))
		for name := range mirrors {
			doc.FileMirrors[name] = fileMirrors[name]
		}
	}
	for name, w := range overrides {
		b, err := json.Marshal(w)
		if err != nil {
			return nil, fmt.Errorf("overrides.%s: %w", name, err)
		}
		doc.Overrides[name] = b
	}
	for name, w := range fileWeights {
		b, err := json.Marshal(w)
		if err != nil {
			return nil, fmt.Errorf("file_weights.%s: %w", name, err)
		}
		doc.FileWeights[name] = b
	}
	out, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

// writeState replaces the state file atomically: a temporary file in the
// same directory is written, synced and renamed over it, so a crash leaves
// either the old or the new file, never a torn one. The rollout states in
// force go with every write, and so do the runtime mirrors in force
// (s.mirrors); s.mu is held.
func (s *Store) writeState(overrides, fileWeights map[string]split.Weights, sha string, rt runtimeState) error {
	data, err := encodeState(overrides, fileWeights, rt, s.rollouts, sha, s.mirrors, s.mirrorAgainst)
	if err != nil {
		return fmt.Errorf("state file %s: %w", s.stateFile, err)
	}
	if err := fsutil.WriteAtomic(s.stateFile, data, 0o600, s.rename); err != nil {
		return fmt.Errorf("state file %s: %w", s.stateFile, err)
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
