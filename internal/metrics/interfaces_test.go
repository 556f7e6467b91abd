package metrics_test

import (
	"github.com/trafficsplit/splitter/adapter"
	"github.com/trafficsplit/splitter/internal/admin"
	"github.com/trafficsplit/splitter/internal/metrics"
)

// The adapters and the admin API take *Metrics through their own
// interfaces; this breaks the build if one of them drifts.
var (
	_ adapter.Recorder = (*metrics.Metrics)(nil)
	_ admin.Recorder   = (*metrics.Metrics)(nil)
)
