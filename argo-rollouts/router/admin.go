package router

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
)

// maxAnswerBytes caps what is read of an admin API answer.
const maxAnswerBytes = 4 << 20

// adminClient calls one splitter's admin API for one Rollout.
type adminClient struct {
	base      string // adminURL without a trailing "/"
	tokenFile string
	http      *http.Client
}

func (r *Router) admin(c Config) adminClient {
	return adminClient{base: strings.TrimRight(c.AdminURL, "/"), tokenFile: c.TokenFile, http: r.http}
}

// StatusError is an error answer of the admin API: its status and the
// splitter's own message.
type StatusError struct {
	Method, URL string
	Status      int
	Message     string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("splitter %s %s: %d %s: %s", e.Method, e.URL, e.Status, http.StatusText(e.Status), e.Message)
}

func statusOf(err error) int {
	var se *StatusError
	if errors.As(err, &se) {
		return se.Status
	}
	return 0
}

// token reads the token file now (it may have been rotated); "" without
// one.
func (a adminClient) token() (string, error) {
	if a.tokenFile == "" {
		return "", nil
	}
	b, err := os.ReadFile(a.tokenFile)
	if err != nil {
		return "", fmt.Errorf("%s.tokenFile: %w", configPath, err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("%s.tokenFile: %s is empty", configPath, a.tokenFile)
	}
	return t, nil
}

// do calls method path (with query) and decodes a 2xx answer into out;
// any other answer is a *StatusError with the splitter's message.
func (a adminClient) do(ctx context.Context, method, path string, query url.Values, body, out any) error {
	u := a.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return fmt.Errorf("%s.adminURL: %w", configPath, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	tok, err := a.token()
	if err != nil {
		return err
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return fmt.Errorf("splitter admin API at %s unreachable: %w", a.base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	if err != nil {
		return fmt.Errorf("splitter %s %s: reading the answer: %w", method, u, err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		msg := strings.TrimSpace(string(data))
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		return &StatusError{Method: method, URL: u, Status: resp.StatusCode, Message: msg}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("splitter %s %s: unexpected answer: %w", method, u, err)
		}
	}
	return nil
}

// serviceView is what the router reads of GET /v1/services/{name}.
type serviceView struct {
	Name          string             `json:"name"`
	Stable        string             `json:"stable"`
	Weights       map[string]float64 `json:"weights"`
	WeightsOwner  string             `json:"weights_owner"`
	RuntimeRoutes []struct {
		Name  string `json:"name"`
		Owner string `json:"owner"`
	} `json:"runtime_routes"`
	// MirrorRoutes are the service's runtime mirror routes (absent from a
	// splitter without them: none).
	MirrorRoutes []struct {
		Name  string `json:"name"`
		Owner string `json:"owner"`
	} `json:"mirror_routes"`
	Config struct {
		// Revision is the etcd revision of the state this replica
		// serves (fleet mode); 0 in file mode.
		Revision int64 `json:"revision"`
	} `json:"config"`
}

// canary returns the service's canary version: the one that is not
// stable, of exactly two.
func (v serviceView) canary() (string, error) {
	if len(v.Weights) != 2 {
		return "", fmt.Errorf("splitter service %q has %d versions; the plugin moves traffic between a stable and a canary version, so it needs exactly two", v.Name, len(v.Weights))
	}
	for version := range v.Weights {
		if version != v.Stable {
			return version, nil
		}
	}
	return "", fmt.Errorf("splitter service %q: no version besides the stable %q", v.Name, v.Stable)
}

func (a adminClient) service(ctx context.Context, name string) (serviceView, error) {
	var v serviceView
	err := a.do(ctx, http.MethodGet, "/v1/services/"+url.PathEscape(name), nil, nil, &v)
	return v, err
}

// fleetView is what the router reads of GET /v1/fleet.
type fleetView struct {
	Replicas []struct {
		NodeID   string `json:"node_id"`
		Revision int64  `json:"revision"`
		Error    string `json:"error"`
	} `json:"replicas"`
}
