#!/usr/bin/env python3
"""A minimal non-Go multi-region app for petrel's edge tests.

Python 3 standard library only; it talks to PostgreSQL through the psql
command-line client. It runs in every region against that region's
database and relies on the edge for writes: a write that fails read-only
(SQLSTATE 25006) outside the primary region is answered with
409 + "fly-replay: region=<PRIMARY_REGION>", and the edge replays the
whole request there.

Environment:
  PORT            listen on 127.0.0.1:$PORT
  FLY_REGION      the region this instance runs in
  PRIMARY_REGION  the cluster's primary region
  DATABASE_URL    postgres:// URL: the leader in the primary region, the
                  region's replica elsewhere. It is handed to psql as
                  PG* environment variables (never on the command line,
                  where other users could read it) and never logged.

Routes:
  GET  /healthz   200 "ok" (no database)
  GET  /items     200, JSON list of the item bodies in id order
                  (503 while a replica has not received the table yet)
  POST /items     the request body (UTF-8 text) is inserted: 201 {"id": n};
                  replayed to the primary region when the write is refused
                  read-only (or the table is not there yet) outside it
"""

import http.server
import json
import os
import subprocess
import sys
import threading
import time
import urllib.parse

PORT = int(os.environ["PORT"])
REGION = os.environ.get("FLY_REGION", "").strip()
PRIMARY = os.environ.get("PRIMARY_REGION", "").strip()
IN_PRIMARY = not REGION or not PRIMARY or REGION == PRIMARY
MAX_BODY = 1 << 20

# libpq's URL query parameters and the environment variables psql reads
# them from.
PARAM_ENV = {
    "host": "PGHOST", "hostaddr": "PGHOSTADDR", "port": "PGPORT", "dbname": "PGDATABASE",
    "user": "PGUSER", "password": "PGPASSWORD", "passfile": "PGPASSFILE",
    "channel_binding": "PGCHANNELBINDING", "service": "PGSERVICE", "options": "PGOPTIONS",
    "application_name": "PGAPPNAME", "sslmode": "PGSSLMODE", "requiressl": "PGREQUIRESSL",
    "sslcompression": "PGSSLCOMPRESSION", "sslcert": "PGSSLCERT", "sslkey": "PGSSLKEY",
    "sslrootcert": "PGSSLROOTCERT", "sslcrl": "PGSSLCRL", "sslcrldir": "PGSSLCRLDIR",
    "sslsni": "PGSSLSNI", "requirepeer": "PGREQUIREPEER",
    "ssl_min_protocol_version": "PGSSLMINPROTOCOLVERSION",
    "ssl_max_protocol_version": "PGSSLMAXPROTOCOLVERSION", "gssencmode": "PGGSSENCMODE",
    "krbsrvname": "PGKRBSRVNAME", "gsslib": "PGGSSLIB", "connect_timeout": "PGCONNECT_TIMEOUT",
    "client_encoding": "PGCLIENTENCODING", "target_session_attrs": "PGTARGETSESSIONATTRS",
    "load_balance_hosts": "PGLOADBALANCEHOSTS",
}


def url_env(url):
    """Turns a postgres:// URL (one or more hosts) into PG* variables."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("postgres", "postgresql"):
        raise ValueError("DATABASE_URL: want a postgres:// URL")
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, at, hostlist = netloc.rpartition("@")
    if not at:
        hostlist = netloc
    env = {}
    if userinfo:
        user, colon, password = userinfo.partition(":")
        env["PGUSER"] = urllib.parse.unquote(user)
        if colon:
            env["PGPASSWORD"] = urllib.parse.unquote(password)
    hosts, ports = [], []
    for hp in hostlist.split(","):
        if hp.startswith("["):  # [IPv6]:port
            host, _, port = hp[1:].partition("]")
            port = port.lstrip(":")
        else:
            host, _, port = hp.partition(":")
        hosts.append(urllib.parse.unquote(host))
        ports.append(port)
    if any(hosts):
        env["PGHOST"] = ",".join(hosts)
    if any(ports):
        env["PGPORT"] = ",".join(ports)
    if path:
        env["PGDATABASE"] = urllib.parse.unquote(path)
    for k, v in urllib.parse.parse_qsl(query, keep_blank_values=True):
        if k not in PARAM_ENV:
            raise ValueError("DATABASE_URL: unsupported parameter %r" % k)
        env[PARAM_ENV[k]] = v
    env.setdefault("PGCONNECT_TIMEOUT", "5")
    return env


def psql_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k != "DATABASE_URL"}
    env.update(url_env(os.environ["DATABASE_URL"]))
    return env


PSQL_ENV = psql_env()


class DBError(Exception):
    def __init__(self, stderr):
        super().__init__(stderr.strip().splitlines()[0] if stderr.strip() else "psql failed")
        self.stderr = stderr

    @property
    def read_only(self):
        # VERBOSITY=verbose puts the SQLSTATE in front of the message.
        return "25006" in self.stderr or "read-only transaction" in self.stderr

    @property
    def undefined_table(self):
        return "42P01" in self.stderr


def psql(sql, **variables):
    """Runs one statement; returns psql's unaligned, tuples-only output."""
    args = ["psql", "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-v", "VERBOSITY=verbose"]
    for k, v in variables.items():
        args += ["-v", "%s=%s" % (k, v)]
    # psql interpolates :'var' only in scripts, not in -c: send it on stdin.
    p = subprocess.run(args, input=sql, capture_output=True, text=True, env=PSQL_ENV, timeout=30)
    if p.returncode != 0:
        raise DBError(p.stderr)
    return p.stdout.strip()


table_lock = threading.Lock()
table_ready = False


def ensure_table():
    """Creates the table in the primary region (once it works)."""
    global table_ready
    if not IN_PRIMARY:
        return
    with table_lock:
        if not table_ready:
            psql("CREATE TABLE IF NOT EXISTS pyitems (id serial PRIMARY KEY, body text)")
            table_ready = True


def log(msg):
    print("pyapp[%s]: %s" % (REGION or "-", msg), file=sys.stderr, flush=True)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "pyapp"

    def log_message(self, fmt, *args):
        log("%s %s" % (self.address_string(), fmt % args))

    def send(self, code, body, ctype="text/plain; charset=utf-8", headers=()):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Petrel-Region", REGION)
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def send_json(self, code, obj):
        self.send(code, json.dumps(obj) + "\n", "application/json")

    def do_GET(self):
        if self.path == "/healthz":
            return self.send(200, "ok\n")
        if self.path != "/items":
            return self.send(404, "not found\n")
        try:
            ensure_table()
            out = psql("SELECT coalesce(json_agg(body ORDER BY id), '[]') FROM pyitems")
        except DBError as e:
            if e.undefined_table:
                return self.send_json(503, {"error": "waiting for the primary region to create the table"})
            log("GET /items: %s" % e)
            return self.send_json(500, {"error": "database error"})
        self.send(200, out + "\n", "application/json")

    def do_POST(self):
        if self.path != "/items":
            return self.send(404, "not found\n")
        n = int(self.headers.get("Content-Length") or 0)
        if self.headers.get("Transfer-Encoding") or n > MAX_BODY:
            return self.send(413, "send at most 1 MiB with a Content-Length\n")
        try:
            body = self.rfile.read(n).decode("utf-8")
        except UnicodeDecodeError:
            return self.send(400, "the body is not UTF-8 text\n")
        if "\0" in body:
            return self.send(400, "the body contains a NUL byte\n")
        try:
            ensure_table()
            # One statement: it commits or fails whole, so a replayed
            # request writes exactly once.
            new_id = psql("INSERT INTO pyitems (body) VALUES (:'body') RETURNING id", body=body)
        except DBError as e:
            # A replica without the table cannot take the write either.
            if (e.read_only or e.undefined_table) and not IN_PRIMARY:
                if self.headers.get("fly-replay-failed"):
                    # The edge could not reach the primary region; asking
                    # again would not help.
                    return self.send(503, "the primary region is unreachable\n", headers=[("Retry-After", "1")])
                return self.send(409, "replay in region %s\n" % PRIMARY, headers=[("fly-replay", "region=" + PRIMARY)])
            log("POST /items: %s" % e)
            return self.send_json(500, {"error": "database error"})
        self.send_json(201, {"id": int(new_id)})


def create_table_in_background():
    """The primary region's database may come up after the app."""
    for _ in range(120):
        try:
            ensure_table()
            return
        except (DBError, subprocess.TimeoutExpired) as e:
            log("creating the table: %s (retrying)" % e)
            time.sleep(0.5)


def main():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    server.daemon_threads = True
    if IN_PRIMARY:
        threading.Thread(target=create_table_in_background, daemon=True).start()
    log("listening on 127.0.0.1:%d (primary region %s)" % (PORT, PRIMARY or "-"))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
