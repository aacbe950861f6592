package agent

// The node's API identity and the cluster secret.
//
//   - The API certificate (internal/api.Identity) names this node
//     (petrel://<cluster>/node/<id>) and is kept in DataDir/api, owned by
//     the agent: unlike the Postgres server key in RunDir, code running as
//     the postgres OS user cannot read it when the agent runs as root.
//   - The cluster CA is pinned: ca_fingerprint from the config, else the
//     CA this node already holds (the first one it accepted). A CA in the
//     store with another fingerprint is refused, never installed.
//   - The cluster secret (sealed beside the CA key) is kept in the same
//     directory once unsealed, so a restart needs neither the store nor a
//     key derivation, and the failsafe keys are derived from it.

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/petrel-db/petrel/internal/api"
	"github.com/petrel-db/petrel/internal/peerauth"
	"github.com/petrel-db/petrel/internal/pki"
)

const secretFile = "secret"

// APIDir is where the node keeps its API certificate, the CA it pinned
// and the cluster secret.
func APIDir(dataDir string) string { return filepath.Join(dataDir, "api") }

// Identity is the node's API identity (served by the API, presented to
// peers).
func (a *Agent) Identity() *api.Identity { return a.ident }

// loadIdentity installs what a previous run saved, if anything.
func (a *Agent) loadIdentity() {
	dir := APIDir(a.cfg.DataDir)
	if err := a.ident.Load(dir); err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			a.log.Warn("ignoring the saved API certificate", "err", err)
		}
		return
	}
	b, err := os.ReadFile(filepath.Join(dir, secretFile))
	if err != nil {
		return
	}
	if s, err := hex.DecodeString(string(b)); err == nil && len(s) == pki.SecretLen {
		a.setSecret(s)
	}
}

// caPin is the fingerprint this node trusts: the configured one, else
// the one of the CA it holds ("" when it holds none: the first one is
// accepted and saved).
func (a *Agent) caPin() string {
	if a.cfg.CAFingerprint != "" {
		return a.cfg.CAFingerprint
	}
	if ca := a.ident.CAPEM(); ca != nil {
		if fp, err := pki.Fingerprint(ca); err == nil {
			return fp
		}
	}
	if b, err := os.ReadFile(filepath.Join(APIDir(a.cfg.DataDir), api.CAFile)); err == nil {
		if fp, err := pki.Fingerprint(b); err == nil {
			return fp
		}
	}
	return ""
}

// checkCA refuses a store CA that is not the pinned one.
func (a *Agent) checkCA(caPEM []byte) error {
	pin := a.caPin()
	if pin == "" {
		fp, err := pki.Fingerprint(caPEM)
		if err != nil {
			return err
		}
		a.log.Info("pinning the cluster CA (set ca_fingerprint to pin it on other members and in the CLI)", "ca_fingerprint", fp)
		return nil
	}
	if err := pki.CheckPinned(caPEM, pin); err != nil {
		return fmt.Errorf("refusing the cluster CA in the store: %w", err)
	}
	return nil
}

// saveIdentity writes the API certificate, the CA and the secret (0600,
// in a 0700 directory) and installs them.
func (a *Agent) saveIdentity(certPEM, keyPEM, caPEM, secret []byte) error {
	dir := APIDir(a.cfg.DataDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	for name, data := range map[string][]byte{api.CAFile: caPEM, api.KeyFile: keyPEM, api.CertFile: certPEM, secretFile: []byte(hex.EncodeToString(secret))} {
		tmp := filepath.Join(dir, name+".tmp")
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			return fmt.Errorf("writing %s: %w", tmp, err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			return fmt.Errorf("installing %s: %w", name, err)
		}
	}
	if err := a.ident.Set(certPEM, keyPEM, caPEM); err != nil {
		return err
	}
	a.setSecret(secret)
	return nil
}

// setSecret derives the peer keys from the cluster secret.
func (a *Agent) setSecret(secret []byte) {
	c := append([]byte(nil), secret...)
	a.clusterSecretV.Store(&c)
	k, err := peerauth.Key(secret, a.cfg.Cluster, peerauth.PurposeFailsafe)
	if err != nil {
		a.log.Warn("no failsafe key", "err", err)
		return
	}
	a.failsafeKeyV.Store(&k)
}

// failsafeKey is the failsafe message key (nil before the secret is
// known: this node can then neither ask nor promise).
func (a *Agent) failsafeKey() []byte {
	if k := a.failsafeKeyV.Load(); k != nil {
		return *k
	}
	return nil
}

var _ api.FailsafeSource = (*Agent)(nil)
