//go:build race

package reliability

// defaultSoakRequests is smaller under the race detector, which slows the
// stream path about five times; pass -soak.requests=200000 for the full
// run, or run without -race.
const defaultSoakRequests = 50000
