// Package reliability holds splitter's bad-input, churn-soak, security and
// fuzz tests. It has no production code. The tests drive the real paths of
// a running sidecar (serve.Run in-process on 127.0.0.1 port 0, or the same
// parts assembled by hand where a hook is needed) and check two things for
// every bad input: the error names the place (a path such as
// services[0].weights.v2, a JSON field, a header or a line) and the reason;
// and what is served does not move (generation, sha256 and effective
// weights from GET /v1/services, plus the ext_proc decision for a fixed
// sticky request and a fixed rule-pinned request).
//
// # Catalogue
//
// "KLG" means: refused, last good configuration kept, error shown in
// last_reload_error until a later reload succeeds. The number in brackets
// is the case count. docs/reliability.md summarises this catalogue for
// operators.
//
// Configuration file, rewritten then reloaded through the watcher's path
// (POST /v1/reload answers 422 with the error): TestBadConfigFile [40],
// fixtures in testdata/config, all KLG:
//
//	empty file                        "file is empty"
//	comments only, null document      "no services ... empty" / "... null (line 1)"
//	syntax error, tab indentation     "invalid YAML: line 2: ..."
//	invalid UTF-8                     "invalid UTF-8 at column 15 (byte offset 24) ... (line 2)"
//	root list / root scalar           "must be a mapping ..., not a list (line 1)"
//	multi-document                    "more than one YAML document (line 19)"
//	alias bomb                        "anchors (&a) are not supported (line 1)", never expanded
//	over 1 MiB (generated)            "more than the 1048576-byte limit", before parsing
//	5000-deep nesting                 "services[0].hosts[0]: must be a string (line 4)"
//	unknown key                       "services[0].stickey: unknown key (did you mean "sticky"?)"
//	case-only / exact duplicate key   "services[0].Weights: differs only in case" / "duplicate key"
//	weight -1, 101, 12.345, "50%",    "services[0].weights.v2: <reason> (got <value>) (line 5)";
//	  "30", .nan, .inf, 1e20, 356,      numbers are read from their text, never wrapped
//	  4294967346
//	weights summing to 105            "services[0].weights: ... sum to 105, not 100"
//	version in two cases (v1, V1)     "services[0].weights.V1: differs only in case"
//	rule or stable to unknown version "services[0].rules[0].version: unknown version "v9""
//	bad regex, empty or illegal       "services[0].rules[0].when[0].regex|header: ..."
//	  header name
//	two "*" services, duplicate names "services[1].hosts[0]" / "services[1].name"
//	experiment variants sum to 90     "experiments[0].variants: ... sum to 90"
//	1001 rules (generated)            "services[0].rules: too many rules (1001, at most 1000)"
//	file removed, a directory,        "open <path>: no such file", "is a directory",
//	  symlink loop                      "too many levels of symbolic links"
//	UTF-8 BOM + valid file            accepted: new sha256, generation+1, same weights
//
// Admin API on a token-protected sidecar: TestBadAdminRequest [33]
// (docs/admin-api.md). Each answer is a JSON {"error","field"}; every
// request that reaches a mutation route writes exactly one audit line
// (result "rejected" or "unauthorized"); the token never appears in an
// answer or the log:
//
//	bad JSON, trailing garbage, empty body      400
//	unknown field                               400 field "percent"
//	text/plain, form content type               415
//	body over 64 KiB                            413
//	percentage -1, 101, "50", 50.555, null,     400 field "percentage"
//	  missing, 1e309, 5e1
//	unknown service                             404 field "name"
//	canary on a three-version service           409 field "name"
//	weights: unknown version, sum 90,           400 field "weights.v9" / "weights" /
//	  negative, string, duplicate key             "weights.v1"
//	no token, wrong token, Basic scheme,        401 (WWW-Authenticate: Bearer)
//	  token only in the query string
//	reload with a non-object body               400
//	GET/POST on PUT or POST-only routes         405 with Allow (not audited: no route ran)
//	explain bad header name, assign without     400 field "headers.x bad" / "user_id",
//	  user_id or to an unknown experiment         404 field "experiment"
//
// ext_proc protocol through the gRPC server: TestExtProcProtocol [23].
// After each stream the server still decides and the configuration has
// not moved:
//
//	no :authority, empty or nil HeaderMap       decided (the "*" service)
//	non-UTF-8, CR/LF/NUL in raw_value           decided (sticky)
//	value only (Envoy < 1.27)                   decided from value
//	upper-case names, authority with port       normalised, rule matches
//	client-sent x-route-version                 overwritten by the decision
//	16 KiB value, 60 KiB of headers,            decided
//	  200 cookie headers, attributes+metadata
//	message over the 1 MiB receive limit        ResourceExhausted; next stream fine
//	body/trailers/response phase first          that phase's empty answer
//	every phase in order                        one answer per phase, in phase
//	duplicate request_headers                   decision, then an empty answer
//	empty oneof (first or after headers)        clean close (OK), no answer
//	50 streams reset mid-request                streams_active back to 0
//
// Seed protocol lines (node.Handle and Run): TestBadSeedLine [23]. One error
// reply per line with code 12 (malformed), 10 (unknown type), 20 (no such
// service) or 22 (precondition), in_reply_to when the msg_id was readable,
// text naming the field; the node's routing unchanged: not JSON, truncated
// JSON, array, missing or non-string type, unknown type, string msg_id,
// duplicate key, envelope body not an object, percentage -1/101/12.345/
// "50"/null/1e309, unknown service (update_canary and route),
// update_canary on three versions, traffic_split summing to 110, headers
// not an object or with a number value, assign_variant without user_id,
// and a line over node.MaxLineBytes (error reply, next line answered).
//
// Security (docs/admin-api.md, docs/metrics.md): TestCheckBindAddress [14]
// (0.0.0.0, [::], ":port", LAN IPs and hostnames refused without a token;
// 127.0.0.1, 127.0.0.2, [::1], localhost accepted; anything with a token);
// TestTokenFileRotation [6] (token file re-read per request; an emptied file
// keeps the last token); TestAuditEveryMutation [9] (accepted and refused
// mutations: one audit line each with result, endpoint, remote and actor;
// reads: none); TestMutationNeedsLoopbackHost [3] (no token and a
// non-loopback Host: 403, audited forbidden); TestCrossSiteRefused [17]
// (browser and CLI contexts, each against pprof cmdline and heap, PUT
// canary, DELETE override, POST reload and the console's event stream,
// with and without a token; reads, the page and the state always served):
//
//	no headers (CLI), Sec-Fetch-Site same-origin (with or       served
//	  without Origin), none, same-origin behind a Host-
//	  rewriting proxy; no Sec-Fetch-Site and Origin own
//	  (http or https)
//	Sec-Fetch-Site cross-site (alone, with a foreign or the     403 "cross-site request
//	  own Origin), same-site, an unknown value; no              refused", mutations
//	  Sec-Fetch-Site and Origin foreign, null, another port,    audited forbidden
//	  localhost for 127.0.0.1, unparsable
//
// TestTokenFingerprintIsKeyed (the actor in the anonymous console state and
// the log is no prefix of sha256(token), stable in the process, new after a
// rotation, different in another process); TestRefusalsKeptApartFromChanges
// (120 anonymous attempts, 401 each, leave the real change and the
// operator's rejected one in the console's recent changes; counted 120
// apart, the last 10 shown); TestMetricLabelsClosed (2,000 requests
// with random authorities, methods, paths, header and cookie values plus
// random admin paths: no request data in any label, no new series in the
// second 1,000, decision series within the configuration's set; config_info
// keeps exactly one series and changes only on a good reload). The Envoy
// bootstrap's removal of client-sent route headers is tested through a real
// Envoy in e2e (TestSplitterDownFailsOpen, with TestSpoofNegativeControl as
// the negative control).
//
// Churn soak: TestChurnSoak sends -soak.requests ext_proc requests (default
// 200,000; 50,000 under -race) from 64 goroutines over 4 connections while
// the file is rewritten every 20 ms, alternating a valid file (renamed into
// place; four distinct splits, each routing pin.example.com to its own
// marker version) and an invalid one (written in place, invalid from its
// first byte), and the admin API changes the canary every 50 ms. It
// asserts: no stream error; every answer is a version some valid file
// gives and never "bad" (named only by invalid files); every snapshot the
// store publishes has the hash of a valid file; the heap after GC at the
// end is within 1.5x + 8 MiB of the heap after warm-up; no goroutine leaks.
// -soak.duration runs it for a fixed time instead. Figures go to t.Logf.
//
// Faults through a real Envoy are in e2e: churn_faults_test.go (ConfigMap
// ..data swap under load, SIGSTOP past message_timeout under load, kill
// and restart under heavier load) next to faults_test.go.
//
// Fuzzing: FuzzAdminMutation here; split FuzzParseCompile and FuzzDecide,
// extproc FuzzProcess, internal/node FuzzHandle and internal/envoyhdr
// FuzzFromHeaderMap next to their code. Their seed corpora include every
// case above (testdata/fuzz/<Name>/reliability-*).
package reliability
