// The panels beside the base: what the player can do, each through the
// documented protocol, everything named and pictured from the title's data.

import { h, clear } from "./dom.js";
import { number, duration } from "./words.js";

// Tabs, in order; a tab shows only when the title has what it is about.
const TABS = [
  ["base", "Base", () => true],
  ["build", "Build", () => true],
  ["army", "Army", (m) => m.units.size > 0],
  ["research", "Research", (m) => m.research.size > 0],
  ["store", "Store", (m) => m.offers.size > 0 || m.items.size > 0],
  ["goals", "Goals", (m) => m.quests.size > 0 || m.achievements.size > 0 || !!m.data.daily],
  ["jobs", "Jobs", (m) => m.jobs.size > 0],
  ["actions", "Actions", (m) => Object.keys(m.data.actions || {}).length > 0],
  ["clan", "Clan", (m) => !!(m.data.world && m.data.world.clans)],
  ["top", "Top", (m) => (m.data.scores || []).length > 0],
  ["map", "Map", (m) => !!(m.data.world && m.data.world.map)],
  ["raids", "Raids", (m) => !!(m.data.world && m.data.world.raids)],
  ["log", "Log", () => true],
];

const FORM_TABS = new Set(["clan", "top", "map", "raids"]);
// A battle log plays back at this many milliseconds per entry, and in no
// more than PLAYBACK_TOTAL_MS for the whole log (a long one goes faster).
const PLAYBACK_MS = 600;
const PLAYBACK_TOTAL_MS = 10000;
// Chat lines are read this often while the clan tab is shown: a fallback,
// since the server pushes each line as it is posted (a push lost to a
// reconnect shows at the next read).
const CHAT_POLL_MS = 1000;
// Chat lines shown.
const CHAT_LINES = 50;
// The clan's members and requests to join are read again this often while
// the clan tab is shown (every so many chat reads).
const CLAN_INFO_POLLS = 5;

// An id in words: "sell_spice" -> "sell spice".
const words = (id) => id.replace(/_/g, " ");

// What an argument's input holds, as the action takes it.
function argValue(d, v) {
  if (d.type === "integer") return Number(v);
  if (d.type === "boolean") return !!v;
  return v;
}

export class Ui {
  constructor(game) {
    this.game = game; // {model, view, act(action, args), ask(action, args), place(), cancelPlace()}
    this.tab = "base";
    this.log = [];
    this.tabsEl = document.getElementById("tabs");
    this.panel = document.getElementById("panel");
    this.resourcesEl = document.getElementById("resources");
    this.extra = {}; // tab-specific data fetched on demand (clan, top, map)
    setInterval(() => this.tickBars(), 250);
    setInterval(() => this.pollChat(), CHAT_POLL_MS);
  }

  get model() {
    return this.game.model;
  }

  // The tab buttons; rebuilt only when the set of tabs changes (a new
  // title version), so that a button is never replaced under a click.
  renderTabs() {
    const ids = TABS.filter(([, , shown]) => shown(this.model)).map(([id]) => id).join(" ");
    if (ids === this.tabIds) {
      for (const b of this.tabsEl.children) b.setAttribute("aria-selected", String(b.id === `tab-${this.tab}`));
      return;
    }
    this.tabIds = ids;
    clear(this.tabsEl);
    for (const [id, label, shown] of TABS) {
      if (!shown(this.model)) continue;
      const b = h("button", {
        role: "tab", id: `tab-${id}`, "aria-selected": String(this.tab === id), "aria-controls": "panel",
        onclick: () => this.show(id),
      }, label);
      this.tabsEl.append(b);
    }
  }

  show(tab) {
    // The clan may have changed while another tab was shown: read it again
    // (the panel shows what it has meanwhile).
    if (tab === "clan" && this.extra.clanLoaded) this.loadClan();
    this.tab = tab;
    this.renderTabs();
    this.render();
    if (this.onTab) this.onTab(tab);
  }

  // Redraws everything that depends on the state. Panels with forms
  // (clan, top, map) redraw only when they ask to, so that a state update
  // never takes away what the player is typing.
  render(fromState = false) {
    this.renderResources();
    if (fromState && FORM_TABS.has(this.tab)) return;
    // A redraw keeps the focus (and a text field's caret) where it was, so
    // that a keyboard user or someone typing is not thrown out by a state
    // update.
    const active = document.activeElement;
    const focused = active && active.id && this.panel.contains(active) ? active.id : null;
    const caret = focused && typeof active.selectionStart === "number" ? [active.selectionStart, active.selectionEnd] : null;
    // And what the player was typing in a text field.
    const typed = new Map([...this.panel.querySelectorAll("input[id]:not([type]), input[id][type=text], textarea[id]")]
      .map((el) => [el.id, el.value]));
    const panel = clear(this.panel);
    panel.setAttribute("aria-labelledby", `tab-${this.tab}`);
    const body = this[`panel_${this.tab}`] ? this[`panel_${this.tab}`]() : [];
    panel.append(...[body].flat(Infinity).filter(Boolean));
    for (const [id, value] of typed) {
      const el = document.getElementById(id);
      if (el && this.panel.contains(el) && !el.value) el.value = value;
    }
    const again = focused && document.getElementById(focused);
    if (again) {
      again.focus();
      if (caret && typeof again.setSelectionRange === "function") again.setSelectionRange(...caret);
    }
    this.tickBars();
  }

  icon(path, alt = "") {
    const url = this.model.asset(path);
    return url ? h("img", { class: "icon", src: url, alt, width: 24, height: 24, loading: "lazy" }) : null;
  }

  // Amounts of resources (a cost, a reward), each with its icon; amounts
  // the player lacks are marked.
  amounts(map, cost = false) {
    const parts = Object.entries(map || {}).filter(([, n]) => n);
    if (!parts.length) return h("span", { class: "amounts" }, cost ? "free" : "");
    return h("span", { class: "amounts" }, parts.map(([id, n]) => {
      const short = cost && this.model.amount(id) < n;
      return h("span", { class: short ? "amount short" : "amount", title: this.model.name(id) },
        this.icon(this.model.icon(id), ""), `${number(n)} ${this.model.name(id)}`, short ? " (not enough)" : "");
    }));
  }

  // Everything a grant gives: resources, items, units, xp, loot rolls
  // (with their odds) and modifiers.
  grants(g) {
    if (!g) return null;
    const out = [];
    const all = { ...(g.resources || {}), ...(g.items || {}), ...(g.units || {}) };
    if (Object.keys(all).length) out.push(this.amounts(all));
    if (g.xp) out.push(h("span", { class: "amount" }, `${g.xp} xp`));
    for (const id of g.modifiers || []) {
      const m = this.model.modifiers.get(id);
      out.push(h("span", { class: "amount" }, `${m ? m.name : id} (${m ? duration(m.duration_seconds) : ""})`));
    }
    for (const id of g.loot || []) out.push(this.odds(id));
    return h("span", { class: "grants" }, out);
  }

  // A loot table with the chance of each entry, as the data states it.
  odds(id) {
    const t = this.model.loot.get(id);
    if (!t) return h("span", {}, id);
    const total = t.entries.reduce((a, e) => a + e.weight, 0) || 1;
    return h("details", { class: "odds" },
      h("summary", {}, `${t.name}: ${t.rolls} roll${t.rolls === 1 ? "" : "s"}, see the odds`),
      h("ul", {}, t.entries.map((e) =>
        h("li", {}, h("strong", {}, `${(Math.round((e.weight * 1000) / total) / 10).toFixed(1)}%`), " ",
          this.grants(e.grants)))));
  }

  // A timer as a progress bar that ends on time.
  bar(start, end, label) {
    return h("div", { class: "bar", role: "progressbar", "aria-label": label, "aria-valuemin": "0",
      "aria-valuemax": "100", dataset: { start: String(start), end: String(end) } },
      h("div", { class: "fill" }), h("span", { class: "left" }));
  }

  tickBars() {
    if (!this.model || !this.model.state) return;
    const now = this.model.now();
    for (const el of document.querySelectorAll(".bar[data-end]")) {
      const start = Number(el.dataset.start);
      const end = Number(el.dataset.end);
      const f = Math.min(1, Math.max(0, (now - start) / Math.max(1, end - start)));
      el.firstChild.style.width = `${(f * 100).toFixed(1)}%`;
      el.setAttribute("aria-valuenow", String(Math.round(f * 100)));
      el.lastChild.textContent = f >= 1 ? "done" : `${duration((end - now) / 1000)} left`;
      el.classList.toggle("done", f >= 1);
    }
    for (const el of document.querySelectorAll("[data-stored]")) {
      const b = this.model.building(Number(el.dataset.stored));
      if (b) el.textContent = number(this.model.stored(b));
    }
  }

  button(label, action, args, opts = {}) {
    return h("button", {
      class: opts.class, disabled: opts.disabled, title: opts.title,
      "aria-label": opts.aria,
      onclick: () => (opts.run ? opts.run() : this.game.act(action, args)),
    }, label);
  }

  requires(text) {
    return text ? h("p", { class: "requires" }, text[0].toUpperCase() + text.slice(1)) : null;
  }

  renderResources() {
    const m = this.model;
    const s = m.state;
    const d = m.derived;
    const el = clear(this.resourcesEl);
    for (const r of m.data.resources) {
      const cap = d.caps[r.id];
      const rate = (d.rates || {})[r.id];
      const label = `${r.name}: ${m.amount(r.id)}${cap !== undefined ? ` of ${cap}` : ""}${rate ? `, +${rate} an hour` : ""}`;
      el.append(h("li", { class: r.id === m.data.premium_resource ? "res premium" : "res", title: label, "aria-label": label,
        dataset: { resource: r.id } },
        this.icon(r.icon), h("span", { class: "n" }, number(m.amount(r.id))),
        cap !== undefined ? h("span", { class: "cap" }, `/${number(cap)}`) : null,
        rate ? h("span", { class: "rate" }, `+${number(rate)}/h`) : null));
    }
    for (const c of m.data.capacities || []) {
      const u = d.capacities[c.id] || { used: 0, total: 0 };
      const label = `${c.name}: ${u.used} used of ${u.total}`;
      el.append(h("li", { class: u.used > u.total ? "res short" : "res", title: label, "aria-label": label },
        this.icon(c.icon), h("span", { class: "n" }, `${number(u.used)}/${number(u.total)}`)));
    }
    const label = `Builders: ${d.builders.used} busy of ${d.builders.total}`;
    el.append(h("li", { class: "res", title: label, "aria-label": label }, h("span", { class: "n" }, `⚒ ${d.builders.used}/${d.builders.total}`)));
    if (d.housing.total) {
      const hl = `Housing: ${d.housing.used} of ${d.housing.total}`;
      el.append(h("li", { class: "res", title: hl, "aria-label": hl }, h("span", { class: "n" }, `⌂ ${d.housing.used}/${d.housing.total}`)));
    }
    el.append(h("li", { class: "res", "aria-label": `Level ${m.xpLevel()}, ${s.xp} xp` }, h("span", { class: "n" }, `Lv ${m.xpLevel()}`)));
    for (const t of m.timers().filter((t) => t.kind === "modifier")) {
      el.append(h("li", { class: "res buff", "aria-label": `${t.label}${t.stacks > 1 ? ` x${t.stacks}` : ""}` },
        this.icon(m.modifiers.get(t.id) && m.modifiers.get(t.id).icon), `${t.label}${t.stacks > 1 ? ` x${t.stacks}` : ""}`,
        this.bar(t.start, t.end, t.label)));
    }
  }

  // ------------------------------------------------------------ base

  panel_base() {
    const m = this.model;
    const view = this.game.view;
    if (view.ghost) return this.placing();
    const b = view.selected != null ? m.building(view.selected) : null;
    const list = h("ul", { class: "list buildings" }, m.state.buildings.map((x) =>
      h("li", {}, h("button", { class: x.id === view.selected ? "pick on" : "pick", onclick: () => this.game.focusBuilding(x.id) },
        this.icon(m.buildings.get(x.building).icon), `${m.name(x.building)} (level ${x.level})`,
        x.upgrade ? " ⏳" : ""))));
    const collectAll = this.button("Collect all", "collect_all", {});
    if (!b) {
      return [h("p", { class: "hint" }, "Select a building on the grid (or below) to see what it does. ",
        "Keys on the grid: arrows pan, + and - zoom, n and p go through your buildings."), collectAll,
        h("h2", {}, "Your buildings"), list];
    }
    return [this.buildingDetail(b), h("h2", {}, "Your buildings"), list];
  }

  buildingDetail(b) {
    const m = this.model;
    const def = m.buildings.get(b.building);
    const level = m.level(b);
    const next = m.nextLevel(b);
    const out = [h("h2", { class: "with-icon" }, this.icon(def.icon), `${def.name}, level ${b.level}`)];
    if (def.description) out.push(h("p", {}, def.description));
    if (b.upgrade) {
      const left = b.upgrade.ends_ms - m.now();
      const lvl = def.levels[b.upgrade.to_level - 1];
      const price = m.speedUpCost(left, lvl && lvl.speed_up);
      out.push(h("h3", {}, b.level === 0 ? "Under construction" : `Upgrading to level ${b.upgrade.to_level}`),
        this.bar(b.upgrade.started_ms, b.upgrade.ends_ms, `${def.name} construction`),
        h("div", { class: "row" },
          price !== null ? this.button(`Speed up: ${price} ${m.name(m.data.premium_resource)}`, "speed_up", { id: b.id },
            { disabled: m.amount(m.data.premium_resource) < price }) : h("span", {}, "Cannot be sped up"),
          this.button(`Cancel (${m.data.cancel_refund_percent}% back)`, "cancel", { id: b.id })));
    }
    const p = m.derived.producing && m.derived.producing[b.id];
    if (p) {
      const stalled = (m.derived.stalled || []).includes(b.id);
      out.push(h("h3", {}, "Production"),
        h("p", {}, `${number(p.per_hour)} ${m.name(p.resource)} an hour; holds up to ${number(p.capacity)}.`,
          stalled ? " Stalled: an input ran out." : ""),
        level && level.production && Object.keys(level.production.consumes || {}).length
          ? h("p", {}, "Uses an hour: ", this.amounts(level.production.consumes)) : null,
        h("div", { class: "row" }, h("span", {}, "Ready: ", h("strong", { dataset: { stored: String(b.id) } }, number(m.stored(b)))),
          this.button(`Collect ${m.name(p.resource)}`, "collect", { id: b.id })));
    }
    if (level && Object.keys(level.provides || {}).length) out.push(h("p", {}, "Provides: ", this.amounts(level.provides)));
    if (level && Object.keys(level.draws || {}).length) out.push(h("p", {}, "Draws: ", this.amounts(level.draws)));
    if (level && Object.keys(level.storage || {}).length) out.push(h("p", {}, "Stores: ", this.amounts(level.storage)));
    if (!b.upgrade) {
      if (next) {
        out.push(h("h3", {}, `Level ${b.level + 1}`), h("p", {}, "Costs ", this.amounts(next.cost, true),
          `; takes ${duration(next.build_seconds)}.`), this.requires(next.requires_text),
          this.button(`Upgrade to level ${b.level + 1}`, "upgrade", { id: b.id }, { disabled: !m.canPay(next.cost) }));
      } else {
        out.push(h("p", {}, "At the highest level."));
      }
    }
    out.push(h("div", { class: "row" }, this.button("Move", null, null, { run: () => this.game.startPlace(b.building, b.id) })));
    // Work done in this building: training, research, jobs.
    const units = m.data.units.filter((u) => u.building === b.building);
    if (units.length) out.push(h("h3", {}, "Train"), this.trainList(units, b));
    const research = m.data.research.filter((r) => r.building === b.building);
    if (research.length) {
      out.push(h("p", {}, "Research here: ", research.map((r) => r.name).join(", "), ". ",
        this.button("Open research", null, null, { run: () => this.show("research") })));
    }
    const jobs = m.data.jobs.filter((j) => j.building === b.building);
    if (jobs.length) out.push(h("h3", {}, "Jobs"), this.jobList(jobs, b));
    return out;
  }

  placing() {
    const m = this.model;
    const g = this.game.view.ghost;
    const def = m.buildings.get(g.type);
    const fit = m.fits(g.type, g.x, g.y, g.moving);
    const words = { ok: "Fits here.", collision: "Overlaps another building.", out_of_bounds: "Sticks out of the grid." };
    return [h("h2", { class: "with-icon" }, this.icon(def.icon), g.moving ? `Moving ${def.name}` : `Placing ${def.name}`),
      h("p", {}, `Size ${def.size.w} by ${def.size.h}. Click or tap the grid to move it (arrow keys too); `,
        "click it again, press Enter or use the button to place it."),
      h("p", { class: fit === "ok" ? "fit ok" : "fit bad", role: "status" }, `At ${g.x}, ${g.y}: ${words[fit]}`),
      h("div", { class: "row" },
        this.button(g.moving ? "Move here" : "Place here", null, null, { run: () => this.game.place(), disabled: fit !== "ok" }),
        this.button("Cancel", null, null, { run: () => this.game.cancelPlace() }))];
  }

  panel_build() {
    const m = this.model;
    return [h("h2", {}, "Build"), h("ul", { class: "list" }, m.data.buildings.map((def) => {
      const { have, max } = m.count(def.id);
      const first = def.levels[0];
      const full = have >= max;
      return h("li", { class: "card" },
        h("h3", { class: "with-icon" }, this.icon(def.icon), def.name),
        def.description ? h("p", {}, def.description) : null,
        h("p", {}, `Size ${def.size.w} by ${def.size.h}; you have ${have} of ${max === Infinity ? "any number" : max}.`),
        h("p", {}, "Costs ", this.amounts(first.cost, true), `; takes ${duration(first.build_seconds)}.`),
        this.requires(first.requires_text),
        this.button(full ? "Limit reached" : `Place ${def.name}`, null, null, {
          disabled: full, run: () => this.game.startPlace(def.id, null) }));
    }))];
  }

  // ------------------------------------------------------------ army

  trainList(units, building) {
    const m = this.model;
    return h("ul", { class: "list" }, units.map((u) => {
      const args = { unit: u.id, count: 1 };
      if (building && m.data.work && m.data.work.training === "per_building") args.building_id = building.id;
      const stats = (m.derived.unit_stats || {})[u.id] || {};
      return h("li", { class: "card" },
        h("h3", { class: "with-icon" }, this.icon(u.icon), `${u.name} (you have ${(m.state.units || {})[u.id] || 0})`),
        u.description ? h("p", {}, u.description) : null,
        Object.keys(stats).length ? h("p", { class: "stats" }, Object.entries(stats).map(([k, v]) => `${k} ${v}`).join(", ")) : null,
        h("p", {}, "Costs ", this.amounts(u.cost, true), `; ${duration(u.train_seconds)} each; housing ${u.housing}.`),
        this.requires(u.requires_text),
        h("div", { class: "row" },
          this.button(`Train 1 ${u.name}`, "train", args, { disabled: !m.canPay(u.cost) }),
          this.button("Train 5", "train", { ...args, count: 5 }, { aria: `Train 5 ${u.name}` })));
    }));
  }

  panel_army() {
    const m = this.model;
    const out = [h("h2", {}, "Army")];
    const owned = Object.entries(m.state.units || {}).filter(([, n]) => n > 0);
    out.push(h("p", {}, owned.length ? ["Your units: ", this.amounts(Object.fromEntries(owned))] : "No units yet."));
    const training = m.timers().filter((t) => t.kind === "training");
    if (training.length) {
      out.push(h("h3", {}, "Training"), h("ul", { class: "list" }, training.map((t) =>
        h("li", {}, t.label, this.bar(t.start, t.end, `${t.label} training`)))));
      const types = [...new Set(m.state.training.map((t) => t.building))];
      for (const type of types) {
        const left = Math.max(...m.state.training.filter((t) => t.building === type).map((t) => t.ends_ms)) - m.now();
        const price = m.speedUpCost(left);
        out.push(this.button(`Finish ${m.name(type)} training: ${price} ${m.name(m.data.premium_resource)}`, "speed_up_training",
          { building: type }));
      }
    }
    out.push(h("h3", {}, "Train"), this.trainList(m.data.units, null));
    return out;
  }

  // ------------------------------------------------------------ research

  panel_research() {
    const m = this.model;
    const out = [h("h2", {}, "Research")];
    for (const t of m.timers().filter((t) => t.kind === "research")) {
      const def = m.research.get(t.id);
      const lvl = def && def.levels[(m.state.research_running.find((r) => r.research === t.id) || {}).level - 1];
      const price = m.speedUpCost(t.end - m.now(), lvl && lvl.speed_up);
      out.push(h("div", { class: "card running" }, h("h3", {}, `Researching ${t.label}`), this.bar(t.start, t.end, `${t.label} research`),
        h("div", { class: "row" },
          price !== null ? this.button(`Speed up: ${price} ${m.name(m.data.premium_resource)}`, "speed_up_research", { research: t.id }) : null,
          this.button(`Cancel (${m.data.cancel_refund_percent}% back)`, "cancel_research", { research: t.id }))));
    }
    out.push(h("ul", { class: "list tree" }, m.data.research.map((r) => {
      const have = (m.state.research || {})[r.id] || 0;
      const next = r.levels[have];
      return h("li", { class: "card" },
        h("h3", { class: "with-icon" }, this.icon(r.icon), `${r.name}: level ${have} of ${r.levels.length}`),
        r.description ? h("p", {}, r.description) : null,
        h("p", {}, `Studied in: ${m.name(r.building)}.`),
        next ? [h("p", {}, "Next level costs ", this.amounts(next.cost, true), `; takes ${duration(next.research_seconds)}.`),
          this.requires(next.requires_text),
          this.button(`Research ${r.name} level ${have + 1}`, "research", { research: r.id }, { disabled: !m.canPay(next.cost) })]
          : h("p", {}, "Fully researched."));
    })));
    return out;
  }

  // ------------------------------------------------------------ store

  panel_store() {
    const m = this.model;
    const out = [h("h2", {}, "Store")];
    const offers = m.data.offers.filter((o) => m.offerOpen(o));
    out.push(h("ul", { class: "list" }, offers.map((o) => h("li", { class: "card" },
      h("h3", { class: "with-icon" }, this.icon(o.icon), o.name),
      o.description ? h("p", {}, o.description) : null,
      h("p", {}, "Gives: ", this.grants(o.grants)),
      h("p", {}, "Price: ", this.amounts(o.price, true),
        o.limit ? ` (bought ${(m.state.purchases || {})[o.id] || 0} of ${o.limit})` : ""),
      this.requires(o.requires_text),
      this.button(`Buy ${o.name}`, "buy", { offer: o.id }, { disabled: !m.canPay(o.price) })))));
    const items = Object.entries(m.state.items || {}).filter(([, n]) => n > 0);
    out.push(h("h2", {}, "Your items"));
    if (!items.length) out.push(h("p", {}, "No items."));
    out.push(h("ul", { class: "list" }, items.map(([id, n]) => {
      const def = m.items.get(id);
      if (!def) return null;
      return h("li", { class: "card" }, h("h3", { class: "with-icon" }, this.icon(def.icon), `${def.name} x${n}`),
        def.description ? h("p", {}, def.description) : null,
        def.use ? [h("p", {}, "Using it gives: ", this.grants(def.use)), this.button(`Use ${def.name}`, "use_item", { item: id })]
          : h("p", {}, "A keepsake."));
    })));
    return out;
  }

  // ------------------------------------------------------------ goals

  panel_goals() {
    const m = this.model;
    const out = [];
    const daily = m.daily();
    if (daily) {
      out.push(h("h2", {}, "Daily reward"), h("p", {}, daily.claimed
        ? `Claimed today. Streak: ${daily.streak} day${daily.streak === 1 ? "" : "s"}.`
        : [`Day ${daily.day} of ${daily.days}: `, this.grants(daily.reward)]),
      daily.claimed ? null : this.button("Claim today's reward", "claim_daily", {}));
    }
    if (m.data.quests.length) {
      const ready = new Set(m.ready.quests);
      const claimed = new Set(m.state.quests_claimed || []);
      const open = m.data.quests.filter((q) => !claimed.has(q.id));
      out.push(h("h2", {}, "Quests"), h("ul", { class: "list" }, open.map((q) => h("li", { class: ready.has(q.id) ? "card ready" : "card" },
        h("h3", {}, q.name, ready.has(q.id) ? " (done!)" : ""),
        q.description ? h("p", {}, q.description) : null,
        h("p", {}, "Goal: ", q.goal_text), this.requires(q.requires_text),
        h("p", {}, "Reward: ", this.grants(q.rewards)),
        this.button(`Claim ${q.name}`, "claim_quest", { quest: q.id }, { disabled: !ready.has(q.id) })))),
      h("p", {}, `${claimed.size} claimed.`));
    }
    const rows = m.achievementRows();
    if (rows.length) {
      out.push(h("h2", {}, "Achievements"), h("ul", { class: "list" }, rows.map((r) => h("li", { class: r.claimable ? "card ready" : "card" },
        h("h3", { class: "with-icon" }, this.icon(r.def.icon), `${r.def.name}: tier ${r.claimed} of ${r.def.tiers.length}`),
        r.def.description ? h("p", {}, r.def.description) : null,
        r.tier ? [h("p", {}, `${number(r.value)} of ${number(r.tier.at)}. Reward: `, this.grants(r.tier.rewards)),
          this.button(`Claim ${r.def.name}`, "claim_achievement", { achievement: r.def.id }, { disabled: !r.claimable })]
          : h("p", {}, "Every tier claimed.")))));
    }
    return out;
  }

  // ------------------------------------------------------------ jobs

  jobList(jobs, building) {
    const m = this.model;
    return h("ul", { class: "list" }, jobs.map((j) => {
      const args = { job: j.id };
      if (building) args.building_id = building.id;
      const inputs = { ...(j.inputs.resources || {}), ...(j.inputs.items || {}), ...(j.inputs.units || {}) };
      return h("li", { class: "card" },
        h("h3", { class: "with-icon" }, this.icon(j.icon), j.name),
        j.description ? h("p", {}, j.description) : null,
        h("p", {}, "Takes ", this.amounts(inputs, true), `; lasts ${duration(j.seconds)}; in a ${m.name(j.building)}.`),
        h("p", {}, "Gives: ", this.grants(j.outputs)),
        this.requires(j.requires_text),
        this.button(`Start ${j.name}`, "start_job", args));
    }));
  }

  panel_jobs() {
    const m = this.model;
    const out = [h("h2", {}, "Jobs")];
    for (const t of m.timers().filter((t) => t.kind === "job")) {
      const def = m.jobs.get(t.id);
      const price = m.speedUpCost(t.end - m.now(), def && def.speed_up);
      out.push(h("div", { class: "card running" }, h("h3", {}, `${t.label} (in ${m.name(m.building(t.building_id) ? m.building(t.building_id).building : "")})`),
        this.bar(t.start, t.end, `${t.label}`),
        h("div", { class: "row" },
          price !== null ? this.button(`Speed up: ${price} ${m.name(m.data.premium_resource)}`, "speed_up_job", { building_id: t.building_id }) : null,
          this.button(`Cancel (${m.data.cancel_refund_percent}% back)`, "cancel_job", { building_id: t.building_id }))));
    }
    out.push(this.jobList(m.data.jobs, null));
    return out;
  }

  // ------------------------------------------------------------ custom actions

  // Each action with its arguments as the title declares them (a number
  // within its bounds, yes or no, a choice); what the player enters is
  // kept across redraws.
  panel_actions() {
    const m = this.model;
    const ready = new Set(m.ready.actions);
    const kept = (this.extra.args ||= {});
    return [h("h2", {}, "Actions"), h("ul", { class: "list" }, Object.entries(m.data.actions).map(([id, a]) => {
      const name = a.name || words(id);
      const values = (kept[id] ||= {});
      const inputs = Object.entries(a.args || {}).map(([arg, d]) => this.argInput(id, arg, d, values));
      return h("li", { class: "card" }, h("h3", {}, name), a.description ? h("p", {}, a.description) : null,
        this.requires(a.requires_text),
        h("form", { class: "action-form", onsubmit: (e) => {
          e.preventDefault();
          const args = {};
          for (const [arg, d] of Object.entries(a.args || {})) args[arg] = argValue(d, values[arg] ?? d.default);
          this.game.act("custom", { name: id, args });
        } }, inputs, h("button", { type: "submit", id: `do-${id}`, disabled: !ready.has(id) }, `Do: ${name}`)));
    }))];
  }

  // One argument's input; its value lives in `values` (kept across redraws).
  argInput(action, arg, d, values) {
    const id = `arg-${action}-${arg}`;
    const label = d.label || words(arg);
    const value = values[arg] ?? d.default;
    const keep = (e) => { values[arg] = e.target.type === "checkbox" ? e.target.checked : e.target.value; };
    if (d.type === "boolean") {
      return h("div", { class: "row" }, h("label", { for: id },
        h("input", { id, type: "checkbox", checked: !!value, onchange: keep }), ` ${label}`));
    }
    if (d.type === "choice") {
      return h("div", { class: "row" }, h("label", { for: id }, label),
        h("select", { id, required: true, onchange: keep },
          value === undefined ? h("option", { value: "", selected: true }, "choose") : null,
          d.one_of.map((c) => h("option", { value: c, selected: c === value }, words(c)))));
    }
    return h("div", { class: "row" }, h("label", { for: id }, `${label} (${d.accepts})`),
      h("input", { id, type: "number", min: d.min, max: d.max, step: 1, required: true, inputmode: "numeric",
        value: value ?? "", oninput: keep }));
  }

  // ------------------------------------------------------------ clan

  // Runs a request that changes something (keyed), shows a refusal in
  // words, and returns the result or null.
  async change(action, args) {
    try {
      return await this.game.net.request(action, args, true);
    } catch (e) {
      this.game.toastError(e);
      return null;
    }
  }

  async loadClan() {
    try {
      this.extra.clan = await this.game.ask("clan_info", {});
      const chat = await this.game.ask("clan_chat", { limit: CHAT_LINES });
      this.extra.chat = chat.lines.slice().reverse();
    } catch (e) {
      this.extra.clan = null;
      this.extra.chat = [];
      if (e.code !== "not_in_clan") this.game.toastError(e);
    }
    this.extra.clanLoaded = true;
    if (this.tab === "clan") this.render();
  }

  async pollChat() {
    if (this.tab !== "clan" || !this.extra.clan || this.polling || document.visibilityState !== "visible") return;
    this.polling = true;
    this.polls = (this.polls || 0) + 1;
    try {
      if (this.polls % CLAN_INFO_POLLS === 0) {
        const info = await this.game.ask("clan_info", {});
        if (JSON.stringify(info) !== JSON.stringify(this.extra.clan) && this.tab === "clan") {
          this.extra.clan = info;
          this.render();
        }
      }
      const chat = await this.game.ask("clan_chat", { limit: CHAT_LINES });
      const lines = chat.lines.slice().reverse();
      const last = (l) => (l.length ? l[l.length - 1].seq : 0);
      if (last(lines) !== last(this.extra.chat || [])) {
        this.extra.chat = lines;
        this.renderChat();
      }
    } catch (e) {
      // Out of the clan (kicked, or it was disbanded): show the clan finder.
      if (e.code === "not_in_clan" && this.tab === "clan") {
        this.extra.clan = null;
        this.render();
      }
      // Otherwise the next poll tries again; a lost session shows in the status.
    } finally {
      this.polling = false;
    }
  }

  // A chat line the server pushed: shown at once if it is this clan's and new.
  chatPushed(p) {
    const c = this.extra.clan;
    if (!c || c.clan.id !== p.clan) return;
    const chat = this.extra.chat || [];
    if (chat.some((l) => l.seq === p.seq)) return;
    const line = { seq: p.seq, player: p.player, text: p.text, at_ms: p.at_ms };
    this.extra.chat = [...chat, line].sort((a, b) => a.seq - b.seq).slice(-CHAT_LINES);
    if (this.tab === "clan") this.renderChat();
  }

  // The clan changed (a member joined, left, was promoted...): read it
  // again; a player invited or kicked is told in words.
  clanPushed(p) {
    const me = this.game.player();
    if (p.player === me && p.by !== me) {
      if (p.change === "invited") this.game.toast(`${p.by} invited you to the clan ${p.clan}.`);
      if (p.change === "kicked") this.game.toast(`${p.by} removed you from the clan.`);
    }
    if (this.extra.clanLoaded) this.loadClan();
  }

  // A change on the map the player watches: the map tab reads the bases again.
  mapPushed() {
    if (this.tab === "map") this.render();
  }

  renderChat() {
    const el = document.getElementById("chat-lines");
    if (!el) return;
    const atEnd = el.scrollTop + el.clientHeight >= el.scrollHeight - 4;
    clear(el).append(...(this.extra.chat || []).map((l) =>
      h("li", {}, h("strong", {}, l.player), " ", h("time", { datetime: new Date(l.at_ms).toISOString() },
        new Date(l.at_ms).toLocaleTimeString()), h("br"), l.text)));
    if (atEnd) el.scrollTop = el.scrollHeight;
  }

  panel_clan() {
    const m = this.model;
    const rules = m.data.world.clans;
    if (!this.extra.clanLoaded) {
      this.loadClan();
      return h("p", {}, "Loading…");
    }
    const c = this.extra.clan;
    if (!c) {
      const results = h("ul", { class: "list", id: "clan-results" });
      const search = async () => {
        const prefix = document.getElementById("clan-search").value.trim();
        try {
          const r = await this.game.ask("clan_search", { prefix, limit: 20 });
          clear(results).append(...r.clans.map((x) => h("li", { class: "card" },
            h("h3", {}, `${x.name} (${x.members} member${x.members === 1 ? "" : "s"})`),
            x.description ? h("p", {}, x.description) : null,
            h("button", { onclick: async () => {
              const j = await this.change("clan_join", { clan: x.id });
              if (j) {
                this.game.toast(j.joined ? `You joined ${x.name}.` : `You asked to join ${x.name}.`);
                this.extra.clanLoaded = false;
                this.render();
              }
            } }, x.open ? `Join ${x.name}` : `Ask to join ${x.name}`))));
          if (!r.clans.length) results.append(h("li", {}, "No clan by that name."));
        } catch (e) {
          this.game.toastError(e);
        }
      };
      return [h("h2", {}, "Clans"), h("p", {}, `A clan holds up to ${rules.capacity} members.`),
        h("form", { class: "stack", id: "clan-find", onsubmit: (e) => { e.preventDefault(); search(); } },
          h("label", { for: "clan-search" }, "Find a clan by name"),
          h("div", { class: "row" }, h("input", { id: "clan-search", maxlength: 24 }), h("button", { type: "submit" }, "Search"))),
        results,
        h("h2", {}, "Found a clan"),
        h("form", { class: "stack", id: "clan-create", onsubmit: async (e) => {
          e.preventDefault();
          const r = await this.change("clan_create", { name: document.getElementById("clan-name").value.trim(),
            description: document.getElementById("clan-description").value.trim(),
            open: document.getElementById("clan-open").checked });
          if (r) {
            this.extra.clanLoaded = false;
            this.game.refresh();
            this.render();
          }
        } },
        h("label", { for: "clan-name" }, "Name (3 to 24 letters, digits, spaces, _ or -)"),
        h("input", { id: "clan-name", required: true, minlength: 3, maxlength: 24 }),
        h("label", { for: "clan-description" }, "Description"),
        h("input", { id: "clan-description", maxlength: 200 }),
        h("label", {}, h("input", { type: "checkbox", id: "clan-open", checked: true }), " Anyone may join"),
        h("p", {}, "Costs ", this.amounts(rules.create_cost, true)),
        h("button", { type: "submit" }, "Found the clan"))];
    }
    const roles = new Map((c.roles || rules.roles).map((r) => [r.id, r.name]));
    const out = [h("h2", {}, c.clan.name), c.clan.description ? h("p", {}, c.clan.description) : null,
      h("p", {}, `${c.clan.members} of ${rules.capacity} members; ${c.clan.open ? "anyone may join" : "by invitation or request"}.`),
      h("details", {}, h("summary", {}, "Members"), h("ul", { class: "list" }, c.members.map((x) =>
        h("li", {}, `${x.player} (${roles.get(x.role) || x.role})`))))];
    if (c.asks && c.asks.length) {
      out.push(h("h3", {}, "Asking to join"), h("ul", { class: "list" }, c.asks.map((a) => h("li", {},
        `${a.player} `, h("button", { onclick: async () => {
          if (await this.change("clan_accept", { player: a.player })) {
            this.extra.clanLoaded = false;
            this.render();
          }
        } }, `Accept ${a.player}`)))));
    }
    const chatList = h("ol", { id: "chat-lines", class: "chat", "aria-label": "Clan chat", "aria-live": "polite", tabindex: 0 });
    out.push(h("h3", {}, "Chat"), chatList,
      h("form", { class: "row", onsubmit: async (e) => {
        e.preventDefault();
        const input = document.getElementById("chat-text");
        const text = input.value.trim();
        if (!text) return;
        const r = await this.change("clan_chat_post", { text });
        if (r) {
          input.value = "";
          this.extra.chat = [...(this.extra.chat || []), r.line].slice(-CHAT_LINES);
          this.renderChat();
        }
      } },
      h("label", { for: "chat-text", class: "visually-hidden" }, "Message"),
      h("input", { id: "chat-text", maxlength: 500, autocomplete: "off", placeholder: "Say something to your clan" }),
      h("button", { type: "submit", id: "chat-send" }, "Send")));
    const others = c.members.filter((x) => x.player !== this.game.player());
    if (rules.gifts && others.length) out.push(...this.giftForm(rules.gifts, others));
    out.push(h("button", { class: "quiet", onclick: async () => {
      if (await this.change("clan_leave", {})) {
        this.extra.clanLoaded = false;
        this.render();
      }
    } }, "Leave the clan"));
    queueMicrotask(() => this.renderChat());
    return out;
  }

  // Give a clan member resources, as the title's world.clans.gifts allows.
  giftForm(gifts, others) {
    const m = this.model;
    const kinds = Object.entries(gifts.resources);
    const most = () => gifts.resources[document.getElementById("gift-resource").value] || 1;
    return [h("h3", {}, "Give"),
      h("p", {}, `Up to ${gifts.per_day} gifts a day.`),
      h("form", { class: "stack", id: "clan-gift", onsubmit: async (e) => {
        e.preventDefault();
        const to = document.getElementById("gift-to").value;
        const resource = document.getElementById("gift-resource").value;
        const amount = Number(document.getElementById("gift-amount").value);
        if (await this.change("clan_gift", { to, resources: { [resource]: amount } })) {
          document.getElementById("gift-amount").value = "";
          this.game.refresh();
        }
      } },
      h("label", { for: "gift-to" }, "To"),
      h("select", { id: "gift-to" }, others.map((x) => h("option", { value: x.player }, x.player))),
      h("label", { for: "gift-resource" }, "What"),
      h("select", { id: "gift-resource", onchange: () => { document.getElementById("gift-amount").max = most(); } },
        kinds.map(([r, n]) => h("option", { value: r }, `${m.name(r)} (up to ${number(n)})`))),
      h("label", { for: "gift-amount" }, "How much"),
      h("input", { id: "gift-amount", type: "number", min: 1, max: kinds[0][1], required: true }),
      h("button", { type: "submit", id: "gift-send" }, "Give"))];
  }

  // ------------------------------------------------------------ top scores

  panel_top() {
    const m = this.model;
    const stats = m.data.scores;
    const t = this.extra.top || (this.extra.top = { stat: stats[0], window: "all" });
    const rows = h("ol", { class: "list top", id: "top-rows" }, h("li", {}, "Loading…"));
    const load = async () => {
      try {
        const r = await this.game.ask("top_scores", { stat: t.stat, window: t.window, limit: 20 });
        const me = await this.game.ask("my_rank", { stat: t.stat, window: t.window, around: 0 });
        clear(rows).append(...r.rows.map((x) => h("li", { class: x.player === this.game.player() ? "me" : "" },
          `${x.rank}. ${x.player}: ${number(x.value)}`)));
        if (!r.rows.length) rows.append(h("li", {}, "Nobody yet."));
        if (me.me) rows.append(h("li", { class: "me" }, `You: rank ${me.me.rank}, ${number(me.me.value)}`));
      } catch (e) {
        this.game.toastError(e);
      }
    };
    load();
    const select = (id, label, options, key) => [h("label", { for: id }, label),
      h("select", { id, onchange: (e) => { t[key] = e.target.value; this.render(); } },
        options.map(([v, text]) => h("option", { value: v, selected: t[key] === v }, text)))];
    const windows = [["all", "All time"], ["week", "This week"]];
    if (m.data.world && m.data.world.season) windows.push(["season", "This season"]);
    return [h("h2", {}, "Top scores"),
      h("div", { class: "row" }, select("top-stat", "Score", stats.map((x) => [x, words(x)]), "stat"),
        select("top-window", "Over", windows, "window")), rows];
  }

  // ------------------------------------------------------------ map

  panel_map() {
    const m = this.model;
    const map = m.data.world.map;
    const list = h("ul", { class: "list", id: "map-bases" }, h("li", {}, "Loading…"));
    const load = async () => {
      try {
        const r = await this.game.ask("map_near", { radius: 8, limit: 30 });
        this.extra.near = r;
        // Bases placed, moved or raided in view are pushed from now on.
        await this.game.ask("map_watch", { radius: 8 });
        const region = map.regions.find((x) => x.id === (r.at && r.at.region));
        clear(list).append(h("li", {}, `Around ${region ? region.name : "your base"} ${r.at ? `(${r.at.x}, ${r.at.y})` : ""}:`),
          ...r.bases.map((b) => h("li", { class: b.player === this.game.player() ? "card me" : "card" },
            `${b.player === this.game.player() ? "Your base" : b.player} at ${b.position.x}, ${b.position.y}`)));
      } catch (e) {
        this.game.toastError(e);
      }
    };
    load();
    const cd = map.relocate_cooldown_seconds;
    return [h("h2", {}, "The map"), h("p", {}, `Regions: ${map.regions.map((x) => x.name).join(", ")}.`), list,
      h("h2", {}, "Move your base"),
      h("form", { class: "stack", onsubmit: async (e) => {
        e.preventDefault();
        const r = await this.change("relocate", { region: document.getElementById("move-region").value,
          x: Number(document.getElementById("move-x").value), y: Number(document.getElementById("move-y").value) });
        if (r) {
          this.game.toast("Your base moved.");
          this.game.refresh();
          this.render();
        }
      } },
      h("label", { for: "move-region" }, "Region"),
      h("select", { id: "move-region" }, map.regions.map((x) => h("option", { value: x.id }, `${x.name} (${x.width} by ${x.height})`))),
      h("div", { class: "row" }, h("label", { for: "move-x" }, "x"), h("input", { id: "move-x", type: "number", min: 0, value: 0, required: true }),
        h("label", { for: "move-y" }, "y"), h("input", { id: "move-y", type: "number", min: 0, value: 0, required: true })),
      h("p", {}, "Costs ", this.amounts(map.relocate_cost, true), cd ? `; then once every ${duration(cd)}.` : "."),
      h("button", { type: "submit" }, "Move here"))];
  }

  // ------------------------------------------------------------ raids

  panel_raids() {
    const m = this.model;
    const r = this.extra.raid;
    const out = [h("h2", {}, "Raids")];
    if (r && r.outcome) return out.concat(this.raidOutcome(r));
    if (r && r.start) return out.concat(this.raidPlan(r.start));
    const mine = (m.state.battle_log || []).slice().reverse();
    const list = h("ul", { class: "list", id: "raid-targets" }, h("li", {}, "Looking for bases nearby…"));
    (async () => {
      try {
        const near = await this.game.ask("map_near", { radius: 16, limit: 20 });
        const others = near.bases.filter((b) => b.player !== this.game.player());
        clear(list).append(...others.map((b) => h("li", { class: "card" }, `${b.player} at ${b.position.x}, ${b.position.y} `,
          h("button", { onclick: () => this.raidStart(b.player) }, `Raid ${b.player}`))));
        if (!others.length) list.append(h("li", {}, "No other base nearby."));
      } catch (e) {
        this.game.toastError(e);
      }
    })();
    out.push(h("p", {}, `A battle lasts up to ${duration(m.data.world.raids.duration_seconds)}; raids hit bases whose players are away.`),
      h("form", { class: "row", id: "raid-by-name", onsubmit: (e) => {
        e.preventDefault();
        const who = document.getElementById("raid-name").value.trim();
        if (who) this.raidStart(who);
      } }, h("label", { for: "raid-name" }, "Player"), h("input", { id: "raid-name", maxlength: 64, autocomplete: "off" }),
      h("button", { type: "submit" }, "Raid")),
      h("h3", {}, "Bases nearby"), list);
    if (mine.length) {
      out.push(h("h3", {}, "Raids on your base"), h("ul", { class: "list" }, mine.map((e) => h("li", { class: "card" },
        `${new Date(e.at_ms).toLocaleString()}: ${e.attacker} ${e.victory ? "won" : "was beaten off"}; ${e.destruction_percent}% destroyed`,
        Object.keys(e.loot || {}).length ? [", lost ", this.amounts(e.loot)] : "", " ",
        h("button", { class: "quiet", onclick: () => this.raidStart(e.attacker) }, `Raid ${e.attacker} back`)))));
    }
    return out;
  }

  async raidStart(defender) {
    try {
      const start = await this.game.net.request("raid_start", { defender }, true);
      this.extra.raid = { start };
    } catch (e) {
      this.game.toastError(e);
    }
    this.render();
  }

  raidPlan(start) {
    const m = this.model;
    const base = start.base;
    const owned = Object.entries(m.state.units || {}).filter(([, n]) => n > 0);
    const server = !!m.data.world.raids.server_decides;
    const out = [h("h3", {}, `Raiding ${start.defender} (level ${base.level})`),
      h("p", {}, `Their base: ${base.buildings.length} buildings; defenders: `,
        Object.keys(base.units || {}).length ? this.amounts(base.units) : "none"),
      h("p", {}, "You may take up to: ", this.amounts(start.lootable)),
      this.bar(Date.now() + this.model.offset, start.battle_ends_ms, "Time left to attack")];
    if (!owned.length) out.push(h("p", {}, "You have no units to send."));
    const inputs = owned.map(([id, n]) => h("div", { class: "row" }, h("label", { for: `send-${id}` }, `${m.name(id)} (of ${n})`),
      h("input", { id: `send-${id}`, type: "number", min: 0, max: n, value: n, dataset: { unit: id } })));
    out.push(h("form", { class: "stack", id: "raid-plan", onsubmit: async (e) => {
      e.preventDefault();
      const units = {};
      for (const i of e.target.querySelectorAll("input[data-unit]")) {
        const n = Math.max(0, Math.min(Number(i.max), Math.floor(Number(i.value) || 0)));
        if (n) units[i.dataset.unit] = n;
      }
      try {
        const r = await this.game.net.request("raid_end", { raid: start.raid, units }, true);
        this.extra.raid = { outcome: r, shown: 0 };
        this.render();
        this.playBack();
        this.game.refresh();
      } catch (err) {
        this.game.toastError(err);
      }
    } }, h("h3", {}, "Send"), inputs, h("button", { type: "submit", disabled: !owned.length || !server }, "Attack")),
    server ? null : h("p", {}, "This game's battles need a battle client of their own."));
    return out;
  }

  // The battle log, entry by entry, then the outcome.
  playBack() {
    const r = this.extra.raid;
    clearInterval(this.playing);
    this.playing = setInterval(() => {
      if (!this.extra.raid || this.extra.raid !== r) return clearInterval(this.playing);
      const log = r.outcome.result.log || [];
      r.shown = Math.min(log.length, r.shown + 1);
      const list = document.getElementById("battle-log");
      if (list && r.shown <= log.length) {
        list.append(this.logLine(log[r.shown - 1]));
        list.lastChild.scrollIntoView({ block: "nearest" });
      }
      if (r.shown >= log.length) {
        clearInterval(this.playing);
        const end = document.getElementById("raid-result");
        if (end) end.hidden = false;
      }
    }, Math.min(PLAYBACK_MS, PLAYBACK_TOTAL_MS / Math.max(1, (r.outcome.result.log || []).length)));
  }

  logLine(e) {
    return h("li", {}, h("time", {}, `${e.t ?? ""}s`), " ", e.text || JSON.stringify(e));
  }

  raidOutcome(r) {
    const res = r.outcome.result;
    const log = res.log || [];
    return [h("h3", {}, "The battle"),
      h("ol", { class: "list log", id: "battle-log", "aria-live": "polite" }, log.slice(0, r.shown).map((e) => this.logLine(e))),
      h("div", { id: "raid-result", class: "card", hidden: r.shown < log.length },
        h("h3", {}, res.victory ? "Victory!" : "Defeat"),
        h("p", {}, `${res.destruction_percent}% destroyed in ${res.seconds}s.`),
        Object.keys(res.loot || {}).length ? h("p", {}, "Loot: ", this.amounts(res.loot)) : null,
        Object.keys(res.units_used || {}).length ? h("p", {}, "Lost: ", this.amounts(res.units_used)) : h("p", {}, "No units lost."),
        h("button", { onclick: () => { this.extra.raid = null; this.render(); } }, "Done"))];
  }

  // ------------------------------------------------------------ log

  note(text, kind = "info") {
    this.log.unshift({ text, kind, at: new Date() });
    this.log.length = Math.min(this.log.length, 100);
    if (this.tab === "log") this.render();
  }

  panel_log() {
    return [h("h2", {}, "What happened"), h("ol", { class: "list log" }, this.log.map((l) =>
      h("li", { class: l.kind }, h("time", {}, l.at.toLocaleTimeString()), " ", l.text)))];
  }
}
