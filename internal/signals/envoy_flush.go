package signals

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

// Envoy merges its workers' histograms only at a stats flush: every
// stats_flush_interval (5 s by default), and at every read of the admin
// interface when the bootstrap says stats_flush_on_admin: true, as the
// bootstraps of this release do. An Envoy still running an older
// bootstrap (docs/upgrading.md) gives upstream_rq_time as of its last
// flush: the counts are current, the latency up to the flush interval
// behind them, and the guard's latency figures lag by as much. That works,
// but not as the guard assumes (one read of lag), so it is reported: a
// log line when it is first seen, and FlushWarning (the admin views'
// warnings) while it lasts.

// flushCheckEvery is how often ReadLatency asks Envoy again how it
// flushes (it may have been restarted on another bootstrap).
const flushCheckEvery = time.Minute

// flushState is what the last check found.
type flushState struct {
	checked atomic.Int64 // unix nanoseconds of the last check, 0: never
	off     atomic.Bool  // stats_flush_on_admin is not set
}

// checkFlush asks Envoy, when a check is due, whether it flushes its
// statistics at admin reads. An answer it cannot give (an older Envoy, a
// restricted admin interface) leaves what was known.
func (e *EnvoyAdmin) checkFlush(ctx context.Context) {
	now := time.Now()
	if last := e.flush.checked.Load(); last != 0 && now.Sub(time.Unix(0, last)) < flushCheckEvery {
		return
	}
	e.flush.checked.Store(now.UnixNano())
	on, err := e.FlushesOnAdmin(ctx)
	if err != nil {
		return
	}
	if was := e.flush.off.Swap(!on); !on && !was && e.Logger != nil {
		e.Logger.Warn(e.FlushWarning())
	}
}

// FlushesOnAdmin asks Envoy's admin interface whether its bootstrap sets
// stats_flush_on_admin.
func (e *EnvoyAdmin) FlushesOnAdmin(ctx context.Context) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.base+"/config_dump?mask=bootstrap.stats_flush_on_admin", nil)
	if err != nil {
		return false, err
	}
	resp, err := e.client.Do(req)
	if err != nil {
		return false, fmt.Errorf("envoy admin: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("envoy admin %s/config_dump: %s", e.base, resp.Status)
	}
	var dump struct {
		Configs []struct {
			Type      string `json:"@type"`
			Bootstrap *struct {
				StatsFlushOnAdmin bool `json:"stats_flush_on_admin"`
			} `json:"bootstrap"`
		} `json:"configs"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, MaxStatsBytes)).Decode(&dump); err != nil {
		return false, fmt.Errorf("envoy admin %s/config_dump: %w", e.base, err)
	}
	for _, c := range dump.Configs {
		if strings.HasSuffix(c.Type, ".BootstrapConfigDump") && c.Bootstrap != nil {
			return c.Bootstrap.StatsFlushOnAdmin, nil
		}
	}
	return false, fmt.Errorf("envoy admin %s/config_dump: no bootstrap in the answer", e.base)
}

// FlushWarning says, once a latency reading found that this Envoy does
// not flush its statistics at admin reads, what that means for the guard
// and what to do; "" otherwise.
func (e *EnvoyAdmin) FlushWarning() string {
	if !e.flush.off.Load() {
		return ""
	}
	return fmt.Sprintf("Envoy at %s does not flush its statistics at admin reads (stats_flush_on_admin is not set: a bootstrap older "+
		"than this splitter's): the latency histograms the rollout guard reads are up to its stats_flush_interval (5s by default) "+
		"behind its counts, so latency verdicts lag by as much; render its bootstrap again with this release (docs/upgrading.md)",
		e.Addr())
}
