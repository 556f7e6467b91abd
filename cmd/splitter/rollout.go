package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/viper"

	"github.com/trafficsplit/splitter/internal/rollout"
	"github.com/trafficsplit/splitter/internal/settings"
	"github.com/trafficsplit/splitter/split"
)

// rolloutVerbs are the rollout subcommand's verbs: status reads, the
// others are the actions of POST /v1/services/{name}/rollout.
func rolloutVerbs() []string {
	return []string{"status", "start", "pause", "resume", "abort", "promote"}
}

func newRolloutCmd() *cobra.Command {
	v := viper.New()
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "rollout status|start|pause|resume|abort|promote SERVICE",
		Short: "Show or drive a service's guarded rollout through the admin API",
		Long: `rollout talks to a running splitter's admin API (--admin-addr, default
SPLITTER_ADMIN_ADDR, else 127.0.0.1:9002).

  status   the state, step, canary weight, last verdict with its numbers, history
  start    from the first step (also after a rollback, an abort or a promotion)
  pause    stop stepping; the guard still rolls back, and the weights may be set by hand
  resume   go on from the step in force, its weights put back
  abort    stop, the canary to 0
  promote  the canary to 100 now

The actions need the admin token when one is configured (--admin-token,
--admin-token-file, or SPLITTER_ADMIN_TOKEN / SPLITTER_ADMIN_TOKEN_FILE).`,
		Example: `  splitter rollout start api
  splitter rollout status api --json`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 2 {
				return usageErrorf("%s needs a verb (%s) and a service, got %q", cmd.CommandPath(), strings.Join(rolloutVerbs(), ", "), args)
			}
			if !slices.Contains(rolloutVerbs(), args[0]) {
				return usageErrorf("unknown verb %q: want one of %s", args[0], strings.Join(rolloutVerbs(), ", "))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			verb, service := args[0], args[1]
			token, err := settings.Settings{AdminToken: v.GetString("admin_token"), AdminTokenFile: v.GetString("admin_token_file")}.
				TokenSource(slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil)))
			if err != nil {
				return err
			}
			c := &adminClient{addr: v.GetString("admin_addr"), token: token(), http: &http.Client{Timeout: 10 * time.Second}}
			var s rollout.Status
			if verb == "status" {
				err = c.call(cmd.Context(), http.MethodGet, "/v1/services/"+service+"/rollout", nil, &s)
			} else {
				err = c.call(cmd.Context(), http.MethodPost, "/v1/services/"+service+"/rollout", map[string]string{"action": verb}, &s)
			}
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(s)
			}
			return printRollout(cmd.OutOrStdout(), &s)
		},
	}
	d := settings.Defaults()
	f := cmd.Flags()
	f.String("admin-addr", d.AdminAddr, "the splitter's admin API (host:port)")
	bindSettings(v, f.Lookup("admin-addr"), "admin_addr")
	f.String("admin-token", "", "admin bearer token (prefer --admin-token-file)")
	bindSettings(v, f.Lookup("admin-token"), "admin_token")
	f.String("admin-token-file", "", "file holding the admin bearer token")
	bindSettings(v, f.Lookup("admin-token-file"), "admin_token_file")
	f.BoolVar(&asJSON, "json", false, "print the status as JSON")
	return cmd
}

// adminClient calls a splitter's admin API.
type adminClient struct {
	addr, token string
	http        *http.Client
}

// call sends body (if any) as JSON and decodes a 2xx answer into out; any
// other answer is an error carrying the API's message.
func (c *adminClient) call(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+c.addr+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("admin API: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("admin API: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return fmt.Errorf("admin API: %s %s: %d: %s", method, path, resp.StatusCode, e.Error)
		}
		return fmt.Errorf("admin API: %s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(data)))
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("admin API: %s %s: decoding the answer: %w", method, path, err)
	}
	return nil
}

// printRollout writes a status for people.
func printRollout(w io.Writer, s *rollout.Status) error {
	fmt.Fprintf(w, "%s: %s", s.Service, s.State)
	switch {
	case s.Shadow && s.ShadowPercent != nil:
		fmt.Fprintf(w, ", shadow step (%s%% mirrored to the canary, which serves no user)", split.FormatPercent(int(*s.ShadowPercent)))
	case s.Step > 0:
		fmt.Fprintf(w, ", step %d of %d", s.Step, s.Steps)
	}
	fmt.Fprintf(w, ", canary %s at %s%% (stable %s)\n", s.Canary, split.FormatPercent(int(s.Weight)), s.Stable)
	if !s.Since.IsZero() {
		fmt.Fprintf(w, "  since %s", s.Since.Format(time.RFC3339))
		if s.State == rollout.Progressing || s.State == rollout.Paused || s.State == rollout.Waiting {
			fmt.Fprintf(w, ", held %s of %s", s.Held.D().Round(time.Second), s.Hold.D())
		}
		fmt.Fprintln(w)
	}
	if s.Leader != "" || s.Node != "" {
		fmt.Fprintf(w, "  fleet: decided by %s (this replica: %s, state revision %d)\n", orNone(s.Leader), s.Node, s.Revision)
	}
	if s.OwnsWeights {
		fmt.Fprintln(w, "  owns the weights: canary, weights and override calls answer 409 until it is paused or aborted")
	}
	if wt := s.Waiting; wt != nil {
		printWaiting(w, wt)
	}
	if v := s.Verdict; v != nil {
		fmt.Fprintf(w, "  verdict: %s (%s over %s): %s\n", v.Result, v.At.Format(time.TimeOnly), v.Covered.D(), v.Reason)
		if l := v.Latency; l != nil && l.Canary.Requests > 0 {
			fmt.Fprintf(w, "    latency p%s: canary %s (%d timed), stable %s (%d timed)\n", split.FormatPercent(int(l.Percentile)),
				latencyText(l.Canary), l.Canary.Requests, latencyText(l.Stable), l.Stable.Requests)
		}
		if v.FailingFor > 0 && s.Config != nil {
			fmt.Fprintf(w, "    failing for %s of failing_for %s\n", v.FailingFor.D().Round(time.Millisecond), s.Config.Guard.FailingFor.D())
		}
		if len(v.Replicas) > 0 {
			fmt.Fprintf(w, "    counts of %d replicas: %s\n", len(v.Replicas), strings.Join(v.Replicas, ", "))
		}
	}
	if s.SignalError != "" {
		fmt.Fprintf(w, "  signals: %s\n", s.SignalError)
	}
	if len(s.History) == 0 {
		return nil
	}
	fmt.Fprintln(w, "history:")
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	for _, tr := range s.History {
		actor := tr.Actor
		if tr.Node != "" {
			actor += "@" + tr.Node
		}
		step := fmt.Sprintf("step %d", tr.Step)
		if tr.Shadow {
			step = "shadow"
		}
		fmt.Fprintf(tw, "  %s\t%s -> %s\t%s\t%s%%\t%s\t%s\n", tr.At.Format(time.RFC3339), tr.From, tr.To, step,
			split.FormatPercent(int(tr.Weight)), actor, tr.Reason)
	}
	return tw.Flush()
}

// printWaiting says what a waiting rollout waits on.
func printWaiting(w io.Writer, wt *rollout.WaitStatus) {
	fmt.Fprintf(w, "  waiting before step %d (%s%%)", wt.NextStep, split.FormatPercent(int(wt.NextWeight)))
	switch {
	case wt.Hook != "":
		fmt.Fprintf(w, " on hook %s (%s), asked %d times", wt.Hook, wt.Type, wt.Asked)
		if !wt.Since.IsZero() {
			fmt.Fprintf(w, " since %s", wt.Since.Format(time.TimeOnly))
		}
		fmt.Fprintln(w)
		if wt.LastAnswer != "" {
			fmt.Fprintf(w, "    last answer (%s): %s\n", wt.LastAt.Format(time.TimeOnly), wt.LastAnswer)
		}
	case wt.Note != "":
		fmt.Fprintf(w, ": %s\n", wt.Note)
	default:
		fmt.Fprintln(w, " (the hooks are asked by the rollout leader: see its status)")
	}
	if len(wt.Passed) > 0 {
		fmt.Fprintf(w, "    answered 2xx: %s\n", strings.Join(wt.Passed, ", "))
	}
}

// latencyText is a latency figure: "220 ms", "100000+ ms".
func latencyText(f rollout.LatencyFigure) string {
	if f.Requests == 0 {
		return "none"
	}
	ms := strconv.FormatFloat(f.Ms, 'f', -1, 64)
	if f.Over {
		ms += "+"
	}
	return ms + " ms"
}

func orNone(s string) string {
	if s == "" {
		return "(no leader elected)"
	}
	return s
}
