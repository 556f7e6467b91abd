package settings_test

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/trafficsplit/splitter/internal/settings"
)

func TestFleetSettings(t *testing.T) {
	host, _ := os.Hostname()
	pw := writeFile(t, "pw", "s3cret\n")
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		check   func(t *testing.T, s settings.Settings)
		wantErr string
	}{
		{name: "off by default", check: func(t *testing.T, s settings.Settings) {
			if s.FleetMode() || s.EtcdPrefix != "/splitter/" || s.NodeID != "" || s.EtcdDialTimeout != 5*time.Second || s.EtcdFollowInterval != 500*time.Millisecond {
				t.Fatalf("%+v", s)
			}
		}},
		{name: "env endpoints, node id from the host name", env: map[string]string{"SPLITTER_ETCD_ENDPOINTS": "http://10.0.0.1:2379, https://10.0.0.2:2379,,"},
			check: func(t *testing.T, s settings.Settings) {
				if !s.FleetMode() || strings.Join(s.EtcdEndpoints, " ") != "http://10.0.0.1:2379 https://10.0.0.2:2379" || s.NodeID != host {
					t.Fatalf("%+v", s)
				}
			}},
		{name: "flags", args: []string{"--etcd-endpoints", "127.0.0.1:2379", "--etcd-prefix", "/mesh/a/", "--node-id", "pod-7",
			"--etcd-username", "splitter", "--etcd-password-file", pw, "--etcd-cache-file", "/var/cache/s.json"},
			check: func(t *testing.T, s settings.Settings) {
				got, err := s.EtcdPassword()
				if s.EtcdPrefix != "/mesh/a/" || s.NodeID != "pod-7" || s.EtcdCacheFile != "/var/cache/s.json" || err != nil || got != "s3cret" {
					t.Fatalf("%+v, password %q %v", s, got, err)
				}
			}},
		{name: "bad scheme", args: []string{"--etcd-endpoints", "unix:///x"}, wantErr: "etcd_endpoints"},
		{name: "no port", args: []string{"--etcd-endpoints", "http://etcd"}, wantErr: "etcd_endpoints"},
		{name: "prefix without slash", args: []string{"--etcd-endpoints", "127.0.0.1:2379", "--etcd-prefix", "splitter"}, wantErr: "etcd_prefix"},
		{name: "node id with slash", args: []string{"--etcd-endpoints", "127.0.0.1:2379", "--node-id", "a/b"}, wantErr: "node_id"},
		{name: "cert without key", args: []string{"--etcd-endpoints", "127.0.0.1:2379", "--etcd-cert-file", "c.pem"}, wantErr: "etcd_key_file go together"},
		{name: "user without password", args: []string{"--etcd-endpoints", "127.0.0.1:2379", "--etcd-username", "u"}, wantErr: "etcd_password_file go together"},
		{name: "state file in fleet mode", args: []string{"--etcd-endpoints", "127.0.0.1:2379", "--state-file", "/tmp/s.json"}, wantErr: "state_file: not used with etcd_endpoints"},
		{name: "etcd option without endpoints", args: []string{"--etcd-cache-file", "/tmp/c.json"}, wantErr: "etcd_cache_file: set without etcd_endpoints"},
		{name: "follow interval too short", args: []string{"--etcd-endpoints", "127.0.0.1:2379", "--etcd-follow-interval", "50ms"}, wantErr: "etcd_follow_interval: 50ms must be between 100ms and 10s"},
		{name: "follow interval too long", args: []string{"--etcd-endpoints", "127.0.0.1:2379", "--etcd-follow-interval", "11s"}, wantErr: "etcd_follow_interval"},
		{name: "follow interval raised", args: []string{"--etcd-endpoints", "127.0.0.1:2379", "--etcd-follow-interval", "2s"},
			check: func(t *testing.T, s settings.Settings) {
				if s.EtcdFollowInterval != 2*time.Second {
					t.Fatalf("etcd_follow_interval = %v", s.EtcdFollowInterval)
				}
			}},
		{name: "zero dial timeout", args: []string{"--etcd-endpoints", "127.0.0.1:2379", "--etcd-dial-timeout", "0s"}, wantErr: "etcd_dial_timeout"},
		{name: "rollout defaults", args: []string{"--etcd-endpoints", "127.0.0.1:2379"},
			check: func(t *testing.T, s settings.Settings) {
				if s.RolloutPublishInterval != time.Second || s.RolloutLeaderTTL != 5*time.Second {
					t.Fatalf("%+v", s)
				}
			}},
		{name: "rollout settings from the environment", args: []string{"--etcd-endpoints", "127.0.0.1:2379"},
			env: map[string]string{"SPLITTER_ROLLOUT_PUBLISH_INTERVAL": "200ms", "SPLITTER_ROLLOUT_LEADER_TTL": "2s"},
			check: func(t *testing.T, s settings.Settings) {
				if s.RolloutPublishInterval != 200*time.Millisecond || s.RolloutLeaderTTL != 2*time.Second {
					t.Fatalf("%+v", s)
				}
			}},
		{name: "leader ttl not whole seconds", args: []string{"--etcd-endpoints", "127.0.0.1:2379", "--rollout-leader-ttl", "2500ms"}, wantErr: "rollout_leader_ttl: 2.5s must be whole seconds"},
		{name: "leader ttl too short", args: []string{"--etcd-endpoints", "127.0.0.1:2379", "--rollout-leader-ttl", "1s"}, wantErr: "rollout_leader_ttl"},
		{name: "publish interval too short", args: []string{"--etcd-endpoints", "127.0.0.1:2379", "--rollout-publish-interval", "1ms"}, wantErr: "rollout_publish_interval: 1ms must be between"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := settings.Load(newFlags(t, tc.args...), envMap(tc.env))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, s)
		})
	}
}

// The etcd settings may live in the file, beside the routing keys.
func TestFleetSettingsFromFile(t *testing.T) {
	file := writeFile(t, "c.yaml", "etcd_endpoints: http://127.0.0.1:2379\nnode_id: from-file\n")
	s, err := settings.Load(newFlags(t, "--config", file), envMap(nil))
	if err != nil {
		t.Fatal(err)
	}
	if !s.FleetMode() || s.NodeID != "from-file" {
		t.Fatalf("%+v", s)
	}
}
