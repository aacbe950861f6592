package proxy

import (
	"context"
	"encoding/json"
	"github.com/petrel-db/petrel/internal/store"
	"strings"
	"time"

	"github.com/petrel-db/petrel/internal/model"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// watch follows /petrel/<cluster>/leader and /petrel/<cluster>/members/
// in etcd and feeds SetView, resyncing after any watch failure.
func (p *Proxy) watch(ctx context.Context) {
	prefix := store.KeysFor(p.cfg.Cluster).Prefix()
	for ctx.Err() == nil {
		kvs, rev, err := p.readAll(ctx, prefix)
		if err != nil {
			p.log.Debug("proxy: reading cluster state", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-p.clock.After(250 * time.Millisecond):
			}
			continue
		}
		p.apply(prefix, kvs)
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		wch := p.etcd.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
		for wr := range wch {
			if err := wr.Err(); err != nil {
				p.log.Debug("proxy: watch ended", "err", err)
				break
			}
			changed := false
			for _, ev := range wr.Events {
				k := string(ev.Kv.Key)
				if !relevant(prefix, k) {
					continue
				}
				changed = true
				if ev.Type == clientv3.EventTypeDelete {
					delete(kvs, k)
				} else {
					kvs[k] = ev.Kv
				}
			}
			if changed {
				p.apply(prefix, kvs)
			}
		}
		cancel()
	}
}

func relevant(prefix, k string) bool {
	rest := strings.TrimPrefix(k, prefix)
	return rest == "leader" || strings.HasPrefix(rest, "members/")
}

func (p *Proxy) readAll(ctx context.Context, prefix string) (map[string]*mvccpb.KeyValue, int64, error) {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	resp, err := p.etcd.Get(cctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, 0, err
	}
	kvs := map[string]*mvccpb.KeyValue{}
	for _, kv := range resp.Kvs {
		if relevant(prefix, string(kv.Key)) {
			kvs[string(kv.Key)] = kv
		}
	}
	return kvs, resp.Header.Revision, nil
}

// apply decodes the watched keys and hands them to SetView.
func (p *Proxy) apply(prefix string, kvs map[string]*mvccpb.KeyValue) {
	leader := ""
	members := map[string]model.Member{}
	for k, kv := range kvs {
		rest := strings.TrimPrefix(k, prefix)
		if rest == "leader" {
			leader = string(kv.Value)
			continue
		}
		var m model.Member
		if err := json.Unmarshal(kv.Value, &m); err != nil || m.ID == "" {
			p.log.Warn("proxy: ignoring undecodable member record", "key", k, "err", err)
			continue
		}
		members[m.ID] = m
	}
	p.SetView(leader, members)
}
