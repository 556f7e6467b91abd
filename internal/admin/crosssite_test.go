package admin_test

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/trafficsplit/splitter/internal/admin"
)

// FuzzCheckSameOrigin: whatever the Host, Sec-Fetch-Site and Origin, the
// rule never panics and never lets through a request that a browser
// marked as from elsewhere: with Sec-Fetch-Site, only same-origin and none
// pass; without it, only an absent Origin or one whose host is the Host.
func FuzzCheckSameOrigin(f *testing.F) {
	f.Add("127.0.0.1:9002", "", "")
	f.Add("127.0.0.1:9002", "same-origin", "http://127.0.0.1:9002")
	f.Add("127.0.0.1:9002", "cross-site", "")
	f.Add("127.0.0.1:9002", "same-site", "http://127.0.0.1:3000")
	f.Add("127.0.0.1:9002", "", "http://evil.example")
	f.Add("127.0.0.1:9002", "", "null")
	f.Add("LOCALHOST:9002", "", "http://localhost:9002")
	f.Add("[::1]:9002", "", "http://[::1]:9002")
	f.Add("127.0.0.1:9002", "", "http://%zz")
	f.Add("127.0.0.1:9002", "", "//127.0.0.1:9002")
	f.Fuzz(func(t *testing.T, host, site, origin string) {
		r := httptest.NewRequest(http.MethodGet, "/debug/pprof/", nil)
		r.Host = host
		if site != "" {
			r.Header.Set("Sec-Fetch-Site", site)
		}
		if origin != "" {
			r.Header.Set("Origin", origin)
		}
		err := admin.CheckSameOrigin(r)
		site, origin = r.Header.Get("Sec-Fetch-Site"), r.Header.Get("Origin")
		switch {
		case site == "same-origin" || site == "none":
			if err != nil {
				t.Fatalf("Sec-Fetch-Site %q refused: %v", site, err)
			}
		case site != "":
			if err == nil || !strings.Contains(err.Error(), "cross-site") {
				t.Fatalf("Sec-Fetch-Site %q: %v, want a cross-site refusal", site, err)
			}
		case origin == "":
			if err != nil {
				t.Fatalf("no Sec-Fetch-Site, no Origin refused: %v", err)
			}
		case err == nil:
			u, perr := url.Parse(origin)
			if perr != nil || u.Host == "" || !strings.EqualFold(u.Host, host) {
				t.Fatalf("Origin %q passed for Host %q", origin, host)
			}
		}
	})
}
