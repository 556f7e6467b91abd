package split_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/trafficsplit/splitter/split"
)

// TestDecideWhileWeightsChange runs Decide and Explain from many goroutines
// while another goroutine keeps deriving tables with WithWeights and
// publishing them (as the admin API does). Run under -race. Every decision
// must come from one whole table: its version must be one the service has
// in that table.
func TestDecideWhileWeightsChange(t *testing.T) {
	base := mustLoad(t, benchYAML)
	var current atomic.Pointer[split.Table]
	current.Store(base)

	const readers, perReader, updates = 4, 3000, 200
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(done)
		tb := base
		for i := range updates {
			w, err := tb.CanaryWeights("api", (i*37)%10001)
			if err != nil {
				t.Error(err)
				return
			}
			next, err := tb.WithWeights("api", w)
			if err != nil {
				t.Error(err)
				return
			}
			current.Store(next)
			tb = next
		}
	})
	for r := range readers {
		wg.Go(func() {
			var d split.Decision
			for i := range perReader {
				req := benchRequest(i%2 == 0, "/?page=1")
				if i%3 == 0 {
					req.Headers = append(req.Headers, split.Header{Name: "x-user-id", Value: fmt.Sprint("reader-", r, "-", i)})
				}
				tb := current.Load()
				tb.Decide(&req, &d)
				if d.Service != "api" || (d.Version != "v1" && d.Version != "v2") {
					t.Errorf("decision %+v", d)
					return
				}
				if i%50 == 0 {
					if e := tb.Explain(&req); e.Service != "api" {
						t.Errorf("explanation %+v", e)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	<-done
	if s, _ := current.Load().Service("api"); s.Weights.Sum() != split.Buckets {
		t.Errorf("final weights %v", s.Weights)
	}
}
