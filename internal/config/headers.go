package config

import (
	"errors"
	"fmt"

	"github.com/trafficsplit/splitter/split"
)

// CheckHeaders rejects a routing configuration whose experiments would
// write the route or reason header: a variant there would overwrite the
// version Envoy routes on. The engine cannot see this on its own because
// the header names are process settings.
func CheckHeaders(cfg *split.Config, routeHeader, reasonHeader string) error {
	var errs []error
	for i, e := range cfg.Experiments {
		switch e.Header {
		case "":
		case routeHeader:
			errs = append(errs, &split.FieldError{Path: fmt.Sprintf("experiments[%d].header", i),
				Reason: fmt.Sprintf("%q is the route header (route_header); a variant would overwrite the version", e.Header)})
		case reasonHeader:
			errs = append(errs, &split.FieldError{Path: fmt.Sprintf("experiments[%d].header", i),
				Reason: fmt.Sprintf("%q is the reason header (reason_header)", e.Header)})
		}
	}
	return errors.Join(errs...)
}

// CheckFileHeaders is CheckHeaders with the header names a file sets for
// itself (route_header, reason_header), or the defaults; `splitter
// validate` uses it, where no flags or environment apply.
func CheckFileHeaders(cfg *split.Config, data []byte) error {
	d := Defaults()
	route, reason := d.RouteHeader, d.ReasonHeader
	if fs, err := FileSettings(data); err == nil {
		if v, ok := fs["route_header"]; ok {
			route = v
		}
		if v, ok := fs["reason_header"]; ok {
			reason = v
		}
	}
	return CheckHeaders(cfg, route, reason)
}
