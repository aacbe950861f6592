package store

// Secrets rotation (`petrel secrets rotate`, internal/ops):
//
//	/petrel/<c>/secrets/<kind>            SecretRotation: the new password of kind (superuser, replication,
//	                                      operator), sealed under a key derived from the cluster secret; kept
//	                                      after the rotation is done, so a member restarted with a stale
//	                                      secrets file still finds it
//	/petrel/<c>/secret-acks/<kind>/<id>   RotationAck: what member <id> holds of that rotation
//
// The rotation record is written by the operation only, with a
// compare-and-swap on its revision (and, for the superuser, on the CA's:
// the re-sealed CA and the phase change go in one transaction); an ack only
// by its member.

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Key names under /petrel/<c>/.
const (
	KeySecrets    = "secrets"
	KeySecretAcks = "secret-acks"
)

// The passwords a rotation can change.
const (
	SecretSuperuser   = "superuser"
	SecretReplication = "replication"
	SecretOperator    = "operator"
)

// SecretKinds lists them.
var SecretKinds = []string{SecretSuperuser, SecretReplication, SecretOperator}

// Rotation phases.
const (
	// RotationPublish: the new password is published; members unseal it
	// and hold it beside the current one (ack RotationHeld). Nothing in
	// Postgres changed yet.
	RotationPublish = "publish"
	// RotationSwitch: the leader's role has the new password; members
	// switch to it (ack RotationSwitched).
	RotationSwitch = "switch"
	// RotationDone: every live member switched.
	RotationDone = "done"
)

// Acknowledged states.
const (
	RotationHeld     = "held"
	RotationSwitched = "switched"
)

// SecretRotation is /petrel/<c>/secrets/<kind>. The password is never in
// it in clear: Sealed is peerauth.SealPassword's output (AES-256-GCM under
// an HKDF key of the cluster secret, bound to cluster, kind and ID).
type SecretRotation struct {
	ID     string `json:"id"` // random, one per rotation
	Kind   string `json:"kind"`
	Phase  string `json:"phase"`
	Sealed []byte `json:"sealed"`
	// OldMACs are the members' peerauth.PasswordMAC of the password they
	// held before (from their acks): a member that starts later with one
	// of them in its secrets file knows that file is stale.
	OldMACs   []string  `json:"old_macs,omitempty"`
	By        string    `json:"by,omitempty"`
	StartedAt time.Time `json:"started_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// RotationAck is /petrel/<c>/secret-acks/<kind>/<member>.
type RotationAck struct {
	ID    string `json:"id"`
	State string `json:"state"` // RotationHeld or RotationSwitched
	// OldMAC is peerauth.PasswordMAC of the password this member held
	// before the rotation (its secrets file's).
	OldMAC string    `json:"old_mac,omitempty"`
	At     time.Time `json:"at"`
}

// SecretKey is the rotation record's key of kind.
func (k Keys) SecretKey(kind string) string { return k.prefix + KeySecrets + "/" + kind }

// SecretAcks is the prefix of kind's acknowledgements.
func (k Keys) SecretAcks(kind string) string { return k.prefix + KeySecretAcks + "/" + kind + "/" }

// SecretAck is member id's acknowledgement of kind.
func (k Keys) SecretAck(kind, id string) string { return k.SecretAcks(kind) + id }

// CA is the cluster CA's key.
func (k Keys) CA() string { return k.prefix + KeyCA }

// Rotation decodes the cached rotation record of kind (ok false when
// there is none) and its revision.
func (s *Store) Rotation(kind string) (SecretRotation, int64, bool, error) {
	v, rev, ok := s.Raw(KeySecrets, kind)
	if !ok {
		return SecretRotation{}, 0, false, nil
	}
	var r SecretRotation
	if err := json.Unmarshal(v, &r); err != nil {
		return SecretRotation{}, rev, false, fmt.Errorf("decoding %s: %w", s.key(KeySecrets, kind), err)
	}
	return r, rev, true, nil
}

// RotationAckOf decodes the cached acknowledgement of member id.
func (s *Store) RotationAckOf(kind, id string) (RotationAck, bool) {
	v, _, ok := s.Raw(KeySecretAcks, kind, id)
	if !ok {
		return RotationAck{}, false
	}
	var a RotationAck
	if json.Unmarshal(v, &a) != nil {
		return RotationAck{}, false
	}
	return a, true
}

// AckRotation writes this member's acknowledgement of kind.
func (s *Store) AckRotation(ctx context.Context, kind, id string, ack RotationAck) error {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := s.cli.Put(cctx, s.key(KeySecretAcks, kind, id), mustJSON(ack)); err != nil {
		return fmt.Errorf("acknowledging the %s rotation: %w", kind, err)
	}
	return nil
}

// ReadRotation reads kind's rotation record from etcd (for tools), with
// its mod revision (0: none).
func ReadRotation(ctx context.Context, cli *clientv3.Client, cluster, kind string) (SecretRotation, int64, error) {
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	resp, err := cli.Get(cctx, KeysFor(cluster).SecretKey(kind))
	if err != nil {
		return SecretRotation{}, 0, fmt.Errorf("reading the %s rotation: %w", kind, err)
	}
	if len(resp.Kvs) == 0 {
		return SecretRotation{}, 0, nil
	}
	var r SecretRotation
	if err := json.Unmarshal(resp.Kvs[0].Value, &r); err != nil {
		return SecretRotation{}, 0, fmt.Errorf("decoding the %s rotation: %w", kind, err)
	}
	return r, resp.Kvs[0].ModRevision, nil
}

// ReadRotationAcks reads kind's acknowledgements by member.
func ReadRotationAcks(ctx context.Context, cli *clientv3.Client, cluster, kind string) (map[string]RotationAck, error) {
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	p := KeysFor(cluster).SecretAcks(kind)
	resp, err := cli.Get(cctx, p, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("reading the %s rotation's acknowledgements: %w", kind, err)
	}
	out := map[string]RotationAck{}
	for _, kv := range resp.Kvs {
		var a RotationAck
		if json.Unmarshal(kv.Value, &a) == nil {
			out[string(kv.Key[len(p):])] = a
		}
	}
	return out, nil
}

// PutRotation writes kind's rotation record if its mod revision is still
// rev (0: absent); with ca non-nil it also replaces the cluster CA record,
// if that is still at caRev, in the same transaction. It returns the new
// revision; a lost race wraps ErrLostRace.
func PutRotation(ctx context.Context, cli *clientv3.Client, cluster string, r SecretRotation, rev int64, ca []byte, caRev int64) (int64, error) {
	keys := KeysFor(cluster)
	k := keys.SecretKey(r.Kind)
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(k), "=", rev)}
	ops := []clientv3.Op{clientv3.OpPut(k, mustJSON(r))}
	if ca != nil {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(keys.CA()), "=", caRev))
		ops = append(ops, clientv3.OpPut(keys.CA(), string(ca)))
	}
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	resp, err := cli.Txn(cctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return 0, fmt.Errorf("writing the %s rotation: %w", r.Kind, err)
	}
	if !resp.Succeeded {
		return 0, fmt.Errorf("writing the %s rotation: %w", r.Kind, ErrLostRace)
	}
	return resp.Header.Revision, nil
}

// ReadCA reads the stored cluster CA record and its mod revision.
func ReadCA(ctx context.Context, cli *clientv3.Client, cluster string) ([]byte, int64, error) {
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	resp, err := cli.Get(cctx, KeysFor(cluster).CA())
	if err != nil {
		return nil, 0, fmt.Errorf("reading the cluster CA: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, 0, fmt.Errorf("the store holds no cluster CA for %s", cluster)
	}
	return resp.Kvs[0].Value, resp.Kvs[0].ModRevision, nil
}
