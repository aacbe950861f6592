package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/store"
	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func newFailoverCmd() *cobra.Command {
	var cf clusterFlags
	var to string
	var timeout time.Duration
	var allowSecondary bool
	cmd := &cobra.Command{
		Use:   "failover",
		Short: "Planned switchover: stop writes on the leader, let the target catch up, promote it",
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			cli, t, err := cf.etcdClient(ctx)
			if err != nil {
				return err
			}
			defer cli.Close()
			clusterName := t.cluster
			leader, err := currentLeader(ctx, cli, clusterName)
			if err != nil {
				return err
			}
			if leader == "" {
				return errors.New("the cluster has no leader right now; check `petrel status`")
			}
			if to == leader {
				return fmt.Errorf("%s is already the leader", to)
			}
			if to != "" {
				if err := checkTarget(ctx, cli, clusterName, to, allowSecondary); err != nil {
					return err
				}
			}
			start := time.Now()
			if err := store.RequestSwitchover(ctx, cli, clusterName, model.Switchover{From: leader, To: to, RequestedAt: time.Now().UTC(), AllowSecondaryRegion: allowSecondary}); err != nil {
				return err
			}
			fmt.Fprintf(os.Stdout, "switchover requested: leader %s", leader)
			if to != "" {
				fmt.Fprintf(os.Stdout, " -> %s", to)
			}
			fmt.Fprintln(os.Stdout)
			for {
				l, err := currentLeader(ctx, cli, clusterName)
				if err == nil && l != "" && l != leader {
					fmt.Fprintf(os.Stdout, "new leader: %s (after %.2fs)\n", l, time.Since(start).Seconds())
					return nil
				}
				sw, _ := cli.Get(ctx, store.KeysFor(clusterName).Switchover())
				if err == nil && l == leader && sw != nil && len(sw.Kvs) == 0 && time.Since(start) > time.Second {
					return fmt.Errorf("the leader refused the switchover (no eligible streaming standby in the primary region%s); see its log", strings.TrimSpace(" "+to))
				}
				select {
				case <-ctx.Done():
					return fmt.Errorf("no new leader after %v: %w", timeout, ctx.Err())
				case <-time.After(100 * time.Millisecond):
				}
			}
		},
	}
	f := cmd.Flags()
	cf.bind(f)
	f.StringVar(&to, "to", "", "member to hand leadership to (default: the most caught-up synchronous standby)")
	f.DurationVar(&timeout, "timeout", 30*time.Second, "how long to wait for the new leader")
	f.BoolVar(&allowSecondary, "allow-secondary-region", false, "allow --to outside the primary region; the primary region moves to the target's region")
	return cmd
}

// checkTarget refuses a target outside the primary region unless allowed.
func checkTarget(ctx context.Context, cli *clientv3.Client, cluster, to string, allow bool) error {
	keys := store.KeysFor(cluster)
	mr, err := cli.Get(ctx, keys.Member(to))
	if err != nil {
		return fmt.Errorf("reading member %s: %w", to, err)
	}
	if len(mr.Kvs) == 0 {
		return fmt.Errorf("no live member %s; see `petrel status`", to)
	}
	var m model.Member
	if err := json.Unmarshal(mr.Kvs[0].Value, &m); err != nil {
		return fmt.Errorf("decoding member %s: %w", to, err)
	}
	ir, err := cli.Get(ctx, keys.Info())
	if err != nil || len(ir.Kvs) == 0 {
		return fmt.Errorf("reading cluster info: %v", err)
	}
	var info model.ClusterInfo
	if err := json.Unmarshal(ir.Kvs[0].Value, &info); err != nil {
		return fmt.Errorf("decoding cluster info: %w", err)
	}
	if m.Region != info.PrimaryRegion {
		if !allow {
			return fmt.Errorf("%s is in region %s, outside the primary region %s: only primary-region members may lead. Pass --allow-secondary-region to move the primary region to %s", to, m.Region, info.PrimaryRegion, m.Region)
		}
		fmt.Fprintf(os.Stdout, "moving the primary region from %s to %s\n", info.PrimaryRegion, m.Region)
	}
	return nil
}

func currentLeader(ctx context.Context, cli *clientv3.Client, cluster string) (string, error) {
	resp, err := cli.Get(ctx, store.KeysFor(cluster).Leader())
	if err != nil {
		return "", fmt.Errorf("reading the leader from etcd: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return "", nil
	}
	return string(resp.Kvs[0].Value), nil
}
