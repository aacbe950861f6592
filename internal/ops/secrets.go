package ops

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/peerauth"
	"github.com/petrel-db/petrel/internal/pg"
	"github.com/petrel-db/petrel/internal/pki"
	"github.com/petrel-db/petrel/internal/store"
)

// RotateSecret is a rotation of one of the cluster's own passwords.
type RotateSecret struct {
	// Kind is store.SecretSuperuser, SecretReplication or SecretOperator.
	Kind string
	// New is the new password (GeneratePassword makes one).
	New string
	// Superuser is the current superuser password: it opens the stored
	// CA record, whose cluster secret seals New for the members, and
	// runs the ALTER ROLE on the leader. For Kind superuser it is the one
	// being replaced.
	Superuser string
	// CAPEM is the pinned cluster CA, to reach the leader over TLS.
	CAPEM []byte
	// AckTimeout bounds each wait for the members (default 30 s).
	AckTimeout time.Duration
	// Persist, when set, is called as soon as the leader's role has the
	// new password (`petrel up`'s directory rewrites secrets.env); its
	// failure is reported and fails the operation after the members
	// switched, so the cluster never stops halfway because of it.
	Persist func(kind, password string) error
}

// staleRotation: an unfinished rotation not updated for this long was
// given up (its operation waits at most 30 s a phase), and may be replaced.
const staleRotation = 2 * time.Minute

// maxOldMACs bounds the MACs of rotated-away passwords a record keeps.
const maxOldMACs = 32

// roleOf is the Postgres role whose password kind is.
func roleOf(kind string) (string, error) {
	switch kind {
	case store.SecretSuperuser:
		return "postgres", nil
	case store.SecretReplication:
		return "replicator", nil
	case store.SecretOperator:
		return "operator", nil
	}
	return "", fmt.Errorf("unknown secret %q: one of %s", kind, strings.Join(store.SecretKinds, ", "))
}

// GeneratePassword returns a random password (32 random bytes, base64url).
func GeneratePassword() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generating a password: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// CheckNewPassword refuses a password the secrets files cannot hold as
// one KEY=VALUE line, or one too short to be a cluster password.
func CheckNewPassword(pw string) error {
	if len(pw) < 12 {
		return errors.New("the new password is shorter than 12 characters")
	}
	if strings.TrimSpace(pw) != pw || strings.HasPrefix(pw, `"`) || strings.HasPrefix(pw, "#") {
		return errors.New("the new password starts or ends with a space, or starts with a quote or #: a secrets file line cannot hold it as is")
	}
	for _, r := range pw {
		if unicode.IsControl(r) {
			return errors.New("the new password holds a control character")
		}
	}
	return nil
}

// RotateSecret changes r.Kind's password across the running cluster:
//
//  1. it opens the CA record with the superuser password (the cluster
//     secret), seals the new password under a key derived from it and
//     publishes it (phase publish);
//  2. it waits until every live member holds it (acknowledgement "held");
//  3. it runs ALTER ROLE on the leader (a SCRAM verifier computed here, so
//     the password never reaches Postgres' logs), then moves the record to
//     phase switch, for the superuser in the same transaction as the CA
//     record re-sealed under the new password (compare-and-swap on both);
//  4. it waits until every live member switched, then marks it done.
//
// Nothing fails over: Postgres is neither restarted nor reloaded, running
// connections (the WAL streams) stay up. Re-running after a failure starts
// a new rotation that replaces an unfinished one.
func (c *Cluster) RotateSecret(ctx context.Context, r RotateSecret) error {
	role, err := roleOf(r.Kind)
	if err != nil {
		return err
	}
	if err := CheckNewPassword(r.New); err != nil {
		return err
	}
	if r.Superuser == "" {
		return errors.New("rotating a password needs the current superuser password (SU_PASSWORD): it opens the cluster secret that seals the new one for the members")
	}
	if r.Kind == store.SecretSuperuser && r.New == r.Superuser {
		return errors.New("the new superuser password is the current one")
	}
	timeout := r.AckTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	out := c.out()

	caRaw, caRev, err := store.ReadCA(ctx, c.Etcd, c.Name)
	if err != nil {
		return err
	}
	stored, err := pki.Decode(caRaw)
	if err != nil {
		return err
	}
	if r.CAPEM != nil && !pki.SameCert(r.CAPEM, []byte(stored.CertPEM)) {
		return errors.New("the store's cluster CA is not the pinned one: refusing to rotate")
	}
	ca, err := stored.Unseal(r.Superuser)
	if err != nil {
		return fmt.Errorf("opening the cluster secret with SU_PASSWORD: %w", err)
	}
	var resealed []byte
	if r.Kind == store.SecretSuperuser {
		re, err := stored.Reseal(r.Superuser, r.New)
		if err != nil {
			return err
		}
		resealed = re.Encode()
	}

	prev, rev, err := store.ReadRotation(ctx, c.Etcd, c.Name, r.Kind)
	if err != nil {
		return err
	}
	if rev != 0 && prev.Phase != store.RotationDone {
		// One rotation of a kind at a time: replacing one that is still
		// running would leave the leader with its password and the members
		// holding ours. An unfinished one idle for a while was given up.
		if idle := time.Since(prev.UpdatedAt); idle < staleRotation {
			return fmt.Errorf("a %s rotation (%s, by %s, phase %s) is under way since %s: wait for it, or re-run in %v if it was given up",
				r.Kind, prev.ID, prev.By, prev.Phase, prev.StartedAt.Format(time.RFC3339), (staleRotation - idle).Round(time.Second))
		}
		fmt.Fprintf(out, "replacing the unfinished %s rotation %s (phase %s, started %s)\n", r.Kind, prev.ID, prev.Phase, prev.StartedAt.Format(time.RFC3339))
	}
	idb := make([]byte, 8)
	if _, err := rand.Read(idb); err != nil {
		return fmt.Errorf("generating a rotation id: %w", err)
	}
	id := hex.EncodeToString(idb)
	sealed, err := peerauth.SealPassword(ca.Secret, c.Name, r.Kind, id, r.New)
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	rec := store.SecretRotation{ID: id, Kind: r.Kind, Phase: store.RotationPublish, Sealed: sealed, By: c.Actor, StartedAt: now, UpdatedAt: now}
	// Passwords rotated away before stay stale: a member whose secrets
	// file still holds one of them follows this rotation too.
	if rev != 0 {
		rec.OldMACs = append(rec.OldMACs, prev.OldMACs...)
	}
	if rev, err = store.PutRotation(ctx, c.Etcd, c.Name, rec, rev, nil, 0); err != nil {
		return err
	}
	topo, err := c.Topology(ctx)
	if err != nil {
		return err
	}
	if topo.Leader == "" {
		return errors.New("the cluster has no leader: nothing changed in Postgres; re-run once it has one")
	}
	var members []string
	for id := range topo.Members {
		members = append(members, id)
	}
	sort.Strings(members)
	fmt.Fprintf(out, "rotation %s: the new %s password is published (sealed); waiting for %s to hold it\n", id, r.Kind, strings.Join(members, ", "))
	acks, err := c.waitAcks(ctx, r.Kind, id, members, []string{store.RotationHeld, store.RotationSwitched}, timeout)
	if err != nil {
		return fmt.Errorf("%w: nothing changed in Postgres (members fall back to the new password only if it is used); re-run to try again", err)
	}

	// The leader's role. A connection of our own: the superuser's old
	// password is about to stop working.
	admin := Admin{User: "postgres", Password: r.Superuser, CAPEM: r.CAPEM}
	if r.CAPEM == nil {
		admin.CAPEM = []byte(stored.CertPEM)
	}
	conn, err := c.ConnectLeaderAs(ctx, admin, "postgres")
	if err != nil {
		return fmt.Errorf("connecting to the leader as postgres: %w", err)
	}
	verifier, err := pg.ScramVerifier(r.New)
	if err != nil {
		conn.Close(context.Background())
		return err
	}
	actx, cancel := context.WithTimeout(ctx, 15*time.Second)
	// Never include the statement in an error: it carries the verifier.
	_, err = conn.Exec(actx, fmt.Sprintf("ALTER ROLE %s PASSWORD '%s'", role, verifier))
	cancel()
	conn.Close(context.Background())
	if err != nil {
		return fmt.Errorf("setting the %s role's password on the leader: %s", role, pgErrText(err))
	}
	alteredAt := time.Now()
	fmt.Fprintf(out, "the leader's %s role has the new password\n", role)
	var persistErr error
	if r.Persist != nil {
		if persistErr = r.Persist(r.Kind, r.New); persistErr != nil {
			fmt.Fprintf(out, "warning: %v\n", persistErr)
		}
	}

	for _, m := range members {
		if a := acks[m]; a.OldMAC != "" && !slices.Contains(rec.OldMACs, a.OldMAC) {
			rec.OldMACs = append(rec.OldMACs, a.OldMAC)
		}
	}
	if n := len(rec.OldMACs); n > maxOldMACs {
		rec.OldMACs = rec.OldMACs[n-maxOldMACs:] // the newest kept
	}
	rec.Phase, rec.UpdatedAt = store.RotationSwitch, time.Now().UTC()
	if rev, err = store.PutRotation(ctx, c.Etcd, c.Name, rec, rev, resealed, caRev); err != nil {
		// Only a concurrent write to this record or the CA's (neither
		// happens while this rotation is the running one) loses the race.
		// For the superuser that leaves the CA sealed under the old
		// password while the leader has the new one: the members keep
		// working (they hold both), but the CA must be re-sealed by hand.
		if errors.Is(err, store.ErrLostRace) {
			err = fmt.Errorf("%w (another rotation, or the CA record changed): the leader already has the new password; re-run with it", err)
		}
		return err
	}
	if resealed != nil {
		fmt.Fprintln(out, "the cluster CA and the cluster secret are re-sealed under the new superuser password")
	}
	switched, err := c.waitAcks(ctx, r.Kind, id, members, []string{store.RotationSwitched}, timeout)
	if err != nil {
		return fmt.Errorf("%w: the leader has the new password; the others fall back to it when refused; re-run to finish", err)
	}
	// The window in which a member's new connection could still offer the
	// old password: from the ALTER to its switch (the members' clocks).
	slowest, window := "", time.Duration(0)
	for _, m := range members {
		if d := switched[m].At.Sub(alteredAt); d > window {
			slowest, window = m, d
		}
	}
	if slowest != "" {
		fmt.Fprintf(out, "every member switched within %v of the ALTER ROLE (slowest: %s)\n", window.Round(time.Millisecond), slowest)
	}
	rec.Phase, rec.UpdatedAt = store.RotationDone, time.Now().UTC()
	if _, err := store.PutRotation(ctx, c.Etcd, c.Name, rec, rev, nil, 0); err != nil {
		return err
	}
	c.record(ctx, model.Event{Kind: model.EventSecrets, Reason: fmt.Sprintf("%s password rotated (rotation %s); members switched: %s", r.Kind, id, strings.Join(members, ", "))})
	fmt.Fprintf(out, "every member uses the new %s password\n", r.Kind)
	return persistErr
}

// waitAcks waits until every one of members acknowledged rotation id in
// one of states, and returns their acknowledgements.
func (c *Cluster) waitAcks(ctx context.Context, kind, id string, members, states []string, timeout time.Duration) (map[string]store.RotationAck, error) {
	deadline := time.Now().Add(timeout)
	for {
		acks, err := store.ReadRotationAcks(ctx, c.Etcd, c.Name, kind)
		if err != nil {
			return nil, err
		}
		var missing []string
		for _, m := range members {
			if a, ok := acks[m]; !ok || a.ID != id || !slices.Contains(states, a.State) {
				missing = append(missing, m)
			}
		}
		if len(missing) == 0 {
			return acks, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s did not acknowledge the rotation (%s) within %v", strings.Join(missing, ", "), strings.Join(states, " or "), timeout)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// pgErrText is what an error from Postgres says, without the statement.
func pgErrText(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Severity + ": " + pe.Message + " (SQLSTATE " + pe.Code + ")"
	}
	return err.Error()
}
