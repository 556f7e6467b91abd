package split

import (
	"errors"
	"strconv"
)

// FieldError is one validation problem at a path in the configuration, such
// as "services[1].rules[0].when[0].regex". Line is the line in the YAML
// file when known (Parse and Load), else 0.
type FieldError struct {
	Path   string
	Reason string
	Line   int
}

func (e *FieldError) Error() string {
	s := e.Reason
	if e.Path != "" {
		s = e.Path + ": " + s
	}
	if e.Line > 0 {
		s += " (line " + strconv.Itoa(e.Line) + ")"
	}
	return s
}

// FieldErrors returns every *FieldError in err (which may be a single one or
// an errors.Join of them), in order.
func FieldErrors(err error) []*FieldError {
	var out []*FieldError
	var walk func(error)
	walk = func(err error) {
		if err == nil {
			return
		}
		if fe, ok := err.(*FieldError); ok {
			out = append(out, fe)
			return
		}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		var fe *FieldError
		if errors.As(err, &fe) {
			out = append(out, fe)
		}
	}
	walk(err)
	return out
}

func joinFieldErrors(errs []*FieldError) error {
	if len(errs) == 0 {
		return nil
	}
	list := make([]error, len(errs))
	for i, e := range errs {
		list[i] = e
	}
	return errors.Join(list...)
}

var (
	// ErrUnknownService is returned (wrapped) for a service name the table
	// does not have.
	ErrUnknownService = errors.New("unknown service")
	// ErrUnknownExperiment is returned (wrapped) for an experiment name the
	// table does not have.
	ErrUnknownExperiment = errors.New("unknown experiment")
	// ErrNotTwoVersions is returned (wrapped) by CanaryWeights for services
	// that do not have exactly two versions.
	ErrNotTwoVersions = errors.New("service does not have exactly two versions")
)
