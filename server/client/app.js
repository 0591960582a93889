// The player's page for one title (/play/{title}/): log in, load the
// title's data, then keep the page in step with the server.

import { Net, ApiError } from "./net.js";
import { Model } from "./model.js";
import { BaseView } from "./render.js";
import { Ui } from "./ui.js";
import { h, clear } from "./dom.js";
import { errorText } from "./words.js";

// The state is asked for again at least this often while the page is
// shown (production, and anything that changed without a push), and when a
// timer ends.
const REFRESH_MS = 30000;
// After a timer's end the server may not have reached it yet (clocks
// differ by a few ms): ask again after this, doubling up to REFRESH_MS.
const TIMER_RETRY_MS = 500;
// Toasts stay this long, at most this many at once (the Log tab keeps
// them all).
const TOAST_MS = 5000;
const TOASTS_MAX = 3;

const titleId = decodeURIComponent(location.pathname.split("/").filter(Boolean)[1] || "");
const stored = `citadel.${titleId}`;

const game = {
  net: null,
  model: null,
  view: null,
  ui: null,
  refreshTimer: null,
  retry: TIMER_RETRY_MS,
  acted: 0,
};
window.citadel = game; // for the browser tests and the benchmark

function toast(text, kind = "info") {
  const li = h("li", { class: `toast ${kind}` }, text);
  const list = document.getElementById("toasts");
  list.append(li);
  while (list.children.length > TOASTS_MAX) list.firstChild.remove();
  setTimeout(() => li.remove(), TOAST_MS);
  if (game.ui) game.ui.note(text, kind);
}

function banner(text) {
  const b = document.getElementById("banner");
  b.hidden = !text;
  b.textContent = text || "";
}

async function json(path) {
  const r = await fetch(path);
  const v = await r.json().catch(() => null);
  if (!r.ok) throw new ApiError(v && v.error ? v.error.code : "http_" + r.status, v && v.error ? v.error.message : "");
  return v;
}

async function loadData(version) {
  return json(`/v1/${encodeURIComponent(titleId)}/data/${encodeURIComponent(version)}`);
}

// What the server said happened, in words.
function describe(e) {
  const m = game.model;
  switch (e.event) {
    case "building_completed": return `${m.name(e.building)} reached level ${e.level}.`;
    case "research_completed": return `${m.name(e.research)} research reached level ${e.level}.`;
    case "unit_trained": return `${m.name(e.unit)} trained.`;
    case "job_completed": return `${(m.jobs.get(e.job) || { name: e.job }).name} finished.`;
    case "collected": return `Collected ${e.amount} ${m.name(e.resource)}.`;
    case "looted": return `Found: ${Object.entries({ ...(e.grants.resources || {}), ...(e.grants.items || {}), ...(e.grants.units || {}) })
      .map(([k, v]) => `${v} ${m.name(k)}`).join(", ") || "nothing"}.`;
    case "modifier_applied": return `${(m.modifiers.get(e.modifier) || { name: e.modifier }).name} is active.`;
    case "modifier_ended": return `${(m.modifiers.get(e.modifier) || { name: e.modifier }).name} ended.`;
    case "notify": return e.text || e.message || "";
    case "refunded": return "Resources were given back.";
    case "migrated": return "The game was updated.";
    case "adjusted": return "Customer support changed your resources.";
    case "gift_sent": return `Your gift is on its way to ${e.to}.`;
    case "gift_delivered": return `${e.to} received your gift.`;
    case "gift_returned": return `${e.to} could not take your gift (their inbox is full); it came back to you.`;
    case "restored": return "Customer support restored your base.";
    default: return null;
  }
}

// An inbox item in words.
function inboxText(item) {
  const m = game.model;
  if (item.kind === "raid_report") {
    const r = (item.body && item.body.result) || {};
    const loot = Object.entries(r.loot || {}).map(([k, v]) => `${v} ${m.name(k)}`).join(", ");
    return `${item.from} raided your base: ${r.victory ? "they won" : "you held"}${loot ? `; they took ${loot}` : ""}.`;
  }
  const gifts = Object.entries({ ...(item.resources || {}), ...(item.items || {}) }).map(([k, v]) => `${v} ${m.name(k)}`);
  if (item.kind === "gift") return `${item.from}, of your clan, gave you ${gifts.join(", ")}.`;
  return `${item.from} sent you ${gifts.join(", ") || "a message"}.`;
}

function showEvents(events) {
  for (const e of events || []) {
    const text = describe(e);
    if (text) toast(text, "event");
  }
}

// A state answer: the data follows a new title version (hot reload), then
// everything is drawn again.
async function applyState(answer) {
  if (answer.state.content_version !== game.model.data.content_version) {
    try {
      game.model.setData(await loadData(answer.state.content_version));
      game.view.images.clear();
      toast("The game was updated.", "event");
    } catch (e) {
      // An older page on a newer server: keep the old data until the next state.
    }
  }
  game.model.setState(answer);
  showEvents(answer.events);
  game.view.dirty = true;
  game.ui.renderTabs();
  game.ui.render(true);
  schedule();
}

function schedule() {
  clearTimeout(game.refreshTimer);
  const next = game.model.nextEnd();
  let wait = REFRESH_MS;
  if (next !== null) wait = Math.min(wait, Math.max(50, next - game.model.now() + 50));
  game.refreshTimer = setTimeout(() => refresh(true), wait);
}

async function refresh(fromTimer = false) {
  if (!game.net || game.net.closed) return;
  const before = game.model.nextEnd();
  try {
    await applyState(await game.net.request("get_state", {}, false));
  } catch (e) {
    if (!(e instanceof ApiError)) throw e;
    return;
  }
  // A timer the server has not reached yet: ask again soon.
  if (fromTimer && before !== null && game.model.nextEnd() === before && before <= game.model.now()) {
    clearTimeout(game.refreshTimer);
    game.refreshTimer = setTimeout(() => refresh(true), game.retry);
    game.retry = Math.min(REFRESH_MS, game.retry * 2);
  } else {
    game.retry = TIMER_RETRY_MS;
  }
}

// Runs an action, shows what happened (or why not, in words), then reads
// the state: the server decides everything.
game.act = async (action, args) => {
  game.acted += 1;
  const answer = game.net.request(action, args, true);
  const state = game.net.request("get_state", {}, false);
  try {
    const r = await answer;
    showEvents(r.events);
  } catch (e) {
    if (!(e instanceof ApiError)) throw e;
    toast(errorText(e), "error");
  }
  try {
    await applyState(await state);
  } catch (e) {
    if (!(e instanceof ApiError)) throw e;
  }
};

game.toast = toast;
game.toastError = (e) => {
  if (!(e instanceof ApiError)) throw e;
  toast(errorText(e), "error");
};
game.refresh = () => refresh();
game.player = () => game.playerId;

// Asks something that changes nothing of the player (lists, profiles).
game.ask = (action, args) => game.net.request(action, args, false);

game.startPlace = (type, moving) => {
  game.view.startGhost(type, moving);
  game.ui.show("base");
};

game.place = async () => {
  const g = game.view.ghost;
  if (!g || game.model.fits(g.type, g.x, g.y, g.moving) !== "ok") return;
  game.view.stopGhost();
  if (g.moving) {
    await game.act("move", { id: g.moving, x: g.x, y: g.y });
    game.view.select(g.moving);
  } else {
    const before = new Set(game.model.state.buildings.map((b) => b.id));
    await game.act("build", { building: g.type, x: g.x, y: g.y });
    const placed = game.model.state.buildings.find((b) => !before.has(b.id));
    if (placed) game.view.select(placed.id);
  }
  game.ui.render();
};

game.cancelPlace = () => {
  game.view.stopGhost();
  game.ui.render();
};

game.focusBuilding = (id) => {
  const b = game.model.building(id);
  if (!b) return;
  const s = game.model.buildings.get(b.building).size;
  game.view.center = { x: b.x + s.w / 2, y: b.y + s.h / 2 };
  game.view.select(id);
};

// User Timing marks for the benchmark (docs/benchmarks.md, "The players'
// client"): the login form shown, a login sent, the game playable.
function mark(name) {
  performance.mark(`citadel:${name}`);
}

function showLogin(message) {
  mark("login-shown");
  delete document.body.dataset.ready;
  document.getElementById("game").hidden = true;
  document.getElementById("login").hidden = false;
  document.getElementById("login-error").textContent = message || "";
  document.getElementById("player").focus();
}

async function start(login) {
  sessionStorage.setItem(stored, JSON.stringify({ player: login.player, token: game.net.token }));
  document.getElementById("login").hidden = true;
  document.getElementById("game").hidden = false;
  document.getElementById("who").textContent = login.player;
  game.playerId = login.player;
  if (login.state.content_version !== game.model.data.content_version) {
    game.model.setData(await loadData(login.state.content_version));
  }
  game.model.setState(login);
  if (!game.view) {
    game.view = new BaseView(document.getElementById("base"), game.model, {
      select: () => game.ui.show("base"),
      changed: () => game.ui.tab === "base" && game.ui.render(),
      place: () => game.place(),
      cancelPlace: () => game.cancelPlace(),
    });
    game.ui = new Ui(game);
  }
  game.ui.renderTabs();
  game.ui.render();
  showEvents(login.events);
  game.net.connect();
  schedule();
  document.body.dataset.ready = "true";
  mark("ready");
}

function newNet() {
  const net = new Net(titleId);
  net.addEventListener("status", (e) => {
    const { status, detail } = e.detail;
    const words = { online: "Online", connecting: "Connecting…", reconnecting: "Reconnecting…",
      offline: "Offline: reconnecting…", restarting: "The server is restarting…", ended: "Logged out" };
    const el = document.getElementById("status");
    el.textContent = words[status] || status;
    el.dataset.status = status;
    if (status === "online") {
      banner(null);
      refresh();
    } else if (status === "restarting") {
      banner("The server is restarting: your game reconnects by itself.");
    } else if (status === "offline" && detail) {
      banner(errorText(detail));
    } else if (status === "ended") {
      sessionStorage.removeItem(stored);
      showLogin(errorText(detail));
    }
  });
  // What the server tells without being asked (docs/protocol.md, "Pushes").
  net.addEventListener("push", (e) => {
    const p = e.detail;
    if (p.event === "notice") toast(p.text, "notice");
    else if (p.event === "game_events") {
      // Timers ended: the server completed them; show what happened and
      // read the new state.
      showEvents(p.events);
      refresh();
    } else if (p.event === "chat") game.ui.chatPushed(p);
    else if (p.event === "clan") game.ui.clanPushed(p);
    else if (p.event === "inbox") {
      toast(inboxText(p.item), "event");
      refresh();
    } else if (p.event === "map") game.ui.mapPushed(p);
  });
  return net;
}

async function login(player) {
  game.net = newNet();
  try {
    await start(await game.net.login(player));
  } catch (e) {
    if (!(e instanceof ApiError)) throw e;
    showLogin(errorText(e));
  }
}

async function main() {
  document.getElementById("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    document.getElementById("login-error").textContent = "";
    mark("login-sent");
    login(document.getElementById("player").value.trim());
  });
  document.getElementById("refresh").addEventListener("click", () => refresh());
  document.getElementById("logout").addEventListener("click", () => {
    sessionStorage.removeItem(stored);
    if (game.net) game.net.close();
    location.reload();
  });
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible" && game.model && game.model.state) refresh();
  });
  let titles;
  try {
    titles = await json("/v1/titles");
  } catch (e) {
    return banner("The server cannot be reached. Reload the page to try again.");
  }
  const t = titles.titles.find((x) => x.id === titleId);
  if (!t) {
    clear(document.getElementById("login")).append(h("p", {}, "This game is not served here. ", h("a", { href: "/play/" }, "See the games.")));
    document.getElementById("login").hidden = false;
    return;
  }
  document.title = `${t.name} · Citadel`;
  document.getElementById("title-name").textContent = t.name;
  game.model = new Model(await loadData(t.content_version));
  const saved = JSON.parse(sessionStorage.getItem(stored) || "null");
  if (saved && saved.token) {
    // Resume: the saved token, if the server still takes it.
    game.net = newNet();
    game.net.token = saved.token;
    try {
      const answer = await game.net.http(`/v1/${titleId}/request`, { id: 0, action: "get_state" });
      if (answer.ok) return start({ player: saved.player, ...answer.result });
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
    }
    sessionStorage.removeItem(stored);
  }
  showLogin();
}

main();
