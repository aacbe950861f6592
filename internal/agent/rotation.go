package agent

// A member's part in a secrets rotation (`petrel secrets rotate`; the
// protocol is engine.DecideRotation's doc). The member keeps, per kind,
// the password it uses (cur) and, while a rotation is under way or just
// done, the other one (alt): an operation that logs in (pg_basebackup,
// pg_rewind) and is refused with 28P01 tries once more with alt, since
// the leader's ALTER ROLE and the members' switches are not one instant.

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/petrel-db/petrel/internal/config"
	"github.com/petrel-db/petrel/internal/engine"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/peerauth"
	"github.com/petrel-db/petrel/internal/pg"
	"github.com/petrel-db/petrel/internal/store"
)

// rotationTick is how often the member looks at the rotation records (in
// its store cache: no etcd request unless it acknowledges something),
// besides at once when the main loop hears of a store change (rotKick).
const rotationTick = 250 * time.Millisecond

// secretsState is the passwords this member uses. Guarded by its mutex:
// the main loop, the rotation loop and the API read them.
type secretsState struct {
	mu         sync.Mutex
	configured config.Secrets // as the node was started (secrets file, environment)
	cur, alt   config.Secrets // in use; the other one of a rotation ("" none)
	held       map[string]heldRotation
	// stale names the kinds whose configured password a rotation
	// replaced (the secrets file is out of date), with the rotation.
	stale map[string]string
	// onOperator is told the operator password whenever it changes (the
	// admin API, internal/dashboard).
	onOperator func(string)
}

// heldRotation is what this member holds of one kind's rotation.
type heldRotation struct {
	id, password string
	switched     bool
	oldMAC       string // MAC of the password it held before
}

func get(s config.Secrets, kind string) string {
	switch kind {
	case store.SecretSuperuser:
		return s.Superuser
	case store.SecretReplication:
		return s.Replication
	case store.SecretOperator:
		return s.Operator
	}
	return ""
}

func set(s *config.Secrets, kind, v string) {
	switch kind {
	case store.SecretSuperuser:
		s.Superuser = v
	case store.SecretReplication:
		s.Replication = v
	case store.SecretOperator:
		s.Operator = v
	}
}

// ReplicationPassword is the replication role's password in use now (it
// follows a rotation): what a scheduled base backup logs in with.
func (a *Agent) ReplicationPassword() string { return a.secrets().Replication }

// SuperuserPassword is the superuser's password in use now (it follows
// a rotation): what the admin API checks the superuser's requests with.
func (a *Agent) SuperuserPassword() string { return a.secrets().Superuser }

// secrets is the passwords in use now.
func (a *Agent) secrets() config.Secrets {
	a.sec.mu.Lock()
	defer a.sec.mu.Unlock()
	return a.sec.cur
}

// OnOperatorPassword registers f to be told the operator password each
// time a rotation switches it (call before Run).
func (a *Agent) OnOperatorPassword(f func(string)) {
	a.sec.mu.Lock()
	a.sec.onOperator = f
	a.sec.mu.Unlock()
}

// withPassword runs f with kind's password in use and, when Postgres
// refused it (28P01) and a rotation gives another one, once more with that.
func (a *Agent) withPassword(kind string, f func(password string) error) error {
	a.sec.mu.Lock()
	cur, alt := get(a.sec.cur, kind), get(a.sec.alt, kind)
	a.sec.mu.Unlock()
	err := f(cur)
	if err == nil || alt == "" || alt == cur || !pg.IsAuthFailure(err) {
		return err
	}
	a.log.Info("password refused during a secrets rotation: trying the other one", "kind", kind)
	return f(alt)
}

// clusterSecret is the cluster secret (nil before it is known).
func (a *Agent) clusterSecret() []byte {
	if s := a.clusterSecretV.Load(); s != nil {
		return *s
	}
	return nil
}

// rotationLoop follows the rotation records until ctx ends.
func (a *Agent) rotationLoop(ctx context.Context) {
	t := time.NewTicker(rotationTick)
	defer t.Stop()
	warned := map[string]string{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-a.rotKick:
		}
		a.checkRotations(ctx, warned)
	}
}

// checkRotations runs a rotation step for every kind once the store's
// cache is filled and the cluster secret known. The main loop calls it
// once before its first round too, so that a member started with a stale
// secrets file switches before it writes a passfile or logs in anywhere.
func (a *Agent) checkRotations(ctx context.Context, warned map[string]string) bool {
	if a.clusterSecret() == nil || !a.st.Synced() || !a.st.CaughtUp() {
		return false
	}
	a.rotMu.Lock()
	defer a.rotMu.Unlock()
	for _, kind := range store.SecretKinds {
		err := a.rotationStep(ctx, kind)
		switch {
		case err == nil:
			delete(warned, kind)
		case warned[kind] != err.Error():
			warned[kind] = err.Error()
			a.log.Warn("secrets rotation", "kind", kind, "err", err)
		}
	}
	return true
}

// rotationStep gathers one kind's facts, asks the engine and does what it
// says.
func (a *Agent) rotationStep(ctx context.Context, kind string) error {
	rec, _, ok, err := a.st.Rotation(kind)
	if err != nil || !ok {
		return err
	}
	secret := a.clusterSecret()
	a.sec.mu.Lock()
	h := a.sec.held[kind]
	configured := get(a.sec.configured, kind)
	a.sec.mu.Unlock()
	if h.id != rec.ID {
		h = heldRotation{}
	}
	f := engine.RotationFacts{Present: true, ID: rec.ID, Phase: rec.Phase, Held: h.id != "", Switched: h.switched}
	if ack, ok := a.st.RotationAckOf(kind, a.cfg.ID); ok && ack.ID == rec.ID {
		f.Acked = ack.State
	}
	oldMAC, err := peerauth.PasswordMAC(secret, a.cfg.Cluster, kind, configured)
	if err != nil {
		return err
	}
	f.Stale = slices.Contains(rec.OldMACs, oldMAC)
	plan := engine.DecideRotation(f)
	if plan.Unseal {
		pw, err := peerauth.OpenPassword(secret, a.cfg.Cluster, kind, rec.ID, rec.Sealed)
		if err != nil {
			return fmt.Errorf("rotation %s: %w", rec.ID, err)
		}
		if pw == "" {
			return fmt.Errorf("rotation %s: the sealed password is empty", rec.ID)
		}
		a.sec.mu.Lock()
		cur := get(a.sec.cur, kind)
		h = heldRotation{id: rec.ID, password: pw}
		if h.oldMAC, err = peerauth.PasswordMAC(secret, a.cfg.Cluster, kind, cur); err != nil {
			a.sec.mu.Unlock()
			return err
		}
		if a.sec.held == nil {
			a.sec.held = map[string]heldRotation{}
		}
		a.sec.held[kind] = h
		// Until the switch, the new password is the fallback.
		set(&a.sec.alt, kind, pw)
		a.sec.mu.Unlock()
		a.log.Info("holding the rotated password", "kind", kind, "rotation", rec.ID)
	}
	if plan.Switch {
		if err := a.switchPassword(kind, h); err != nil {
			return err
		}
		if plan.StaleConfig {
			a.sec.mu.Lock()
			if a.sec.stale == nil {
				a.sec.stale = map[string]string{}
			}
			a.sec.stale[kind] = rec.ID
			a.sec.mu.Unlock()
			a.log.Warn("this node's secrets file (or environment) holds a password that `petrel secrets rotate` replaced: using the rotated one from the store; put the new one in the secrets file",
				"kind", kind, "rotation", rec.ID, "rotated_at", rec.UpdatedAt.Format(time.RFC3339))
		}
	}
	if plan.Ack != "" {
		ack := store.RotationAck{ID: rec.ID, State: plan.Ack, OldMAC: h.oldMAC, At: time.Now().UTC()}
		if err := a.st.AckRotation(ctx, kind, a.cfg.ID, ack); err != nil {
			return err
		}
	}
	return nil
}

// switchPassword makes h's password kind's password in use, keeping the
// previous one as the fallback, and rewrites what holds it outside the
// agent: the replication passfile, the admin API's password.
func (a *Agent) switchPassword(kind string, h heldRotation) error {
	a.sec.mu.Lock()
	prev := get(a.sec.cur, kind)
	a.sec.mu.Unlock()
	if kind == store.SecretReplication {
		// The WAL receiver's next connection reads the passfile; the
		// running stream is not touched (authentication happened when it
		// connected).
		if _, err := a.pg.SetReplicationPassword(h.password); err != nil {
			return fmt.Errorf("switching the replication password: %w", err)
		}
	}
	a.sec.mu.Lock()
	set(&a.sec.cur, kind, h.password)
	set(&a.sec.alt, kind, prev)
	h.switched = true
	a.sec.held[kind] = h
	on := a.sec.onOperator
	a.sec.mu.Unlock()
	if kind == store.SecretOperator && on != nil {
		on(h.password)
	}
	a.log.Info("switched to the rotated password", "kind", kind, "rotation", h.id)
	return nil
}

// rotationStatus adds a stale secrets file to /status problems: the node
// works (it uses the rotated password from the store), but the file
// should be updated.
func (a *Agent) rotationStatus(st *model.Status) {
	a.sec.mu.Lock()
	defer a.sec.mu.Unlock()
	for _, kind := range store.SecretKinds {
		if id, ok := a.sec.stale[kind]; ok {
			st.Problems = append(st.Problems, fmt.Sprintf("secrets file: the %s password was rotated (rotation %s); using the rotated one from the store: update the secrets file", kind, id))
		}
	}
}
