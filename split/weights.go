package split

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// ParsePercent parses a percentage with at most two decimals ("12.5",
// "0.05", "100") into basis points, rejecting NaN, infinities, exponents,
// more decimals, and values outside 0..100. Surrounding spaces are ignored.
// Trailing zeros do not count as decimals: "12.500" is 1250 bp.
func ParsePercent(s string) (int, error) {
	bp, reason := parseBasisPoints(strings.TrimSpace(s))
	if reason != "" {
		return 0, fmt.Errorf("percentage %q: %s", s, reason)
	}
	return bp, nil
}

// parseBasisPoints reads a plain decimal percentage from its text, exactly:
// 0.07 is 7 bp with no float in between. It returns a reason on failure.
func parseBasisPoints(s string) (int, string) { return parseHundredths(s, Buckets) }

// parseHundredths reads a plain non-negative decimal with at most two
// decimals as a count of hundredths (12.5 is 1250), at most limit. It
// returns a reason on failure.
func parseHundredths(s string, limit int) (int, string) {
	switch strings.ToLower(strings.TrimLeft(s, "+-")) {
	case ".nan", "nan", ".inf", "inf", "infinity":
		return 0, "NaN and infinities are not allowed"
	}
	if s == "" {
		return 0, "must be a number"
	}
	if s[0] == '-' {
		return 0, "must not be negative"
	}
	if s[0] == '+' {
		s = s[1:]
	}
	intPart, frac, _ := strings.Cut(s, ".")
	if intPart == "" && frac == "" || !allDigits(intPart) || !allDigits(frac) {
		return 0, "must be a plain decimal number such as 20 or 12.5"
	}
	if len(intPart) > 1 && intPart[0] == '0' {
		return 0, "must not have leading zeros"
	}
	frac = strings.TrimRight(frac, "0")
	if len(frac) > 2 {
		return 0, "has more than two decimals (the resolution is 0.01)"
	}
	outOfRange := "must be between 0 and " + FormatPercent(limit)
	if len(intPart) > len(strconv.Itoa(limit/100)) {
		return 0, outOfRange
	}
	n := 0
	for _, c := range intPart {
		n = n*10 + int(c-'0')
	}
	f := 0
	for i := 0; i < 2; i++ {
		f *= 10
		if i < len(frac) {
			f += int(frac[i] - '0')
		}
	}
	v := n*100 + f
	if v > limit {
		return 0, outOfRange
	}
	return v, ""
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// FormatPercent renders basis points as the shortest decimal ("20", "12.5",
// "0.05").
func FormatPercent(bp int) string {
	sign := ""
	if bp < 0 {
		sign, bp = "-", -bp
	}
	whole, frac := bp/100, bp%100
	switch {
	case frac == 0:
		return sign + strconv.Itoa(whole)
	case frac%10 == 0:
		return fmt.Sprintf("%s%d.%d", sign, whole, frac/10)
	default:
		return fmt.Sprintf("%s%d.%02d", sign, whole, frac)
	}
}

// Sum returns the total of all shares in basis points.
func (w Weights) Sum() int {
	total := 0
	for _, x := range w {
		total += x.BasisPoints
	}
	return total
}

// Get returns the share of version and whether it is declared.
func (w Weights) Get(version string) (int, bool) {
	for _, x := range w {
		if x.Version == version {
			return x.BasisPoints, true
		}
	}
	return 0, false
}

// Equal reports whether w and o declare the same versions, in the same
// order, with the same shares.
func (w Weights) Equal(o Weights) bool {
	if len(w) != len(o) {
		return false
	}
	for i := range w {
		if w[i] != o[i] {
			return false
		}
	}
	return true
}

// String renders w like the configuration file does: "v1: 80, v2: 20".
func (w Weights) String() string {
	var b strings.Builder
	for i, x := range w {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(x.Version)
		b.WriteString(": ")
		b.WriteString(FormatPercent(x.BasisPoints))
	}
	return b.String()
}

// MarshalJSON writes w as an object in declared order with numeric
// percentages: {"v1":80,"v2":20}.
func (w Weights) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, x := range w {
		if i > 0 {
			b.WriteByte(',')
		}
		name, err := json.Marshal(x.Version)
		if err != nil {
			return nil, err
		}
		b.Write(name)
		b.WriteByte(':')
		b.WriteString(FormatPercent(x.BasisPoints))
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// UnmarshalJSON reads what MarshalJSON writes, with ParseWeightsJSON's
// checks.
func (w *Weights) UnmarshalJSON(data []byte) error {
	parsed, err := ParseWeightsJSON(data)
	if err != nil {
		return err
	}
	*w = parsed
	return nil
}

// ParseWeightsJSON reads a JSON object of version -> percentage (as the
// admin API receives it), keeping the declared order. Duplicate versions
// (also ones that differ only in case), non-numbers, more than two
// decimals, exponents and values outside 0..100 are errors; a problem with
// one entry is a *FieldError whose Path is the version name. It does not
// check that the shares sum to 100 (Compile and Table.WithWeights do).
func ParseWeightsJSON(data []byte) (Weights, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("weights: %w", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, &FieldError{Reason: "weights must be a JSON object of version: percentage"}
	}
	w := Weights{}
	seen := map[string]string{} // lower-case name -> name as written
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("weights: %w", err)
		}
		name := tok.(string) // object keys are always strings
		if prev, dup := seen[strings.ToLower(name)]; dup {
			if prev == name {
				return nil, &FieldError{Path: name, Reason: "duplicate version"}
			}
			return nil, &FieldError{Path: name, Reason: fmt.Sprintf("differs only in case from %q", prev)}
		}
		seen[strings.ToLower(name)] = name
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, &FieldError{Path: name, Reason: err.Error()}
		}
		num, ok := jsonNumberText(raw)
		if !ok {
			return nil, &FieldError{Path: name, Reason: "must be a number, not " + jsonKind(raw)}
		}
		bp, reason := parseBasisPoints(num)
		if reason != "" {
			return nil, &FieldError{Path: name, Reason: reason}
		}
		w = append(w, Weight{Version: name, BasisPoints: bp})
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, fmt.Errorf("weights: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, &FieldError{Reason: "unexpected data after the weights object"}
	}
	return w, nil
}

func jsonNumberText(raw json.RawMessage) (string, bool) {
	s := string(bytes.TrimSpace(raw))
	if s == "" {
		return "", false
	}
	if c := s[0]; c == '-' || (c >= '0' && c <= '9') {
		return s, true
	}
	return "", false
}

func jsonKind(raw json.RawMessage) string {
	s := bytes.TrimSpace(raw)
	if len(s) == 0 {
		return "nothing"
	}
	switch s[0] {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return string(s)
}
