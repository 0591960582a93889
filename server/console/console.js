// The Citadel admin console: one page, plain JavaScript, driving the admin
// API (/admin/api/) with the login cookie. Every change sends
// X-Citadel-Admin: 1, which the API requires of cookie logins.
"use strict";

const view = document.getElementById("view");
const flashBox = document.getElementById("flash");
let timer = null;
// Latency history for the chart: entry name -> [p99 ms] (newest last).
const history = new Map();
const HISTORY_POINTS = 60;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) e.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return e;
}

function table(headers, rows, attrs) {
  return el("table", attrs || {},
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", { class: /^(#|p\d|max|mean)|count|ms|busy|players/.test(h) ? "num" : null }, h)))),
    el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", { colspan: headers.length }, "none"))));
}

function td(v, num) { return el("td", { class: num ? "num" : null }, v); }
function ms(v) { return v === undefined || v === null ? "" : Number(v).toFixed(2); }
function time(msEpoch) { return msEpoch ? new Date(msEpoch).toISOString().replace("T", " ").slice(0, 19) : ""; }

function flash(text, isError) {
  flashBox.hidden = false;
  flashBox.textContent = text;
  flashBox.className = isError ? "flash error" : "flash";
}

async function api(path, body) {
  const opts = { credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    opts.method = "POST";
    opts.headers["Content-Type"] = "application/json";
    opts.headers["X-Citadel-Admin"] = "1";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch("/admin/api" + path, opts);
  if (r.status === 401) { location.href = "/admin/login"; throw new Error("logged out"); }
  const data = await r.json().catch(() => ({}));
  if (!r.ok || data.ok === false) {
    const e = data.error || {};
    throw new Error((e.code ? e.code + ": " : "") + (e.message || r.statusText));
  }
  return data;
}

async function act(label, path, body, then) {
  try {
    const r = await api(path, body);
    flash(label + ": done" + (r.audit ? " (audit " + r.audit + ")" : ""));
    if (then) await then(r);
  } catch (e) {
    flash(label + ": " + e.message, true);
  }
}

async function busy() {
  try {
    const m = await api("/metrics");
    const b = document.getElementById("busy");
    const bus = m.bus && !m.bus.up ? " · bus down: pushes to other servers are lost" : "";
    b.textContent = "busy " + Math.round(m.busy_ratio * 100) + "% · " + m.sessions + " players" + bus;
    b.className = m.busy_ratio >= 0.5 || bus ? "busy warn" : "busy";
    return m;
  } catch (e) { return null; }
}

// ---- Servers: load, titles, reload / rollback, broadcast, drain ----
async function servers() {
  const [s, t] = await Promise.all([api("/servers"), api("/titles")]);
  // A server serving another version of a title than this one is out of step.
  const mine = new Map(t.titles.map((x) => [x.id, x.content_version]));
  const versions = (x) => {
    const titles = Object.entries(x.titles || {});
    const odd = titles.filter(([id, v]) => mine.has(id) && mine.get(id) !== v);
    const text = titles.map(([id, v]) => id + " " + String(v).slice(0, 8)).join(", ");
    return odd.length
      ? el("span", {}, el("span", { class: "badge bad" }, "out of step: " + odd.map(([id]) => id).join(", ")), " ", text)
      : text;
  };
  const rows = s.servers.map((x) => el("tr", {},
    td(x.id), td(x.address), td(x.players, true), td(Math.round(x.busy * 100) + "%", true),
    td(x.draining ? el("span", { class: "badge bad" }, "draining") : el("span", { class: "badge good" }, "taking players")),
    td(versions(x)),
    td(time(x.heartbeat_ms))));
  const titleRows = t.titles.map((x) => el("tr", {},
    td(x.id), td(x.name || ""), td(x.content_version || ""), td((x.history || []).length, true),
    td(el("button", { id: "reload-" + x.id, onclick: () => act("reload " + x.id, "/titles/" + x.id + "/reload", {}, render) }, "Reload"),
       " ",
       el("button", { id: "rollback-" + x.id, onclick: () => act("rollback " + x.id, "/titles/" + x.id + "/rollback", {}, render) }, "Roll back"))));
  const text = el("input", { id: "broadcast-text", size: 50, maxlength: 1024, placeholder: "Message to every player, on every server" });
  view.replaceChildren(
    el("h1", {}, "Servers"),
    table(["server", "address", "players", "busy", "state", "titles served", "last heartbeat"], rows, { id: "servers" }),
    el("form", { class: "inline", onsubmit: (e) => { e.preventDefault(); act("drain", "/drain", { on: true }, render); } },
      el("button", { id: "drain-on" }, "Drain this server"),
      el("button", { type: "button", id: "drain-off", onclick: () => act("undrain", "/drain", { on: false }, render) }, "Take players again")),
    el("h2", {}, "Titles"),
    table(["title", "name", "content version", "versions kept", ""], titleRows, { id: "titles" }),
    el("h2", {}, "Broadcast"),
    el("form", { class: "inline", onsubmit: (e) => { e.preventDefault(); act("broadcast", "/broadcast", { text: text.value }); } },
      text, el("button", { id: "broadcast-go" }, "Send")));
}

// ---- Latency: tables and a chart of p99 per entry point ----
function drawChart(canvas) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  const series = [...history.entries()].filter(([, v]) => v.some((x) => x > 0))
    .sort((a, b) => Math.max(...b[1]) - Math.max(...a[1])).slice(0, 6);
  const top = Math.max(1, ...series.flatMap(([, v]) => v));
  const colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];
  ctx.font = "12px system-ui";
  ctx.fillStyle = "#555";
  ctx.fillText("p99 over the last minute, ms (max " + top.toFixed(1) + ")", 8, 14);
  series.forEach(([name, v], i) => {
    ctx.strokeStyle = colors[i];
    ctx.beginPath();
    v.forEach((y, x) => {
      const px = 40 + (x * (w - 50)) / (HISTORY_POINTS - 1);
      const py = h - 20 - (y / top) * (h - 50);
      if (x === 0) ctx.moveTo(px, py); else ctx.lineTo(px, py);
    });
    ctx.stroke();
    ctx.fillStyle = colors[i];
    // Dots as well: a page just opened has one sample per entry.
    v.forEach((y, x) => {
      const px = 40 + (x * (w - 50)) / (HISTORY_POINTS - 1);
      ctx.fillRect(px - 2, h - 20 - (y / top) * (h - 50) - 2, 4, 4);
    });
    ctx.fillText(name, w - 220, 30 + i * 14);
  });
}

async function latency() {
  const m = await busy() || await api("/metrics");
  for (const e of m.entries) {
    const key = e.kind + " " + e.name + (e.title ? " [" + e.title + "]" : "");
    const v = history.get(key) || [];
    v.push(e.last_minute.p99_ms);
    while (v.length > HISTORY_POINTS) v.shift();
    history.set(key, v);
  }
  const rows = (w) => m.entries.slice().sort((a, b) => b[w].max_ms - a[w].max_ms).map((e) => el("tr", { class: e[w].max_ms >= 200 ? "slow" : null },
    td(e.kind), td(e.name), td(e.title), td(e[w].count, true), td(ms(e[w].mean_ms), true), td(ms(e[w].p50_ms), true),
    td(ms(e[w].p90_ms), true), td(ms(e[w].p99_ms), true), td(ms(e[w].max_ms), true)));
  const heads = ["kind", "entry", "title", "count", "mean ms", "p50 ms", "p90 ms", "p99 ms", "max ms"];
  const canvas = el("canvas", { id: "chart", width: 900, height: 240 });
  view.replaceChildren(
    el("h1", {}, "Latency"),
    el("p", {}, "Profiling " + (m.profiling ? "on" : "off") + ". Busy ratio " + Math.round(m.busy_ratio * 100) + "%" + (m.busy_ratio >= 0.5 ? " — DANGER: latency at risk" : "") + "."),
    canvas,
    el("h2", {}, "Last minute"), table(heads, rows("last_minute"), { id: "latency-minute" }),
    el("h2", {}, "Since start"), table(heads, rows("since_start"), { id: "latency-start" }));
  drawChart(canvas);
}

// ---- Requests in flight and slow requests ----
async function requests() {
  const [f, s] = await Promise.all([api("/inflight"), api("/slow")]);
  const live = f.requests.map((r) => el("tr", {}, td(r.title), td(r.player), td(r.action), td(r.stage), td(ms(r.age_ms), true)));
  const slow = s.requests.slice().reverse().map((r) => el("tr", {}, td(time(r.at_ms)), td(r.title), td(r.player), td(r.action),
    td(ms(r.total_ms), true), td(Object.entries(r.stages).map(([k, v]) => k + " " + ms(v)).join(", "))));
  view.replaceChildren(
    el("h1", {}, "Requests"),
    el("h2", {}, "In flight"), table(["title", "player", "action", "stage", "age ms"], live, { id: "inflight" }),
    el("h2", {}, "Slow (newest first)"), table(["at", "title", "player", "action", "total ms", "stages (ms)"], slow, { id: "slow" }));
}

// ---- Players: search, view, support actions ----
async function players(q) {
  const input = el("input", { id: "search-q", placeholder: "player id or name prefix", value: q || "" });
  const results = el("div", { id: "results" });
  const search = async () => {
    const r = await api("/players?q=" + encodeURIComponent(input.value));
    results.replaceChildren(table(["title", "player", "name", "level", "last seen"], r.players.map((p) => el("tr", {},
      td(p.title), td(el("a", { class: "player-link", href: "#player/" + p.title + "/" + p.player }, p.player)),
      td(p.name), td(p.level, true), td(time(p.last_seen_ms)))), { id: "players" }));
  };
  view.replaceChildren(el("h1", {}, "Players"),
    el("form", { class: "inline", onsubmit: (e) => { e.preventDefault(); location.hash = "players/" + encodeURIComponent(input.value); } },
      input, el("button", { id: "search-go" }, "Find")),
    results);
  if (q) await search();
}

// Payments the gateway recorded, as table rows (docs/gateway.md).
function paymentRows(list) {
  return list.map((x) => el("tr", { class: "payment-" + x.state }, td(time(x.created_ms)), td(x.provider), td(x.id),
    td(x.account), td(x.title + " / " + x.player), td(x.product), td((x.amount / 100).toFixed(2) + " " + x.currency, true),
    td(x.state), td(x.delivered_ms ? time(x.delivered_ms) : ""),
    td(x.revoked_ms ? time(x.revoked_ms) + " (" + x.revoked_reason + ")" : "")));
}

const PAYMENT_COLUMNS = ["recorded", "provider", "payment id", "account", "player", "product", "amount", "state", "delivered", "revoked"];

async function payments(account) {
  const q = el("input", { id: "payments-q", placeholder: "account id", size: 36, value: account || "" });
  const r = await api(account ? "/payments?account=" + encodeURIComponent(account) : "/payments?limit=100");
  view.replaceChildren(el("h1", {}, "Payments"),
    el("form", { class: "inline", onsubmit: (e) => {
      e.preventDefault();
      location.hash = "payments/" + encodeURIComponent(q.value.trim());
    } }, q, el("button", {}, "Find")),
    table(PAYMENT_COLUMNS, paymentRows(r.payments), { id: "payments" }));
}

async function player(title, id) {
  const p = await api("/players/" + title + "/" + id);
  const paid = await api("/payments?title=" + encodeURIComponent(title) + "&player=" + encodeURIComponent(id));
  const base = "/players/" + title + "/" + id;
  const again = () => player(title, id);
  const s = p.state;
  const resourceRows = Object.entries(s.resources).map(([k, v]) => el("tr", {}, td(k), td(v, true)));
  const itemRows = Object.entries(s.items || {}).map(([k, v]) => el("tr", {}, td(k), td(v, true)));
  const historyRows = (s.history || []).slice().reverse().map((h) => el("tr", {}, td(h.seq, true), td(time(h.at_ms)), td(h.op)));
  const snapRows = p.snapshots.map((x) => el("tr", {}, td(time(x.at_ms)), td(x.seq, true),
    td(el("button", { class: "restore", onclick: () => {
      const why = prompt("Reason for restoring the snapshot of " + time(x.at_ms) + "?");
      if (why) act("restore", base + "/restore", { snapshot: x.id, reason: why }, again);
    } }, "Restore"))));
  const auditRows = p.audit.map((a) => el("tr", {}, td(time(a.at_ms)), td(a.admin), td(a.action), td(a.reason),
    td(JSON.stringify(a.before)), td(JSON.stringify(a.after))));
  const kind = el("select", { id: "adjust-kind" }, el("option", { value: "resources" }, "resource"), el("option", { value: "items" }, "item"));
  const what = el("input", { id: "adjust-id", placeholder: "id (gold, …)", size: 12 });
  const amount = el("input", { id: "adjust-amount", type: "number", placeholder: "amount (negative revokes)" });
  const why = el("input", { id: "adjust-reason", placeholder: "reason", size: 30 });
  const banMinutes = el("input", { id: "ban-minutes", type: "number", min: 1, placeholder: "minutes (empty: no end)" });
  const banWhy = el("input", { id: "ban-reason", placeholder: "reason", size: 30 });
  const status = [
    el("span", { class: "badge " + (p.online_here ? "good" : "") }, p.online_here ? "online here" : p.online_on ? "online on " + p.online_on : "offline"),
    " ",
    p.banned ? el("span", { class: "badge bad", id: "banned" }, "banned until " + (p.restriction.banned_until_ms > 9e15 ? "forever" : time(p.restriction.banned_until_ms)) + ": " + p.restriction.reason) : "",
  ];
  view.replaceChildren(
    el("h1", {}, id + " (" + title + ")"),
    el("p", {}, status, " name ", (p.info && p.info.name) || id, ", level ", (p.info && p.info.level) ?? "?", ", seq ", s.seq),
    el("div", { class: "card" },
      el("h2", {}, "Grant or revoke"),
      el("form", { class: "inline", id: "adjust", onsubmit: (e) => {
        e.preventDefault();
        const body = { resources: {}, items: {}, reason: why.value };
        body[kind.value][what.value.trim()] = Number(amount.value);
        act("adjust", base + "/adjust", body, again);
      } }, kind, what, amount, why, el("button", { id: "adjust-go" }, "Apply")),
      el("h2", {}, "Access"),
      el("form", { class: "inline", onsubmit: (e) => {
        e.preventDefault();
        const body = { reason: banWhy.value };
        if (banMinutes.value) body.minutes = Number(banMinutes.value);
        act("ban", base + "/ban", body, again);
      } }, banMinutes, banWhy, el("button", { id: "ban-go" }, "Ban")),
      el("div", { class: "inline" },
        el("button", { id: "unban-go", onclick: () => act("unban", base + "/unban", {}, again) }, "Unban"), " ",
        el("button", { id: "logout-go", onclick: () => act("force logout", base + "/logout", {}, again) }, "Force logout"))),
    el("h2", {}, "Resources"), table(["resource", "amount"], resourceRows, { id: "resources" }),
    el("h2", {}, "Items"), table(["item", "count"], itemRows, { id: "items" }),
    el("h2", {}, "Recent actions"), table(["seq", "at", "operation"], historyRows, { id: "history" }),
    el("h2", {}, "Payments"), table(PAYMENT_COLUMNS, paymentRows(paid.payments), { id: "player-payments" }),
    el("h2", {}, "Snapshots"), table(["saved at", "seq", ""], snapRows, { id: "snapshots" }),
    el("h2", {}, "Audit"), table(["at", "admin", "action", "reason", "before", "after"], auditRows, { id: "player-audit" }),
    el("h2", {}, "State"), el("pre", { id: "state" }, JSON.stringify(s, null, 1)));
}

async function audit() {
  const r = await api("/audit?limit=100");
  view.replaceChildren(el("h1", {}, "Audit log"), table(["at", "admin", "server", "action", "title", "player", "reason", "before", "after"],
    r.entries.map((a) => el("tr", {}, td(time(a.at_ms)), td(a.admin), td(a.server), td(a.action), td(a.title), td(a.player),
      td(a.reason), td(JSON.stringify(a.before)), td(JSON.stringify(a.after)))), { id: "audit" }));
}

async function render() {
  clearInterval(timer);
  const [page, ...args] = (location.hash.slice(1) || "servers").split("/").map(decodeURIComponent);
  for (const a of document.querySelectorAll("header nav a")) {
    a.classList.toggle("active", a.id === "nav-" + (page === "player" ? "players" : page));
  }
  const pages = { servers, latency, requests, players, player, payments, audit };
  const show = pages[page] || servers;
  try {
    await show(...args);
    view.dataset.page = page;
  } catch (e) {
    view.replaceChildren(el("p", { class: "error" }, "Could not load: " + e.message));
  }
  // Live pages refresh themselves.
  if (page === "latency" || page === "requests" || page === "servers") {
    timer = setInterval(() => show(...args).catch(() => {}), 2000);
  }
}

window.addEventListener("hashchange", () => { flashBox.hidden = true; render(); });
busy();
setInterval(busy, 5000);
render();
