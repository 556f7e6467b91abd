package fleet

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/trafficsplit/splitter/internal/settings"
)

// ClientOptions say how to reach etcd.
type ClientOptions struct {
	Endpoints []string
	// CAFile verifies the server's certificate; CertFile and KeyFile are
	// the client's (mutual TLS). Any of them, or an https endpoint, turns
	// TLS on.
	CAFile, CertFile, KeyFile string
	// Username and Password authenticate with etcd's own auth.
	Username, Password string
	// DialTimeout bounds authentication at connection time.
	DialTimeout time.Duration
}

// ClientOptionsFrom takes the etcd settings, reading the password file.
func ClientOptionsFrom(s settings.Settings) (ClientOptions, error) {
	pw, err := s.EtcdPassword()
	if err != nil {
		return ClientOptions{}, err
	}
	return ClientOptions{
		Endpoints: s.EtcdEndpoints,
		CAFile:    s.EtcdCAFile, CertFile: s.EtcdCertFile, KeyFile: s.EtcdKeyFile,
		Username: s.EtcdUsername, Password: pw,
		DialTimeout: s.EtcdDialTimeout,
	}, nil
}

// Keepalive of the client's gRPC connection: a half-open connection is
// dropped even when nothing else notices. grpc-go raises a keepalive time
// under 10 s to 10 s, so this is the slow last resort; a Source notices a
// member that hangs within about a second (members.go, follow.go).
const (
	keepaliveTime    = 5 * time.Second
	keepaliveTimeout = 3 * time.Second
)

// Config returns the clientv3 configuration.
func (o ClientOptions) Config() (clientv3.Config, error) {
	if len(o.Endpoints) == 0 {
		return clientv3.Config{}, errors.New("etcd_endpoints: empty")
	}
	cfg := clientv3.Config{
		Endpoints:            o.Endpoints,
		DialTimeout:          o.DialTimeout,
		DialKeepAliveTime:    keepaliveTime,
		DialKeepAliveTimeout: keepaliveTimeout,
		Username:             o.Username,
		Password:             o.Password,
		// The client's own zap logs would bypass splitter's logger; what
		// matters (connection state, watch restarts) is logged here.
		Logger: zap.NewNop(),
	}
	useTLS := o.CAFile != "" || o.CertFile != ""
	for _, ep := range o.Endpoints {
		if strings.HasPrefix(ep, "https://") {
			useTLS = true
		}
	}
	if useTLS {
		t := &tls.Config{MinVersion: tls.VersionTLS12}
		if o.CAFile != "" {
			pem, err := os.ReadFile(o.CAFile)
			if err != nil {
				return clientv3.Config{}, fmt.Errorf("etcd_ca_file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return clientv3.Config{}, fmt.Errorf("etcd_ca_file: %s holds no PEM certificate", o.CAFile)
			}
			t.RootCAs = pool
		}
		if o.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
			if err != nil {
				return clientv3.Config{}, fmt.Errorf("etcd_cert_file, etcd_key_file: %w", err)
			}
			t.Certificates = []tls.Certificate{cert}
		}
		cfg.TLS = t
	}
	return cfg, nil
}

// NewClient connects to etcd. Without auth it does not wait for the
// server; with auth it authenticates first, so it fails when etcd is
// unreachable (within DialTimeout).
func NewClient(o ClientOptions) (*clientv3.Client, error) { return newClient(o) }

// newClient is NewClient with more gRPC dial options (a Source's members).
func newClient(o ClientOptions, dopts ...grpc.DialOption) (*clientv3.Client, error) {
	cfg, err := o.Config()
	if err != nil {
		return nil, err
	}
	cfg.DialOptions = append(cfg.DialOptions, dopts...)
	c, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcd %s: %w", strings.Join(o.Endpoints, ","), err)
	}
	return c, nil
}
