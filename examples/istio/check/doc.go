// Package check holds the test that decodes the Istio recipes in
// examples/istio/ with Istio's own API types and validates the Envoy
// configuration they embed with go-control-plane's validators. It is a
// module of its own so that Istio's dependencies stay out of splitter's
// go.mod; `make istio` runs it.
package check
