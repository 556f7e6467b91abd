package split

// CONTRACT FILE: the exported surface other packages build against. The
// engine helper replaces the stub bodies (and may move declarations into
// other files of this package) but keeps these names and signatures.

import "errors"

// Buckets is the number of sticky/experiment buckets; weights are kept in
// basis points (1 bp = 0.01 %), so one bucket is one basis point.
const Buckets = 10000

// MaxExperiments bounds how many experiments one configuration may declare,
// so a Decision can carry every variant without allocating.
const MaxExperiments = 16

// Config is the routing part of a configuration file (services and
// experiments). Process settings (addresses, tokens, header names) are not
// here: they belong to the adapter that reads the file.
type Config struct {
	Services    []Service
	Experiments []Experiment
}

// Service is one routed service as written in the file.
type Service struct {
	Name    string
	Hosts   []string // "api.example.com", "*.example.com" or "*"; default ["*"]
	Stable  string   // default: first declared version
	Weights Weights  // declared order is kept
	Sticky  *Key     // nil: no sticky routing
	Rules   []Rule
}

// Weight is one version's share in basis points (0..10000).
type Weight struct {
	Version     string
	BasisPoints int
}

// Weights is an ordered list of version shares that sums to Buckets.
type Weights []Weight

// Key names where a sticky or experiment key is read: exactly one of a
// request header or a cookie.
type Key struct {
	Header string
	Cookie string
}

// Rule routes every request for which all conditions hold to Version.
type Rule struct {
	Name    string // default "rules[i]"
	When    []Condition
	Version string
}

// Condition looks at one header, cookie or query parameter. Exactly one
// source and exactly one operator are set.
type Condition struct {
	Header, Cookie, Query                  string
	Exact, Prefix, Suffix, Contains, Regex *string
	Present, Absent                        bool
	IgnoreCase                             bool
}

// Experiment assigns every request carrying Key a variant, deterministically.
type Experiment struct {
	Name     string
	Key      Key
	Variants Weights
	Header   string // request header the variant is written to
}

// ParseOptions tunes Parse.
type ParseOptions struct {
	// ExtraKeys are top-level scalar keys owned by someone else (process
	// settings such as grpc_addr); Parse accepts and ignores them.
	ExtraKeys []string
}

// Parse decodes a YAML document strictly (unknown keys, duplicate or
// case-only-different keys, wrong types, more than two decimals, extra
// documents are errors that name their path). It does not compile.
func Parse(data []byte, opts ParseOptions) (*Config, error) {
	return nil, errors.New("split.Parse: not implemented")
}

// Default returns the built-in configuration (the seed's).
func Default() *Config { return &Config{} }

// Compile validates cfg and builds an immutable Table. Errors name their
// place, e.g. "services[1].rules[0].when[0].regex: ...", and all problems
// are reported (errors.Join of *FieldError).
func Compile(cfg *Config) (*Table, error) {
	return nil, errors.New("split.Compile: not implemented")
}

// FieldError is one validation problem at a path in the configuration.
type FieldError struct {
	Path   string
	Reason string
}

func (e *FieldError) Error() string { return e.Path + ": " + e.Reason }

// Table is a compiled, immutable configuration (plus lock-free round-robin
// counters). It is safe for concurrent use.
type Table struct{}

// Header is one request header; Name is lower-case. Pseudo-headers
// (":authority", ":path", ":method") may be present.
type Header struct {
	Name, Value string
}

// Request is what a decision looks at. The adapter fills it without
// copying header values; Decide normalises the authority itself.
type Request struct {
	Authority string // ":authority" or "host"; port and case are ignored
	Method    string
	Path      string // with query string
	Headers   []Header
}

// Reason says why a version was chosen.
type Reason uint8

const (
	ReasonUnmatched Reason = iota
	ReasonHeaderMatch
	ReasonStickyRouting
	ReasonWeightedRouting
)

// String returns the wire name: unmatched, header_match, sticky_routing,
// weighted_routing.
func (r Reason) String() string { return "" }

// Variant is one experiment's assignment for a request.
type Variant struct {
	Experiment string
	Header     string
	Variant    string
	Bucket     int
}

// Decision is the outcome for one request. Service and Version are empty
// when no service matched (Reason ReasonUnmatched).
type Decision struct {
	Service  string
	Version  string
	Reason   Reason
	Rule     string // name of the matching rule, if any
	Bucket   int    // sticky bucket, -1 when none
	variants [MaxExperiments]Variant
	nv       int
}

// Variants returns the experiments that applied, in declared order.
func (d *Decision) Variants() []Variant { return d.variants[:d.nv] }

// Decide routes one request. It does not allocate and reads only the
// immutable table (plus an atomic round-robin counter).
func (t *Table) Decide(req *Request, d *Decision) {}

// Explanation is a decision plus why: rules tried, bucket, weights. It is
// for humans and the admin API; it allocates and does not advance the
// round-robin counter.
type Explanation struct {
	Decision    Decision    `json:"-"`
	Service     string      `json:"service,omitempty"`
	Version     string      `json:"version,omitempty"`
	Reason      string      `json:"reason"`
	Rule        string      `json:"rule,omitempty"`
	Bucket      *int        `json:"bucket,omitempty"`
	RulesTried  []RuleTrace `json:"rules_tried,omitempty"`
	Weights     Weights     `json:"weights,omitempty"`
	StickyKey   string      `json:"sticky_key,omitempty"`
	Experiments []Variant   `json:"experiments,omitempty"`
	Notes       []string    `json:"notes,omitempty"`
}

// RuleTrace is one rule's evaluation in an Explanation.
type RuleTrace struct {
	Rule    string `json:"rule"`
	Matched bool   `json:"matched"`
	Why     string `json:"why"` // e.g. `when[0]: header x-beta is absent`
}

// Explain decides like Decide would and says why, without counting the
// request as traffic.
func (t *Table) Explain(req *Request) Explanation { return Explanation{} }

// Config returns a deep copy of the configuration the table was compiled from.
func (t *Table) Config() *Config { return nil }

// Service returns the compiled view of one service's configuration.
func (t *Table) Service(name string) (Service, bool) { return Service{}, false }

// Assign returns the variant of experiment for key ("" experiment: the
// default experiment, the one named "default", else the first).
func (t *Table) Assign(experiment, key string) (Variant, error) {
	return Variant{}, errors.New("not implemented")
}

// WithWeights returns a new Table in which service has weights w (validated
// as in Compile). Round-robin counters of untouched services carry over.
func (t *Table) WithWeights(service string, w Weights) (*Table, error) {
	return nil, errors.New("not implemented")
}

// CanaryWeights returns the weights of a two-version service with the
// canary (non-stable version) at basisPoints. It fails for services that do
// not have exactly two versions (ErrNotTwoVersions) or unknown services
// (ErrUnknownService).
func (t *Table) CanaryWeights(service string, basisPoints int) (Weights, error) {
	return nil, errors.New("not implemented")
}

var (
	ErrUnknownService    = errors.New("unknown service")
	ErrUnknownExperiment = errors.New("unknown experiment")
	ErrNotTwoVersions    = errors.New("service does not have exactly two versions")
)

// ParsePercent parses a percentage with at most two decimals ("12.5",
// 12.5, "0.05") into basis points, rejecting NaN, infinities, more
// decimals, and values outside 0..100.
func ParsePercent(s string) (int, error) { return 0, errors.New("not implemented") }

// FormatPercent renders basis points as the shortest decimal ("20", "0.05").
func FormatPercent(bp int) string { return "" }
