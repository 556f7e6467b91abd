package reliability

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// series returns every sample line of GET /metrics as name{labels} -> value.
func (st *stack) series(t *testing.T) map[string]float64 {
	t.Helper()
	r := st.do(t, request{method: http.MethodGet, path: "/metrics"})
	if r.code != http.StatusOK {
		t.Fatalf("GET /metrics = %d", r.code)
	}
	out := map[string]float64{}
	for line := range strings.Lines(string(r.body)) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// metric returns one sample by its exact name{labels}.
func (st *stack) metric(t *testing.T, key string) (float64, bool) {
	t.Helper()
	v, ok := st.series(t)[key]
	return v, ok
}
