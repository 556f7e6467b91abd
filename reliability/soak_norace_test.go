//go:build !race

package reliability

// defaultSoakRequests is the full 200,000 requests: 6-20 s on two shared
// cores.
const defaultSoakRequests = 200000
