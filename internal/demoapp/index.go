package demoapp

import (
	"context"
	"fmt"
	"html/template"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/petrel-db/petrel/pkg/flyreplay"
)

// member is the database member a page read from.
type member struct {
	Addr       string
	Role       string   // "leader" or "replica"
	Lag        *float64 // seconds since the last replayed transaction (replica)
	ReplayLSN  string   // replica
	CurrentLSN string   // leader
}

// One round trip on the connection the notes are read from: a region's
// URL may balance over several replicas.
const memberSQL = `SELECT coalesce(host(inet_server_addr()) || ':' || inet_server_port(), 'unix socket'),
 pg_is_in_recovery(),
 CASE WHEN pg_is_in_recovery() THEN extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 END,
 coalesce(pg_last_wal_replay_lsn()::text, ''),
 CASE WHEN pg_is_in_recovery() THEN '' ELSE pg_current_wal_lsn()::text END`

type pageData struct {
	Region, PrimaryRegion, Instance string
	Regions                         []string
	Eager                           bool
	Now                             time.Time
	Member                          *member
	DBError                         string
	Waiting                         bool // replica without the table yet
	Notes                           []note
	Source                          *flyreplay.Source // the request was replayed here
	SourceRaw                       string
	SourceAge                       time.Duration
	ReplayFailed                    string // a region tab's replay came back
	LastWrite                       *lastWrite
}

func (a *app) index(w http.ResponseWriter, r *http.Request) {
	d := pageData{Region: a.cfg.Region, PrimaryRegion: a.cfg.PrimaryRegion, Instance: a.cfg.Instance,
		Regions: a.cfg.Regions, Eager: a.cfg.EagerReplay, Now: time.Now(), LastWrite: readLastWrite(r)}
	if want := r.URL.Query().Get("region"); want != "" && !strings.EqualFold(want, a.cfg.Region) {
		if !regionName.MatchString(want) || (len(a.cfg.Regions) > 0 && !slices.Contains(a.cfg.Regions, want)) {
			http.Error(w, fmt.Sprintf("unknown region %q", want), http.StatusBadRequest)
			return
		}
		_, replayed := flyreplay.ReplaySource(r)
		f, failed := flyreplay.ReplayFailed(r)
		switch {
		case failed:
			d.ReplayFailed = fmt.Sprintf("the replay to %s came back (%s): showing %s instead", want, f.Reason, a.cfg.Region)
		case replayed:
			// Replayed to want but served here: do not ask again (a loop).
			d.ReplayFailed = fmt.Sprintf("replayed to %s but the edge delivered it to %s", want, a.cfg.Region)
		default:
			flyreplay.WriteReplay(w, want, "")
			return
		}
	}
	if src, ok := flyreplay.ReplaySource(r); ok {
		d.Source, d.SourceRaw = &src, r.Header.Get(flyreplay.HeaderReplaySrc)
		if !src.Time.IsZero() {
			d.SourceAge = d.Now.Sub(src.Time).Round(time.Microsecond)
		}
	}

	code := http.StatusOK
	if err := a.readPage(r.Context(), &d); err != nil {
		d.DBError = err.Error()
		code = http.StatusServiceUnavailable
	}
	var b strings.Builder
	if err := page.Execute(&b, d); err != nil {
		panic(err)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	w.Write([]byte(b.String()))
}

// readPage fills in the member and the latest notes, from one connection.
func (a *app) readPage(ctx context.Context, d *pageData) error {
	ctx, cancel := context.WithTimeout(ctx, dbTimeout)
	defer cancel()
	if err := a.ensureTable(ctx); err != nil {
		a.log.Warn("creating the notes table failed", "err", err)
	}
	conn, err := a.db.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	var m member
	var inRecovery bool
	if err := conn.QueryRow(ctx, memberSQL).Scan(&m.Addr, &inRecovery, &m.Lag, &m.ReplayLSN, &m.CurrentLSN); err != nil {
		return err
	}
	m.Role = "leader"
	if inRecovery {
		m.Role = "replica"
	}
	d.Member = &m
	notes, err := listNotes(ctx, conn, 20)
	if isUndefinedTable(err) {
		d.Waiting = true
		return nil
	}
	d.Notes = notes
	return err
}

var page = template.Must(template.New("page").Funcs(template.FuncMap{
	"ago": func(now, t time.Time) string { return now.Sub(t).Round(time.Millisecond).String() },
	"secs": func(f *float64) string {
		if f == nil {
			return "no transaction replayed yet"
		}
		return fmt.Sprintf("%.3f s since the last replayed transaction", *f)
	},
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>petrel demo · {{.Region}}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:15px/1.45 system-ui,sans-serif;max-width:52rem;margin:1.5rem auto;padding:0 1rem;color:#222}
nav a{display:inline-block;padding:.3rem .8rem;border:1px solid #ccc;border-bottom:none;border-radius:.4rem .4rem 0 0;text-decoration:none;color:#225}
nav a.on{background:#225;color:#fff}
nav{border-bottom:1px solid #ccc;margin-bottom:1rem}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem}dt{color:#666}dd{margin:0}
.warn{background:#fff3cd;padding:.5rem .8rem;border-radius:.3rem}.err{background:#f8d7da;padding:.5rem .8rem;border-radius:.3rem}
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:.25rem .5rem;border-bottom:1px solid #eee}
code{font-size:90%}form.inline{display:inline}
</style></head><body>
<h1>petrel demo · notes</h1>
{{if .Regions}}<nav><a href="/">nearest</a>{{range .Regions}} <a href="/?region={{.}}"{{if eq . $.Region}} class="on"{{end}}>{{.}}</a>{{end}}</nav>{{end}}
{{with .ReplayFailed}}<p class="warn">{{.}}</p>{{end}}
<dl>
<dt>served by</dt><dd>region <b>{{.Region}}</b>, instance <code>{{.Instance}}</code>{{if eq .Region .PrimaryRegion}} (primary region){{end}}</dd>
<dt>primary region</dt><dd>{{.PrimaryRegion}}{{if .Eager}} · write methods replayed there before they run{{else}} · writes replayed there when the replica refuses them{{end}}</dd>
{{with .Member}}<dt>read from</dt><dd><code>{{.Addr}}</code>, the <b>{{.Role}}</b></dd>
{{if eq .Role "replica"}}<dt>replica lag</dt><dd>{{secs .Lag}}{{with .ReplayLSN}}, replayed up to <code>{{.}}</code>{{end}}</dd>
{{else}}<dt>WAL position</dt><dd><code>{{.CurrentLSN}}</code></dd>{{end}}{{end}}
{{with .Source}}<dt>replayed from</dt><dd>region {{.Region}}, instance <code>{{.Instance}}</code>{{with .State}}, state <code>{{.}}</code>{{end}}{{if $.SourceAge}}, {{$.SourceAge}} ago{{end}}<br><code>fly-replay-src: {{$.SourceRaw}}</code></dd>{{end}}
<dt>your last write</dt><dd>{{with .LastWrite}}{{.What}} in region <b>{{.Region}}</b> by <code>{{.Instance}}</code>{{if not .At.IsZero}}, {{ago $.Now .At}} ago{{end}}{{else}}none yet{{end}}</dd>
</dl>
{{with .DBError}}<p class="err">database: {{.}}</p>{{end}}
{{if .Waiting}}<p class="warn">waiting for the primary region to create the table (reload to retry)</p>{{end}}
<h2>add a note</h2>
<form method="post" action="/notes"><input name="body" maxlength="2000" size="50" required autofocus> <button>add</button></form>
<h2>latest notes</h2>
{{if .Notes}}<table><tr><th>#</th><th>note</th><th>written in</th><th>by</th><th>when</th><th></th></tr>
{{range .Notes}}<tr><td>{{.ID}}</td><td>{{.Body}}</td><td>{{.Region}}</td><td><code>{{.Instance}}</code></td><td>{{ago $.Now .Created}} ago</td>
<td><form class="inline" method="post" action="/notes/{{.ID}}/delete"><button>delete</button></form></td></tr>
{{end}}</table>{{else if not .Waiting}}<p>no notes yet</p>{{end}}
</body></html>
`))
