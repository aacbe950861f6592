package localworld

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/petrel-db/petrel/internal/model"
)

// File names inside a world's directory.
const (
	SecretsFileName = "secrets.env"
	// CAFileName holds the cluster CA's certificate: the members' API
	// (and the dashboard) present certificates it signed.
	CAFileName      = "ca.crt"
	ClusterFileName = "cluster.json"
	WorldFileName   = "world.json"
	PIDFileName     = "up.pid"
)

// ClusterFile is Dir/cluster.json: how to reach a local cluster started by
// `petrel up`. It holds the superuser password (in SuperuserDSN), so it is
// written 0600.
type ClusterFile struct {
	Cluster       string   `json:"cluster"`
	Etcd          []string `json:"etcd"`
	PrimaryRegion string   `json:"primary_region"`
	SuperuserDSN  string   `json:"superuser_dsn"`
	// CAFingerprint is the cluster CA's SHA-256 (pki.Fingerprint): the CLI
	// checks the CA it reads from etcd against it.
	CAFingerprint string `json:"ca_fingerprint"`
	// DatabaseURL is the operator role's URL through the leader proxy
	// (see addDatabaseURL); it holds the operator password.
	DatabaseURL string `json:"database_url,omitempty"`
	// DashboardURL is a member's web dashboard (any member's shows the
	// whole cluster); its buttons ask for OPERATOR_PASSWORD (secrets.env).
	DashboardURL string         `json:"dashboard_url,omitempty"`
	Nodes        []model.Member `json:"nodes"`
	// Edges are the regions' edge routers (petrel edge), each with the
	// app instance behind it: open an edge's URL to use the app there.
	Edges []EdgeInfo `json:"edges,omitempty"`
}

// LoadClusterFile reads dir/cluster.json. A missing file yields an error
// satisfying errors.Is(err, fs.ErrNotExist).
func LoadClusterFile(dir string) (*ClusterFile, error) {
	p := filepath.Join(dir, ClusterFileName)
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	var cf ClusterFile
	if err := json.Unmarshal(b, &cf); err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return &cf, nil
}

// RedactDSN replaces the password of a postgres:// URL with "***".
func RedactDSN(dsn string) string {
	scheme, rest, ok := strings.Cut(dsn, "://")
	if !ok {
		return dsn
	}
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return dsn
	}
	user, _, hasPw := strings.Cut(rest[:at], ":")
	if !hasPw {
		return dsn
	}
	return scheme + "://" + user + ":***" + rest[at:]
}

// worldNode is one node's fixed layout, kept in world.json.
type worldNode struct {
	ID        string `json:"id"`
	Region    string `json:"region"`
	PGPort    int    `json:"pg_port"`
	APIPort   int    `json:"api_port"`
	ProxyPort int    `json:"proxy_port"`
}

// world is Dir/world.json: the layout chosen on the first run, reused on
// every later run on the same directory.
type world struct {
	Cluster        string      `json:"cluster"`
	PrimaryRegion  string      `json:"primary_region"`
	BasePort       int         `json:"base_port"`
	EtcdClientPort int         `json:"etcd_client_port"`
	EtcdPeerPort   int         `json:"etcd_peer_port"`
	Nodes          []worldNode `json:"nodes"`
	// Latency is the latency spec over the default matrix (ParseLatency).
	Latency string `json:"latency,omitempty"`
	// NoLinks: members dial each other directly, with no netsim links.
	NoLinks bool `json:"no_links,omitempty"`
	// NoEdges: no edge routers and no apps (petrel up --no-edges).
	NoEdges bool `json:"no_edges,omitempty"`
	// NextNum is the highest node number used per region, so that a
	// removed node's id is not reused.
	NextNum map[string]int `json:"next_num,omitempty"`
	// Seed is the member whose data a restore wrote (petrel restore
	// --into): `up` claims the cluster's initialization for it before
	// starting anyone, so it bootstraps from that data and the others
	// clone it. RestoredFrom says what was restored.
	Seed         string `json:"seed,omitempty"`
	RestoredFrom string `json:"restored_from,omitempty"`
}

func loadWorld(dir string) (*world, error) {
	p := filepath.Join(dir, WorldFileName)
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	var w world
	if err := json.Unmarshal(b, &w); err != nil {
		return nil, fmt.Errorf("%s: %w (remove the directory to start afresh)", p, err)
	}
	if len(w.Nodes) == 0 || w.Cluster == "" || w.EtcdClientPort == 0 {
		return nil, fmt.Errorf("%s is incomplete (remove the directory to start afresh)", p)
	}
	return &w, nil
}

// writeFileAtomic writes data to path via a temporary file and a rename.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func writeJSON(path string, v any, perm os.FileMode) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(path, append(b, '\n'), perm)
}

func randomPassword() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// ensureSecrets creates dir/secrets.env (0600) with fresh random passwords
// unless it exists, and returns the superuser password.
func ensureSecrets(dir string) (path, suPassword string, err error) {
	path = filepath.Join(dir, SecretsFileName)
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		var lines []string
		for _, k := range []string{"SU_PASSWORD", "REPL_PASSWORD", "OPERATOR_PASSWORD"} {
			pw, err := randomPassword()
			if err != nil {
				return "", "", fmt.Errorf("generating passwords: %w", err)
			}
			lines = append(lines, k+"="+pw)
		}
		data := "# Generated by `petrel up`; keep private.\n" + strings.Join(lines, "\n") + "\n"
		if err := writeFileAtomic(path, []byte(data), 0o600); err != nil {
			return "", "", fmt.Errorf("writing %s: %w", path, err)
		}
	} else if err != nil {
		return "", "", err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), "=")
		if ok && strings.TrimSpace(k) == "SU_PASSWORD" {
			v = strings.TrimSpace(v)
			if uq, err := strconv.Unquote(v); err == nil {
				v = uq
			}
			suPassword = v
		}
	}
	if suPassword == "" {
		return "", "", fmt.Errorf("%s has no SU_PASSWORD", path)
	}
	return path, suPassword, nil
}
