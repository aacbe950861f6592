package nodecmd

import (
	"os"
	"strings"
	"testing"

	"github.com/petrel-db/petrel/internal/config"
	"github.com/spf13/pflag"
)

// Every flag of the node command can be given as PETREL_<FLAG>: applyEnv
// parses it through a scratch flag set (bindNodeFlags), which must know it.
func TestEveryFlagFromEnv(t *testing.T) {
	cmd := Command()
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if f.Name == "config" || f.Name == "log-level" {
			return
		}
		env := "PETREL_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		v := f.DefValue
		switch f.Value.Type() {
		case "stringSlice":
			v = "10.0.0.0/8"
		case "bool":
			v = "true"
		case "string":
			if v == "" {
				v = "x"
			}
		}
		t.Setenv(env, v)
		merged := config.Defaults()
		if err := applyEnv(cmd.Flags(), &merged); err != nil {
			t.Errorf("%s=%s: %v", env, v, err)
		}
		os.Unsetenv(env) // one at a time; t.Setenv restores it at the end
	})
}

// PETREL_LOOPBACK_PLAINTEXT and the network lists reach the config.
func TestNetworkSettingsFromEnv(t *testing.T) {
	t.Setenv("PETREL_LOOPBACK_PLAINTEXT", "true")
	t.Setenv("PETREL_ADMIN_NETWORKS", "10.1.0.0/16,10.2.0.0/16")
	merged := config.Defaults()
	if err := applyEnv(Command().Flags(), &merged); err != nil {
		t.Fatal(err)
	}
	if !merged.LoopbackPlaintext {
		t.Error("PETREL_LOOPBACK_PLAINTEXT=true not applied")
	}
	if strings.Join(merged.AdminNetworks, ",") != "10.1.0.0/16,10.2.0.0/16" {
		t.Errorf("admin networks = %v", merged.AdminNetworks)
	}
}
