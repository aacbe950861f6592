package agent

// TLS for Postgres: before it is bootstrapped, cloned, rewound or started,
// the node makes sure RunDir holds the cluster CA certificate and a server
// certificate for its advertise and listen hosts signed by it. The CA
// lives in etcd (/petrel/<c>/ca, key sealed with the superuser password);
// the first node that needs it creates it (create-only).

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/petrel-db/petrel/internal/pki"
	"github.com/petrel-db/petrel/internal/store"
)

// tlsState remembers the once-per-run check of a running server's TLS.
type tlsState struct {
	mu   sync.Mutex
	at   time.Time // when TLS of a running server was last checked (see checkTLS)
	done bool
}

// ensureTLS makes sure RunDir holds a valid server certificate signed by
// the cluster CA; installed says whether it wrote new files.
func (a *Agent) ensureTLS(ctx context.Context) (installed bool, err error) {
	derived := false // a key derivation ran (scrypt: 32 MiB of scratch)
	defer func() {
		if derived {
			// That scratch is garbage once scrypt returns, but the heap
			// would keep it resident until it grew that large again.
			debug.FreeOSMemory()
		}
	}()
	certP, keyP, caP := a.pg.TLSPaths()
	hosts := []string{a.cfg.AdvertiseHost, a.cfg.ListenHost}
	certPEM, _ := os.ReadFile(certP)
	keyPEM, _ := os.ReadFile(keyP)
	caPEM, _ := os.ReadFile(caP)
	localOK := pki.CheckServerCert(certPEM, keyPEM, caPEM, hosts...) == nil

	raw, _, ok := a.st.Raw(store.KeyCA)
	if !ok {
		var err error
		raw, ok, err = a.st.Get(ctx, store.KeyCA)
		if err != nil {
			if localOK {
				a.log.Warn("cannot read the cluster CA from the store; keeping the local certificate", "err", err)
				return false, nil
			}
			return false, err
		}
	}
	if !ok {
		derived = true
		_, stored, err := pki.NewCA(a.cfg.Cluster, a.sec.Superuser)
		if err != nil {
			return false, err
		}
		created, err := a.st.CreateIfAbsent(ctx, stored.Encode(), store.KeyCA)
		if err != nil {
			return false, err
		}
		if created {
			a.log.Info("created the cluster CA")
			raw = stored.Encode()
		} else if raw, ok, err = a.st.Get(ctx, store.KeyCA); err != nil || !ok {
			return false, fmt.Errorf("reading the cluster CA another member created: %w", errors.Join(err, errors.New("not found")))
		}
	}
	stored, err := pki.Decode(raw)
	if err != nil {
		return false, err
	}
	if localOK && pki.SameCert(caPEM, []byte(stored.CertPEM)) {
		return false, nil
	}
	derived = true
	ca, err := stored.Unseal(a.sec.Superuser)
	if err != nil {
		return false, err
	}
	cert, key, err := ca.Issue(a.cfg.ID, hosts...)
	if err != nil {
		return false, err
	}
	if err := a.pg.InstallTLS(cert, key, []byte(stored.CertPEM)); err != nil {
		return false, err
	}
	a.log.Info("installed a server certificate signed by the cluster CA", "hosts", strings.Join(hosts, ","))
	return true, nil
}

// checkTLS, once per agent run, gives a Postgres that is already running
// (started before TLS existed, or by an earlier agent) its certificate and
// turns ssl on with a reload, so members that verify-full can reach it.
// It retries every 30s after a failure.
func (a *Agent) checkTLS(ctx context.Context) {
	a.tls.mu.Lock()
	skip := a.tls.done || time.Since(a.tls.at) < 30*time.Second
	if !skip {
		a.tls.at = time.Now()
	}
	a.tls.mu.Unlock()
	if skip || !a.pg.Running() || !a.st.OK() {
		return
	}
	installed, err := a.ensureTLS(ctx)
	if err != nil {
		a.log.Warn("preparing TLS for the running postgres", "err", err)
		return
	}
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	on, err := a.pg.SSLOn(cctx)
	cancel()
	if err != nil {
		return
	}
	if !on || installed {
		if err := a.pg.RefreshConf(ctx); err != nil {
			a.log.Warn("turning ssl on", "err", err)
			return
		}
		a.log.Info("turned ssl on (reload)")
	}
	a.tls.mu.Lock()
	a.tls.done = true
	a.tls.mu.Unlock()
}
