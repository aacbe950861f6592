package localworld

import (
	"net/url"
	"path/filepath"
	"strconv"

	"github.com/petrel-db/petrel/internal/config"
)

// addDatabaseURL sets cf.DatabaseURL: the operator role's URL through the
// leader proxy of the first primary-region member (every member's proxy
// reaches the writable leader), the way `fly pg create` hands one out.
// It is left empty when no member runs a proxy or the operator password
// cannot be read from dir's secrets.env.
func addDatabaseURL(cf *ClusterFile, dir string) {
	sec, err := config.LoadSecrets(filepath.Join(dir, SecretsFileName))
	if err != nil || sec.Operator == "" {
		return
	}
	proxy := ""
	for _, n := range cf.Nodes {
		if n.ProxyAddr != "" && n.Region == cf.PrimaryRegion {
			proxy = n.ProxyAddr
			break
		}
		if n.ProxyAddr != "" && proxy == "" {
			proxy = n.ProxyAddr
		}
	}
	if proxy == "" {
		return
	}
	u := url.URL{Scheme: "postgres", User: url.UserPassword("operator", sec.Operator), Host: proxy, Path: "/postgres",
		RawQuery: "connect_timeout=" + strconv.Itoa(5)}
	cf.DatabaseURL = u.String()
}
