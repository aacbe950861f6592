// petrel dashboard: one EventSource on /api/v1/stream ("view" and "event"
// messages); the browser resumes it with Last-Event-ID after a reconnect.
// Everything from the cluster is put in the page as text, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const HISTORY_MS = 5 * 60 * 1000;
const COLORS = ["#1f6feb", "#cf222e", "#1a7f37", "#bf8700", "#8250df", "#0a7d8c", "#d2691e", "#57606a"];
const lag = {};            // member -> [{t, bytes, seconds}]
const events = [];         // newest last
let view = null;
let token = null;          // admin API token (memory only)
let tokenExpires = 0;

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(k == null ? "" : String(k)));
  return e;
}

function fmtBytes(n) {
  if (!n) return "0 B";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"]; let i = 0;
  while (Math.abs(n) >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : Math.round(n)) + " " + u[i];
}

// archiveCell: a member's WAL archiving (/status "archive"): last segment
// and its age, the spool, the recoverability window, the last base backup
// (or the one running); the last failure in the tooltip.
function archiveCell(a, now) {
  if (!a || !a.role || a.role === "off") return el("td", {}, "–");
  const last = a.last_archived_at ? Date.parse(a.last_archived_at) : 0;
  let text = a.role + ": " + (a.last_archived ? a.last_archived + " (" + Math.max(0, Math.round((now - last) / 1000)) + " s ago)" : "none yet") + ", spooled " + (a.spooled || 0);
  if (a.restore_from && last) text += ", restorable " + a.restore_from + " .. " + a.last_archived_at;
  if (a.backup_running_since) text += ", base backup running since " + a.backup_running_since;
  else if (a.last_backup) text += ", last base backup " + a.last_backup;
  const failed = a.last_failure && (!last || Date.parse(a.last_failure_at) > last);
  return el("td", { class: failed ? "health-bad" : "", "data-testid": "archive", title: a.last_failure ? a.last_failure_at + ": " + a.last_failure : "" }, text);
}

function render(v) {
  view = v;
  $("cluster").textContent = v.cluster;
  $("leader").textContent = v.leader || "none";
  $("primary-region").textContent = v.primary_region || "–";
  $("store").textContent = v.store_ok ? "ok" : "unreachable";
  $("served-by").textContent = v.served_by;
  const regions = $("regions");
  regions.replaceChildren();
  for (const r of v.regions || []) {
    const members = v.members.filter((m) => m.region === r);
    const body = el("tbody");
    for (const m of members) {
      const problems = m.problems || [];
      const healthy = problems.length === 0 && m.role !== "offline";
      const row = el("tr", { "data-member": m.id, "data-role": m.role },
        el("td", {}, el("b", {}, m.id), m.id === v.leader ? " ★" : ""),
        el("td", {}, el("span", { class: "role role-" + m.role, "data-testid": "role" }, m.role)),
        el("td", {}, m.state),
        el("td", { class: "health " + (healthy ? "health-ok" : "health-bad"), title: problems.join("\n") }, healthy ? "ok" : (problems[0] || "down")),
        el("td", {}, m.timeline || "–"),
        el("td", {}, m.role === "replica" ? m.replay_lsn || m.lsn : m.lsn || "–"),
        el("td", {}, m.role === "replica" ? fmtBytes(m.lag_bytes) : "–"),
        el("td", {}, m.role === "replica" ? (m.lag_seconds || 0).toFixed(2) + " s" : "–"),
        el("td", {}, m.sync ? "sync" : ""),
        archiveCell(m.archive, Date.parse(v.time)));
      body.append(row);
      if (m.role === "replica") {
        const s = lag[m.id] || (lag[m.id] = []);
        s.push({ t: Date.parse(v.time), bytes: m.lag_bytes || 0, seconds: m.lag_seconds || 0 });
      }
    }
    const head = el("thead", {}, el("tr", {}, ...["member", "role", "state", "health", "TL", "LSN", "lag", "lag s", "", "archive"].map((h) => el("th", {}, h))));
    regions.append(el("div", { class: "region", "data-region": r },
      el("h2", {}, r, " ", el("small", {}, r === v.primary_region ? "primary region" : "")),
      el("table", {}, head, body)));
  }
  const target = $("target"), chosen = target.value;
  target.replaceChildren(el("option", { value: "" }, "the most caught-up standby"));
  for (const m of v.members) {
    if (m.id !== v.leader && m.role === "replica") target.append(el("option", { value: m.id }, m.id + " (" + m.region + ")"));
  }
  target.value = [...target.options].some((o) => o.value === chosen) ? chosen : "";
  const proxies = $("proxies").tBodies[0];
  proxies.replaceChildren(...(v.proxies || []).map((p) => el("tr", {},
    el("td", {}, p.member), el("td", {}, p.addr), el("td", {}, p.known ? p.active : "?"), el("td", {}, p.known ? p.per_sec.toFixed(1) : "?"))));
  const edges = $("edges").tBodies[0];
  edges.replaceChildren(...(v.edges || []).map((e) => el("tr", { "data-edge": e.id },
    el("td", {}, e.id), el("td", {}, e.region), el("td", {}, e.instances),
    el("td", {}, e.known ? e.requests_per_sec.toFixed(1) : "?"), el("td", {}, e.known ? e.replays_per_sec.toFixed(1) : "?"),
    el("td", {}, e.url))));
  if (!(v.edges || []).length) edges.append(el("tr", {}, el("td", { colspan: 6 }, "no edge routers registered")));
  drawCharts();
}

function drawCharts() {
  const now = Date.now();
  for (const k of Object.keys(lag)) {
    lag[k] = lag[k].filter((p) => now - p.t < HISTORY_MS);
    if (!lag[k].length) delete lag[k];
  }
  const ids = Object.keys(lag).sort();
  draw($("lag-bytes"), ids, "bytes", fmtBytes);
  draw($("lag-seconds"), ids, "seconds", (x) => x.toFixed(2) + " s");
  $("legend").replaceChildren(...ids.map((id, i) => {
    const swatch = el("i");
    swatch.style.background = COLORS[i % COLORS.length]; // CSSOM: allowed by the page's CSP, unlike a style attribute
    return el("span", {}, swatch, id);
  }));
}

function draw(canvas, ids, key, fmt) {
  const dpr = window.devicePixelRatio || 1, w = 560, h = 180;
  if (canvas.width !== w * dpr) { canvas.width = w * dpr; canvas.height = h * dpr; }
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  let maxY = 0;
  for (const id of ids) for (const p of lag[id]) maxY = Math.max(maxY, p[key]);
  if (maxY === 0) maxY = key === "bytes" ? 1024 : 1;
  const left = 70, bottom = h - 18, t1 = Date.now(), t0 = t1 - HISTORY_MS;
  g.strokeStyle = "#e2e2de"; g.fillStyle = "#6b6f76"; g.font = "11px system-ui";
  for (let i = 0; i <= 3; i++) {
    const y = bottom - (bottom - 8) * i / 3;
    g.beginPath(); g.moveTo(left, y); g.lineTo(w - 5, y); g.stroke();
    g.fillText(fmt(maxY * i / 3), 4, y + 4);
  }
  g.fillText("-5 min", left, h - 4); g.fillText("now", w - 30, h - 4);
  ids.forEach((id, i) => {
    g.strokeStyle = COLORS[i % COLORS.length]; g.lineWidth = 1.5; g.beginPath();
    lag[id].forEach((p, j) => {
      const x = left + (w - 5 - left) * (p.t - t0) / (t1 - t0), y = bottom - (bottom - 8) * p[key] / maxY;
      if (j === 0) g.moveTo(x, y); else g.lineTo(x, y);
    });
    g.stroke();
  });
}

function addEvent(ev) {
  if (events.some((e) => e.id === ev.id)) return;
  events.push(ev);
  events.sort((a, b) => a.id - b.id);
  if (events.length > 200) events.splice(0, events.length - 200);
  const body = $("events").tBodies[0];
  body.replaceChildren(...events.slice().reverse().map((e) => el("tr", { "data-event": e.id, "data-kind": e.kind },
    el("td", {}, new Date(e.time).toLocaleString()), el("td", {}, el("b", {}, e.kind)), el("td", {}, e.node),
    el("td", {}, e.timeline || ""), el("td", {}, e.lsn || ""), el("td", {}, e.from || ""), el("td", {}, e.to || ""),
    el("td", { class: "reason" }, e.reason || ""))));
}

function connect() {
  const es = new EventSource("/api/v1/stream");
  es.onopen = () => { $("conn").textContent = "live"; $("conn").className = "conn on"; };
  es.onerror = () => { $("conn").textContent = "reconnecting…"; $("conn").className = "conn off"; };
  es.addEventListener("view", (m) => render(JSON.parse(m.data)));
  es.addEventListener("event", (m) => addEvent(JSON.parse(m.data)));
}

// credentials asks for the operator password (once per token) and
// returns a token, or null when cancelled or refused.
async function credentials(what) {
  if (token && Date.now() < tokenExpires - 60000) {
    return confirm(what + "?") ? token : null;
  }
  const dlg = $("login");
  $("login-what").textContent = what + "? Enter the operator password to confirm.";
  $("password").value = "";
  dlg.showModal();
  const answer = await new Promise((res) => dlg.addEventListener("close", () => res(dlg.returnValue), { once: true }));
  const password = $("password").value;
  $("password").value = "";
  if (answer !== "ok" || !password) return null;
  const r = await fetch("/api/v1/token", { method: "POST", headers: { Authorization: "Basic " + btoa("operator:" + password) } });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) { status("refused: " + (body.error || r.status)); return null; }
  token = body.token; tokenExpires = Date.parse(body.expires);
  return token;
}

function status(text) { $("op-status").textContent = text; }

async function admin(what, path, body) {
  const t = await credentials(what);
  if (!t) return null;
  status(what + "…");
  const r = await fetch(path, { method: "POST", headers: { Authorization: "Bearer " + t, "Content-Type": "application/json" }, body: JSON.stringify(body || {}) });
  const res = await r.json().catch(() => ({}));
  if (r.status === 401) token = null;
  if (!r.ok) { status(what + " failed: " + (res.error || r.status)); return null; }
  return res;
}

$("switchover").addEventListener("click", async () => {
  const to = $("target").value;
  const btn = $("switchover"); btn.disabled = true;
  try {
    const res = await admin("Switch over from " + (view ? view.leader : "the leader") + " to " + (to || "the most caught-up standby"), "/api/v1/switchover", { to });
    if (res) status("switched over: " + res.from + " → " + res.to);
  } finally { btn.disabled = false; }
});

$("restart").addEventListener("click", async () => {
  const btn = $("restart"); btn.disabled = true;
  const res = await admin("Restart every member's Postgres, one at a time", "/api/v1/restart", {});
  if (!res) { btn.disabled = false; return; }
  const poll = async () => {
    const r = await fetch("/api/v1/operation", { headers: { Authorization: "Bearer " + token } });
    const op = await r.json().catch(() => ({}));
    status("rolling restart: " + (op.state || "?") + " — " + ((op.log || []).slice(-1)[0] || "") + (op.error ? " (" + op.error + ")" : ""));
    if (op.state === "running") setTimeout(poll, 1000); else btn.disabled = false;
  };
  poll();
});

connect();
