//go:build !splitter_fault

package module

// faultHeader is "" in every build but the fault-injection one.
const faultHeader = ""
