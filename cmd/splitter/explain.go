package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"github.com/spf13/viper"

	"github.com/trafficsplit/splitter/split"
)

// explainFlags is the request described on explain's command line.
type explainFlags struct {
	authority, path, method string
	headers, cookies        []string
	json                    bool
}

func newExplainCmd() *cobra.Command {
	v := viper.New()
	var fl explainFlags
	cmd := &cobra.Command{
		Use:   "explain [--config FILE] [--authority H] [--path P] [--method M] [-H 'name: value']... [--cookie 'k=v']... [--json]",
		Short: "Show which version a request would get, and why",
		Long: `explain builds a request from its flags and prints the decision the
configuration makes for it: service, version, reason, the matching rule, the
sticky bucket, the weights, every rule tried and why it did or did not
match, and the experiments' variants. It does not count the request as
traffic: the version shown for an unkeyed request is the one the next such
request would get on a fresh start.

Without --config (or SPLITTER_CONFIG) it explains against the built-in
default configuration and says so on stderr.`,
		Example: `  splitter explain -H 'x-beta: true'
  splitter explain --config split.yaml --authority api.example.com -H 'x-user-id: user-123' --json`,
		Args: rejectArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req, err := explainRequest(fl)
			if err != nil {
				return err
			}
			path := v.GetString("config")
			cfg, source, err := loadRoutingConfig(path)
			if err != nil {
				return err
			}
			if path == "" {
				fmt.Fprintln(cmd.ErrOrStderr(), "splitter: no --config given: explaining against the built-in default configuration")
			}
			table, err := split.Compile(cfg)
			if err != nil {
				return fmt.Errorf("%s: %w", source, err)
			}
			ex := table.Explain(req)
			if fl.json {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(ex)
			}
			return printExplanation(cmd.OutOrStdout(), &ex)
		},
	}
	f := cmd.Flags()
	f.String("config", "", "configuration file (default $SPLITTER_CONFIG, else the built-in configuration)")
	bindSettings(v, f.Lookup("config"), "config")
	f.StringVar(&fl.authority, "authority", "", "request authority (host), e.g. api.example.com")
	f.StringVar(&fl.path, "path", "/", "request path, with query string")
	f.StringVar(&fl.method, "method", "GET", "request method")
	f.StringArrayVarP(&fl.headers, "header", "H", nil, "request header 'name: value' (repeatable)")
	f.StringArrayVar(&fl.cookies, "cookie", nil, "request cookie 'name=value' (repeatable)")
	f.BoolVar(&fl.json, "json", false, "print the explanation as JSON")
	return cmd
}

// explainRequest builds the request the flags describe. A "host" or
// ":authority" header stands for --authority when that is not given.
func explainRequest(fl explainFlags) (*split.Request, error) {
	req := &split.Request{Authority: fl.authority, Path: fl.path, Method: fl.method}
	for _, h := range fl.headers {
		name, value, err := parseHeaderFlag(h)
		if err != nil {
			return nil, err
		}
		if req.Authority == "" && (name == "host" || name == ":authority") {
			req.Authority = value
		}
		req.Headers = append(req.Headers, split.Header{Name: name, Value: value})
	}
	var cookies []string
	for _, c := range fl.cookies {
		name, value, ok := strings.Cut(c, "=")
		name = strings.TrimSpace(name)
		if !ok || name == "" || strings.ContainsAny(name, "; \t") || strings.Contains(value, ";") {
			return nil, usageErrorf("--cookie %q: want name=value", c)
		}
		cookies = append(cookies, name+"="+strings.TrimSpace(value))
	}
	if len(cookies) > 0 {
		req.Headers = append(req.Headers, split.Header{Name: "cookie", Value: strings.Join(cookies, "; ")})
	}
	return req, nil
}

// parseHeaderFlag splits "Name: value" into a lower-case name and the
// value without surrounding blanks. Pseudo-headers (":authority: x") work.
func parseHeaderFlag(s string) (name, value string, err error) {
	i := strings.Index(s[min(1, len(s)):], ":")
	if i < 0 {
		return "", "", usageErrorf("-H %q: want 'name: value'", s)
	}
	i += min(1, len(s))
	name = strings.ToLower(strings.TrimSpace(s[:i]))
	if name == "" || name == ":" || strings.ContainsAny(name, " \t\r\n") {
		return "", "", usageErrorf("-H %q: want 'name: value'", s)
	}
	return name, strings.TrimSpace(s[i+1:]), nil
}

// printExplanation writes ex for a human reader.
func printExplanation(w io.Writer, ex *split.Explanation) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	line := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
	if ex.Service == "" {
		line("service", "(none: no service matches the authority)")
		line("version", "(none: Envoy's default route applies)")
	} else {
		line("service", ex.Service)
		if ex.Version == "" && ex.Assign != nil && ex.Assign.Assigned {
			line("version", "(the fresh key's bucket decides)")
		} else {
			line("version", ex.Version)
		}
	}
	line("reason", ex.Reason)
	if a := ex.Assign; a != nil && a.Assigned {
		line("assign", "a fresh key, in the response's Set-Cookie: "+a.SetCookie)
	}
	if ex.MirrorPercent != nil {
		m := "not mirrored"
		if ex.Mirror != "" {
			m = "copied to " + ex.Mirror
		}
		by := "the service mirrors"
		if ex.MirrorRoute != "" {
			by = "mirror route " + ex.MirrorRoute + " copies"
		}
		line("mirror", fmt.Sprintf("%s (%s %s%%)", m, by, split.FormatPercent(int(*ex.MirrorPercent))))
	}
	if ex.Rule != "" {
		line("rule", ex.Rule)
	}
	if ex.Bucket != nil {
		b := fmt.Sprint(*ex.Bucket)
		if ex.StickyKey != "" {
			b += " (sticky key " + ex.StickyKey + ")"
		}
		line("bucket", b)
	} else if ex.StickyKey != "" && (ex.Assign == nil || !ex.Assign.Assigned) {
		line("sticky key", ex.StickyKey+" (not in the request)")
	}
	if len(ex.Weights) > 0 {
		ws := make([]string, len(ex.Weights))
		for i, wt := range ex.Weights {
			ws[i] = fmt.Sprintf("%s %s%%", wt.Version, split.FormatPercent(wt.BasisPoints))
		}
		line("weights", strings.Join(ws, ", "))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(ex.RulesTried) > 0 {
		fmt.Fprintln(w, "rules tried:")
		for _, r := range ex.RulesTried {
			verdict := "no match"
			if r.Matched {
				verdict = "matched"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", r.Rule, verdict, r.Why)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(ex.Experiments) > 0 {
		fmt.Fprintln(w, "variants:")
		for _, v := range ex.Experiments {
			fmt.Fprintf(tw, "  %s\t%s\t(bucket %d, header %s)\n", v.Experiment, v.Variant, v.Bucket, v.Header)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	for _, n := range ex.Notes {
		if _, err := fmt.Fprintf(w, "note: %s\n", n); err != nil {
			return err
		}
	}
	return nil
}
