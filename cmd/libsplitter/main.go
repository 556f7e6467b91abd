//go:build cgo

// Command libsplitter is the splitter as an Envoy dynamic module: built
// with -buildmode=c-shared (`make module`) into libsplitter.so, which
// Envoy loads for the envoy.filters.http.dynamic_modules filter with
// dynamic_module_config {name: splitter}. Everything is in package
// module/abi; see docs/module.md.
package main

import _ "github.com/trafficsplit/splitter/module/abi"

// main is required by -buildmode=c-shared and never called.
func main() {}
