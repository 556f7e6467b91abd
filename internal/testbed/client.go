package testbed

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/trafficsplit/splitter/examples/backend/echo"
)

// Client sends requests through Envoy and reads the backend's echo reply.
type Client struct {
	BaseURL string
	HTTP    *http.Client
}

// Client returns a client for e's listener with keep-alive connections for
// up to 64 concurrent requests.
func (e *Envoy) Client() *Client {
	tr := &http.Transport{MaxIdleConns: 64, MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second}
	return &Client{BaseURL: e.URL(""), HTTP: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
}

// Close drops idle connections.
func (c *Client) Close() { c.HTTP.CloseIdleConnections() }

// Get sends GET path with the given headers (Host may be set through the
// "Host" key) and decodes the backend's reply; any status but 200 is an error.
func (c *Client) Get(ctx context.Context, path string, h http.Header) (echo.Reply, error) {
	var rep echo.Reply
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.BaseURL+path, nil)
	if err != nil {
		return rep, err
	}
	for k, vs := range h {
		if strings.EqualFold(k, "Host") {
			req.Host = vs[0]
			continue
		}
		req.Header[http.CanonicalHeaderKey(k)] = vs
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return rep, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return rep, err
	}
	if resp.StatusCode != http.StatusOK {
		return rep, fmt.Errorf("GET %s: %d %s", path, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	if err := json.Unmarshal(body, &rep); err != nil {
		return rep, fmt.Errorf("GET %s: not a backend reply: %q", path, body)
	}
	return rep, nil
}

// Counts is how many replies each version gave.
type Counts map[string]int

// Total is the number of counted replies.
func (c Counts) Total() int {
	n := 0
	for _, v := range c {
		n += v
	}
	return n
}

// String renders the counts in version order, e.g. "v1=800 v2=200".
func (c Counts) String() string {
	var b strings.Builder
	for i, v := range slices.Sorted(maps.Keys(c)) {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%d", v, c[v])
	}
	return b.String()
}

// Count sends n requests, at most concurrency at a time, with headers from
// hdr(i) (nil hdr: none), and counts the versions that answered. It stops
// at the first failed request and returns that error with the counts so far.
func (c *Client) Count(ctx context.Context, n, concurrency int, hdr func(i int) http.Header) (Counts, error) {
	if concurrency < 1 {
		concurrency = 1
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu       sync.Mutex
		counts   = Counts{}
		firstErr error
		wg       sync.WaitGroup
		next     = make(chan int)
	)
	for range concurrency {
		wg.Go(func() {
			for i := range next {
				var h http.Header
				if hdr != nil {
					h = hdr(i)
				}
				rep, err := c.Get(ctx, "/", h)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = fmt.Errorf("request %d: %w", i, err)
					cancel()
				}
				if err == nil {
					counts[rep.Version]++
				}
				mu.Unlock()
			}
		})
	}
feed:
	for i := range n {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	return counts, firstErr
}
