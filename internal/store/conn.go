package store

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// Conn is how to reach etcd and prove who we are: endpoints, TLS (a CA to
// verify the members, a client certificate for etcd's --client-cert-auth)
// and etcd's own username/password authentication. Every etcd client of
// petrel (the agent, the proxy, the edge, the CLI) is built from one.
type Conn struct {
	Endpoints []string
	// CAFile verifies the etcd members' certificates (PEM); empty: the
	// system's roots (for https endpoints).
	CAFile string
	// CertFile and KeyFile are the client certificate and its key (PEM),
	// both or neither.
	CertFile, KeyFile string
	// Username and Password log in to etcd's authentication (both or
	// neither; the password never comes from a flag).
	Username, Password string
	// Dial, when set, opens the TCP connections to etcd (tests reaching
	// etcd members inside network namespaces); nil: the usual dialer.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
}

// String keeps the password out of any %v.
func (c Conn) String() string {
	return fmt.Sprintf("etcd %s (ca %q, cert %q, user %q)", strings.Join(c.Endpoints, ","), c.CAFile, c.CertFile, c.Username)
}

// Errors Connect and Dial classify their failures by (errors.Is): what
// the caller can do differs (wait for etcd, or fix the configuration).
var (
	// ErrUnreachable: no endpoint answered (down, wrong address, firewall).
	ErrUnreachable = errors.New("etcd unreachable")
	// ErrTLS: a TLS handshake failed (the members' certificates are not
	// signed by the CA, or they refused our client certificate).
	ErrTLS = errors.New("TLS with etcd failed")
	// ErrAuth: etcd refused the username/password, or requires them.
	ErrAuth = errors.New("etcd authentication failed")
	// ErrConfig: the connection settings themselves are wrong (a file that
	// cannot be read, a certificate without its key).
	ErrConfig = errors.New("etcd connection settings")
)

// tls builds the TLS configuration (nil when the endpoints are plain http
// and nothing asks for TLS).
func (c Conn) tls() (*tls.Config, error) {
	secure := c.CAFile != "" || c.CertFile != "" || c.KeyFile != ""
	for _, e := range c.Endpoints {
		if strings.HasPrefix(e, "https://") || strings.HasPrefix(e, "unixs://") {
			secure = true
		}
	}
	if !secure {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("%w: reading etcd_ca_file: %w", ErrConfig, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: etcd_ca_file %s holds no PEM certificate", ErrConfig, c.CAFile)
		}
		cfg.RootCAs = pool
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return nil, fmt.Errorf("%w: etcd_cert_file and etcd_key_file go together (got cert %q, key %q)", ErrConfig, c.CertFile, c.KeyFile)
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("%w: loading etcd_cert_file %s and etcd_key_file %s: %w", ErrConfig, c.CertFile, c.KeyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// ClientConfig is the etcd client configuration for c (with petrel's
// timeouts, reconnect backoff and a silent logger).
func (c Conn) ClientConfig() (clientv3.Config, error) {
	if len(c.Endpoints) == 0 {
		return clientv3.Config{}, fmt.Errorf("%w: no etcd endpoints", ErrConfig)
	}
	if (c.Username == "") != (c.Password == "") {
		if c.Username == "" {
			return clientv3.Config{}, fmt.Errorf("%w: ETCD_PASSWORD is set but etcd_username is not", ErrConfig)
		}
		return clientv3.Config{}, fmt.Errorf("%w: etcd_username %q needs ETCD_PASSWORD (in the environment or the secrets file)", ErrConfig, c.Username)
	}
	tc, err := c.tls()
	if err != nil {
		return clientv3.Config{}, err
	}
	return clientv3.Config{
		Endpoints:   c.Endpoints,
		TLS:         tc,
		Username:    c.Username,
		Password:    c.Password,
		DialTimeout: 2 * time.Second,
		// gRPC raises any shorter ping interval to 10 s, so a silent
		// network shows after about 12 s (internal/sim assumes the same).
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 2 * time.Second,
		// Not nil: the client would build its own sampling zap logger
		// (about 1 MiB resident) to log what petrel logs itself.
		Logger: zap.NewNop(),
		// Reconnect within a second once the store is back: gRPC's default
		// backoff grows to minutes, and a leader whose keepalives resume
		// only after its lease ran out in etcd loses the key needlessly.
		DialOptions: c.dialOptions(),
	}, nil
}

func (c Conn) dialOptions() []grpc.DialOption {
	opts := []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
		Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
		MinConnectTimeout: time.Second,
	})}
	if c.Dial != nil {
		opts = append(opts, grpc.WithContextDialer(c.Dial))
	}
	return opts
}

// connectTimeout bounds Connect: the dial, the login and one read.
const connectTimeout = 5 * time.Second

// Connect opens an etcd client for c and proves it works with one read of
// cluster's info key, within seconds. On failure the error says what
// failed (ErrUnreachable, ErrTLS, ErrAuth or ErrConfig, with the endpoint
// and the cause): a command never hangs on a wrong certificate, password
// or address.
func Connect(ctx context.Context, c Conn, cluster string) (*clientv3.Client, error) {
	cfg, err := c.ClientConfig()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	// New logs in (with a username) within DialTimeout; it does not wait
	// for a connection otherwise, so the read below is what proves one.
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, c.explain(ctx, err)
	}
	if _, err := cli.Get(ctx, KeysFor(cluster).Info(), clientv3.WithKeysOnly()); err != nil {
		cli.Close()
		return nil, c.explain(ctx, err)
	}
	return cli, nil
}

// OpenClient is Connect for a long-running process (the agent, a proxy,
// an edge): settings that cannot work (a wrong certificate or password,
// unreadable files) fail it within seconds, but an etcd that is merely
// unreachable does not: the client keeps reconnecting by itself, and the
// process runs meanwhile. A login (a username) must succeed before the
// client exists, so that one is retried every second until ctx ends.
func OpenClient(ctx context.Context, c Conn, cluster string, log *slog.Logger) (*clientv3.Client, error) {
	cfg, err := c.ClientConfig()
	if err != nil {
		return nil, err
	}
	var cli *clientv3.Client
	for {
		cli, err = clientv3.New(cfg)
		if err == nil {
			break
		}
		err = c.explain(ctx, err)
		if !errors.Is(err, ErrUnreachable) {
			return nil, err
		}
		log.Warn("etcd unreachable; retrying the login", "err", err)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connecting to %v: %w", c, err)
		case <-time.After(time.Second):
		}
	}
	pctx, cancel := context.WithTimeout(ctx, connectTimeout)
	_, err = cli.Get(pctx, KeysFor(cluster).Info(), clientv3.WithKeysOnly())
	cancel()
	if err != nil {
		if err = c.explain(ctx, err); !errors.Is(err, ErrUnreachable) {
			cli.Close()
			return nil, err
		}
		log.Warn("etcd unreachable at start; running on and reconnecting", "err", err)
	}
	return cli, nil
}

// explain turns a failed request into an error naming what failed: it
// probes each endpoint itself (TCP, then the TLS handshake with the same
// certificates) when the client's error does not say.
func (c Conn) explain(ctx context.Context, err error) error {
	switch {
	case errors.Is(err, rpctypes.ErrAuthFailed), errors.Is(err, rpctypes.ErrGRPCAuthFailed):
		return fmt.Errorf("%w: etcd refused user %q with this ETCD_PASSWORD (wrong username or password) at %s: %w", ErrAuth, c.Username, strings.Join(c.Endpoints, ","), err)
	case errors.Is(err, rpctypes.ErrUserEmpty), errors.Is(err, rpctypes.ErrGRPCUserEmpty),
		errors.Is(err, rpctypes.ErrInvalidAuthToken), errors.Is(err, rpctypes.ErrGRPCInvalidAuthToken):
		return fmt.Errorf("%w: etcd at %s requires a login: set etcd_username and ETCD_PASSWORD: %w", ErrAuth, strings.Join(c.Endpoints, ","), err)
	case c.Username == "" && (errors.Is(err, rpctypes.ErrPermissionDenied) || errors.Is(err, rpctypes.ErrGRPCPermissionDenied)):
		return fmt.Errorf("%w: etcd at %s requires a login (its authentication is on): set etcd_username and ETCD_PASSWORD: %w", ErrAuth, strings.Join(c.Endpoints, ","), err)
	case errors.Is(err, rpctypes.ErrPermissionDenied), errors.Is(err, rpctypes.ErrGRPCPermissionDenied):
		return fmt.Errorf("%w: etcd user %q may not read petrel's keys (grant it a role on /petrel/): %w", ErrAuth, c.Username, err)
	}
	tc, _ := c.tls()
	var probs []string
	kind := ErrUnreachable
	for _, e := range c.Endpoints {
		k, msg := probeEndpoint(ctx, e, tc, c.Dial)
		if k == nil {
			continue
		}
		if k == ErrTLS {
			kind = ErrTLS
		}
		probs = append(probs, msg)
	}
	if len(probs) == 0 {
		// Every endpoint answers TCP and TLS: the request itself failed.
		return fmt.Errorf("%w: %s answer but a request failed (no etcd quorum? an etcd member of another cluster?): %w", ErrUnreachable, strings.Join(c.Endpoints, ","), err)
	}
	return fmt.Errorf("%w: %s (%w)", kind, strings.Join(probs, "; "), err)
}

// probeEndpoint dials one endpoint and, for TLS, completes a handshake and
// waits briefly for the server's verdict on our certificate (with TLS 1.3
// a refused client certificate arrives as an alert after the handshake).
// It returns the class of the problem found (nil: none) and what it is.
func probeEndpoint(ctx context.Context, endpoint string, tc *tls.Config, dial func(context.Context, string) (net.Conn, error)) (error, string) {
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" {
		return ErrConfig, fmt.Sprintf("endpoint %q is not a URL like https://10.0.0.2:2379", endpoint)
	}
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if dial == nil {
		var d net.Dialer
		dial = func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
	}
	conn, err := dial(pctx, u.Host)
	if err != nil {
		return ErrUnreachable, fmt.Sprintf("%s: %v", endpoint, err)
	}
	defer conn.Close()
	if u.Scheme != "https" {
		// A plain endpoint that answers a TLS hello is a TLS member.
		tconn := tls.Client(conn, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}) //nolint:gosec // only probing whether it speaks TLS
		if tconn.HandshakeContext(pctx) == nil {
			return ErrTLS, fmt.Sprintf("%s serves TLS: write https:// and set etcd_ca_file (and a client certificate)", endpoint)
		}
		return nil, ""
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if tc != nil {
		cfg = tc.Clone()
	}
	cfg.NextProtos = []string{"h2"}
	cfg.ServerName = u.Hostname()
	tconn := tls.Client(conn, cfg)
	if err := tconn.HandshakeContext(pctx); err != nil {
		var uerr x509.UnknownAuthorityError
		var herr x509.HostnameError
		switch {
		case errors.As(err, &uerr):
			return ErrTLS, fmt.Sprintf("%s: its certificate is not signed by etcd_ca_file: %v", endpoint, err)
		case errors.As(err, &herr):
			return ErrTLS, fmt.Sprintf("%s: its certificate is not for this address: %v", endpoint, err)
		}
		return ErrTLS, fmt.Sprintf("%s: TLS handshake: %v", endpoint, err)
	}
	_ = tconn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	var b [1]byte
	if _, err := tconn.Read(b[:]); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil, "" // nothing said: the certificate was accepted
		}
		if strings.Contains(err.Error(), "remote error") {
			return ErrTLS, fmt.Sprintf("%s refused our client certificate (etcd_cert_file): %v", endpoint, err)
		}
	}
	return nil, ""
}
