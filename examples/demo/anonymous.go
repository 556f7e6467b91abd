package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"time"

	"github.com/trafficsplit/splitter/internal/testbed"
)

// anonymousConfig gives a key, in a cookie, to every request that carries
// none (docs/anonymous-and-mirror.md).
const anonymousConfig = `services:
  - name: api
    hosts: ["*"]
    stable: v1
    weights: {v1: 80, v2: 20}
    sticky:
      header: x-user-id
      assign: {cookie: splitter-id, max_age: 720h}
`

var assignedCookie = regexp.MustCompile(`^splitter-id=([A-Za-z0-9_-]+);`)

// browse sends GET / with cookie (none when "") and returns the version
// that answered and the key the response set ("" when none).
func (d *demo) browse(ctx context.Context, cookie string) (version, key string, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.client.BaseURL+"/", nil)
	if err != nil {
		return "", "", err
	}
	if cookie != "" {
		req.Header.Set("Cookie", "splitter-id="+cookie)
	}
	resp, err := d.client.HTTP.Do(req)
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", "", fmt.Errorf("GET /: %s", resp.Status)
	}
	for _, c := range resp.Header.Values("Set-Cookie") {
		if m := assignedCookie.FindStringSubmatch(c); m != nil {
			key = m[1]
		}
	}
	return resp.Header.Get("X-Backend-Version"), key, nil
}

// anonymous: browsers without a user id are given a key in a cookie on
// their first answer; with it they keep their version, and when the canary
// grows only stable's clients move to it.
func (d *demo) anonymous(ctx context.Context) error {
	const clients, visits = 200, 5
	fmt.Fprintf(d.out, "\n10. Anonymous clients: %d browsers without a user id, %d requests each; sticky.assign gives each a key in a cookie\n", clients, visits)
	d.backends[1].Fail(0)
	if err := d.writeAnonymousConfig(ctx); err != nil {
		return err
	}
	keys := make([]string, clients)
	versions := make([]string, clients)
	before := testbed.Counts{}
	for i := range keys {
		v, key, err := d.browse(ctx, "")
		if err != nil {
			return err
		}
		if key == "" {
			return fmt.Errorf("client %d: no splitter-id cookie on its first answer", i)
		}
		keys[i], versions[i] = key, v
		before[v]++
		for range visits - 1 {
			again, set, err := d.browse(ctx, key)
			if err != nil {
				return err
			}
			if again != v || set != "" {
				return fmt.Errorf("client %d moved from %s to %s (cookie set again: %v)", i, v, again, set != "")
			}
		}
	}
	fmt.Fprintln(d.out, "  clients per version at 80/20 (each answered by one version every time):")
	d.bars(before)
	fmt.Fprintf(d.out, "  ✓ %d clients, %d requests each, none changed version\n", clients, visits)

	fmt.Fprintf(d.out, "  the canary grows to 50 %% (PUT %s), every client comes back with its cookie:\n", d.admin.AdminURL("/v1/services/api/canary"))
	if err := d.admin.SetCanary(ctx, "api", 50); err != nil {
		return err
	}
	after := testbed.Counts{}
	moved := 0
	for i, key := range keys {
		v, _, err := d.browse(ctx, key)
		if err != nil {
			return err
		}
		after[v]++
		switch {
		case versions[i] == "v2" && v != "v2":
			return fmt.Errorf("client %d moved back from v2 to %s when the canary grew", i, v)
		case versions[i] != v:
			moved++
		}
	}
	d.bars(after)
	fmt.Fprintf(d.out, "  ✓ %d clients moved, all from v1 to v2; every v2 client stayed\n", moved)
	return nil
}

// writeAnonymousConfig replaces the config file with anonymousConfig and
// waits until it is served.
func (d *demo) writeAnonymousConfig(ctx context.Context) error {
	if err := os.WriteFile(d.cfgPath+".tmp", []byte(anonymousConfig), 0o644); err != nil {
		return err
	}
	if err := os.Rename(d.cfgPath+".tmp", d.cfgPath); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for {
		var svc struct {
			Sticky struct {
				Assign *struct {
					Cookie string `json:"cookie"`
				} `json:"assign"`
			} `json:"sticky"`
			Override bool `json:"override"`
		}
		err := d.admin.Admin(ctx, http.MethodGet, "/v1/services/api", nil, &svc)
		if err == nil && svc.Sticky.Assign != nil && !svc.Override {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the splitter did not pick up the anonymous clients' configuration: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
