package agent

// TLS for Postgres and the API: before Postgres is bootstrapped, cloned,
// rewound or started, the node makes sure RunDir holds the cluster CA
// certificate and a server certificate for its advertise and listen hosts
// signed by it, and its API directory the node's own certificate and the
// cluster secret (identity.go). The CA lives in etcd (/petrel/<c>/ca, key
// and secret sealed with the superuser password) and must be the pinned
// one; the first node that needs it creates it (create-only) unless one
// is pinned.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/petrel-db/petrel/internal/api"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/pki"
	"github.com/petrel-db/petrel/internal/store"
)

// tlsState remembers the once-per-run check of a running server's TLS.
type tlsState struct {
	mu   sync.Mutex
	at   time.Time // when TLS of a running server was last checked (see checkTLS)
	done bool
	// problem is why the last ensureTLS failed or refused the store's CA
	// ("" none; shown in /status).
	problem string
}

// ensureTLS makes sure RunDir holds a valid Postgres server certificate
// signed by the cluster CA, and the API directory the node's API
// certificate and the cluster secret; installed says whether it wrote new
// Postgres files. The store's CA must be the pinned one (identity.go).
func (a *Agent) ensureTLS(ctx context.Context) (installed bool, err error) {
	defer func() {
		if err != nil {
			a.noteTLSProblem(err.Error())
		}
	}()
	derived := false // a key derivation ran (argon2id: 64 MiB of scratch)
	defer func() {
		if derived {
			// That scratch is garbage once the derivation returns, but the
			// heap would keep it resident until it grew that large again.
			debug.FreeOSMemory()
		}
	}()
	certP, keyP, caP := a.pg.TLSPaths()
	hosts := []string{a.cfg.AdvertiseHost, a.cfg.ListenHost}
	certPEM, _ := os.ReadFile(certP)
	keyPEM, _ := os.ReadFile(keyP)
	caPEM, _ := os.ReadFile(caP)
	pgOK := pki.CheckServerCert(certPEM, keyPEM, caPEM, hosts...) == nil
	dir := APIDir(a.cfg.DataDir)
	apiCert, _ := os.ReadFile(filepath.Join(dir, api.CertFile))
	apiKey, _ := os.ReadFile(filepath.Join(dir, api.KeyFile))
	apiCA, _ := os.ReadFile(filepath.Join(dir, api.CAFile))
	apiOK := pki.CheckNodeCert(apiCert, apiKey, apiCA, a.cfg.Cluster, a.cfg.ID, hosts...) == nil &&
		a.failsafeKey() != nil && a.ident.CAPEM() != nil
	localOK := pgOK && apiOK && pki.SameCert(caPEM, apiCA)

	raw, _, ok := a.st.Raw(store.KeyCA)
	if !ok {
		var err error
		raw, ok, err = a.st.Get(ctx, store.KeyCA)
		if err != nil {
			if localOK {
				a.log.Warn("cannot read the cluster CA from the store; keeping the local certificates", "err", err)
				return false, nil
			}
			return false, err
		}
	}
	var ca *pki.CA // unsealed, when this node created it
	if !ok {
		if a.cfg.CAFingerprint != "" || a.caPin() != "" {
			return false, errors.New("the store holds no cluster CA, but one is pinned: refusing to create another (restore the store's /ca, or point this node at its own cluster)")
		}
		derived = true
		created, stored, err := pki.NewCA(a.cfg.Cluster, a.secrets().Superuser)
		if err != nil {
			return false, err
		}
		won, err := a.st.CreateIfAbsent(ctx, stored.Encode(), store.KeyCA)
		if err != nil {
			return false, err
		}
		if won {
			fp, _ := pki.Fingerprint(created.CertPEM)
			a.log.Info("created the cluster CA", "ca_fingerprint", fp)
			raw, ca = stored.Encode(), created
		} else if raw, ok, err = a.st.Get(ctx, store.KeyCA); err != nil || !ok {
			return false, fmt.Errorf("reading the cluster CA another member created: %w", errors.Join(err, errors.New("not found")))
		}
	}
	stored, err := pki.Decode(raw)
	if err != nil {
		return false, err
	}
	if err := a.checkCA([]byte(stored.CertPEM)); err != nil {
		if localOK {
			// Keep serving with the pinned CA's certificates; never
			// install the store's.
			a.log.Error("keeping the local certificates", "err", err)
			a.noteTLSProblem(err.Error())
			return false, nil
		}
		return false, err
	}
	if localOK && pki.SameCert(caPEM, []byte(stored.CertPEM)) {
		a.noteTLSProblem("")
		return false, nil
	}
	if ca == nil {
		derived = true
		if ca, err = stored.Unseal(a.secrets().Superuser); err != nil {
			if rec, _, ok, _ := a.st.Rotation(store.SecretSuperuser); ok && errors.Is(err, pki.ErrWrongPassword) {
				// A member without DATA_DIR/api (new, or wiped) cannot open
				// the rotation record either: that takes the cluster secret.
				return false, fmt.Errorf("%w: the superuser password was rotated by `petrel secrets rotate` (rotation %s, %s): put the new SU_PASSWORD in this node's secrets file",
					err, rec.ID, rec.UpdatedAt.Format(time.RFC3339))
			}
			return false, err
		}
	}
	if !pgOK || !pki.SameCert(caPEM, []byte(stored.CertPEM)) {
		cert, key, err := ca.Issue(a.cfg.ID, hosts...)
		if err != nil {
			return false, err
		}
		if err := a.pg.InstallTLS(cert, key, []byte(stored.CertPEM)); err != nil {
			return false, err
		}
		installed = true
		a.log.Info("installed a server certificate signed by the cluster CA", "hosts", strings.Join(hosts, ","))
	}
	if !apiOK || !pki.SameCert(apiCA, []byte(stored.CertPEM)) {
		cert, key, err := ca.IssueNode(a.cfg.Cluster, a.cfg.ID, hosts...)
		if err != nil {
			return installed, err
		}
		if err := a.saveIdentity(cert, key, []byte(stored.CertPEM), ca.Secret); err != nil {
			return installed, err
		}
		a.log.Info("installed the API certificate", "node", pki.NodeURI(a.cfg.Cluster, a.cfg.ID).String())
	}
	a.noteTLSProblem("")
	return installed, nil
}

func (a *Agent) noteTLSProblem(p string) {
	a.tls.mu.Lock()
	defer a.tls.mu.Unlock()
	a.tls.problem = p
}

// tlsStatus adds why TLS failed, or the store's CA was refused, to
// /status.
func (a *Agent) tlsStatus(st *model.Status) {
	a.tls.mu.Lock()
	defer a.tls.mu.Unlock()
	if a.tls.problem != "" {
		st.Problems = append(st.Problems, "TLS: "+a.tls.problem)
	}
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
