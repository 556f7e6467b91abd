//go:build splitter_fault

package module

// faultHeader makes a request carrying it panic inside the decision: a
// test build (go build -tags splitter_fault) for the real-Envoy fault
// test. Never in a shipped library.
const faultHeader = "x-splitter-fault"
