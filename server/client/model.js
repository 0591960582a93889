// The player's game as the client knows it: the title's data (from
// GET /v1/{title}/data/{version}), the last state the server sent, and the
// server's clock. Everything shown comes from here; nothing in the client
// names anything of a particular title.

function byId(list) {
  const m = new Map();
  for (const x of list || []) m.set(x.id, x);
  return m;
}

export class Model {
  constructor(data) {
    this.setData(data);
    this.state = null;
    this.derived = null;
    this.ready = { quests: [], actions: [] };
    this.offset = 0; // server clock minus local clock, in ms
  }

  setData(data) {
    this.data = data;
    this.resources = byId(data.resources);
    this.capacities = byId(data.capacities);
    this.buildings = byId(data.buildings);
    this.units = byId(data.units);
    this.research = byId(data.research);
    this.items = byId(data.items);
    this.offers = byId(data.offers);
    this.quests = byId(data.quests);
    this.loot = byId(data.loot);
    this.modifiers = byId(data.modifiers);
    this.jobs = byId(data.jobs);
    this.achievements = byId(data.achievements);
  }

  // A state answer (login or get_state): the state is as of the server's
  // clock, which sets the offset the timers run on.
  setState(answer) {
    this.state = answer.state;
    this.derived = answer.derived;
    this.ready = answer.ready || { quests: [], actions: [] };
    this.offset = answer.state.clock_ms - Date.now();
  }

  now() {
    return Date.now() + this.offset;
  }

  asset(path) {
    if (!path) return null;
    const rel = path.replace(/^assets\//, "");
    return `/v1/${this.data.id}/assets/${this.data.content_version}/${rel.split("/").map(encodeURIComponent).join("/")}`;
  }

  // The definition of an id of any named kind, or undefined.
  lookup(id) {
    for (const m of [this.resources, this.buildings, this.units, this.items, this.research, this.capacities]) {
      const x = m.get(id);
      if (x) return x;
    }
    return undefined;
  }

  // The display name of an id of any kind.
  name(id) {
    const x = this.lookup(id);
    return x ? x.name : id;
  }

  icon(id) {
    const x = this.lookup(id);
    return x ? x.icon : null;
  }

  amount(resource) {
    return (this.state.resources || {})[resource] || 0;
  }

  canPay(cost) {
    return Object.entries(cost || {}).every(([r, n]) => this.amount(r) >= n);
  }

  level(b) {
    const def = this.buildings.get(b.building);
    return def ? def.levels[b.level - 1] : null;
  }

  nextLevel(b) {
    const def = this.buildings.get(b.building);
    return def ? def.levels[b.level] : null;
  }

  building(id) {
    return this.state.buildings.find((b) => b.id === id);
  }

  headquartersLevel() {
    const hq = this.state.buildings.find((b) => b.building === this.data.headquarters);
    return hq ? hq.level : 0;
  }

  // How many of a building type there are, and how many the headquarters'
  // level allows.
  count(type) {
    const def = this.buildings.get(type);
    const have = this.state.buildings.filter((b) => b.building === type).length;
    const hq = Math.max(1, this.headquartersLevel());
    const max = def.max_count ? def.max_count[Math.min(hq, def.max_count.length) - 1] : Infinity;
    return { have, max };
  }

  // Whether a building of size (w, h) fits at (x, y), ignoring building
  // `ignore` (the one being moved): "ok", "out_of_bounds" or "collision".
  fits(type, x, y, ignore) {
    const def = this.buildings.get(type);
    const { w, h } = def.size;
    const grid = this.data.grid;
    if (x < 0 || y < 0 || x + w > grid.width || y + h > grid.height) return "out_of_bounds";
    for (const b of this.state.buildings) {
      if (b.id === ignore) continue;
      const s = this.buildings.get(b.building).size;
      if (x < b.x + s.w && b.x < x + w && y < b.y + s.h && b.y < y + h) return "collision";
    }
    return "ok";
  }

  // The premium price of finishing `remainingMs` of work now.
  speedUpCost(remainingMs, rule) {
    let per = this.data.speed_up_seconds_per_premium;
    if (rule === false) return null;
    if (rule && typeof rule === "object" && rule.seconds_per_premium) per = rule.seconds_per_premium;
    const perMs = Math.max(1, per) * 1000;
    return Math.max(1, Math.ceil(Math.max(0, remainingMs) / perMs));
  }

  // What a producer holds now (stored plus what it made since).
  stored(b) {
    const p = this.derived.producing && this.derived.producing[b.id];
    if (!p) return b.stored || 0;
    const made = Math.floor((p.per_hour * Math.max(0, this.now() - b.since_ms)) / 3600000);
    return Math.min(p.capacity, (b.stored || 0) + made);
  }

  // Every timer running, as {kind, label, start, end, ...}.
  timers() {
    const s = this.state;
    const out = [];
    for (const b of s.buildings) {
      if (b.upgrade) {
        out.push({ kind: "building", id: b.id, label: `${this.name(b.building)} to level ${b.upgrade.to_level}`,
          start: b.upgrade.started_ms, end: b.upgrade.ends_ms });
      }
    }
    for (const r of s.research_running || []) {
      out.push({ kind: "research", id: r.research, building_id: r.building_id,
        label: `${this.name(r.research)} level ${r.level}`, start: r.started_ms, end: r.ends_ms });
    }
    // A training queue's orders run one after another: each starts when the
    // one before it in the same queue ends.
    const queueEnd = new Map();
    for (const t of s.training || []) {
      const q = t.building_id != null ? `b${t.building_id}` : `t${t.building}`;
      const def = this.units.get(t.unit);
      const start = queueEnd.has(q) ? queueEnd.get(q) : t.ends_ms - (def ? def.train_seconds * 1000 : 0);
      queueEnd.set(q, t.ends_ms);
      out.push({ kind: "training", id: t.unit, building: t.building, building_id: t.building_id,
        label: this.name(t.unit), start, end: t.ends_ms });
    }
    for (const j of s.jobs || []) {
      const def = this.jobs.get(j.job);
      out.push({ kind: "job", id: j.job, building_id: j.building_id, label: def ? def.name : j.job,
        start: j.started_ms, end: j.ends_ms });
    }
    for (const [id, m] of Object.entries(s.modifiers || {})) {
      const def = this.modifiers.get(id);
      const dur = def ? def.duration_seconds * 1000 : 0;
      out.push({ kind: "modifier", id, label: def ? def.name : id, stacks: m.stacks, start: m.ends_ms - dur, end: m.ends_ms });
    }
    return out;
  }

  // The earliest end of a running timer still ahead, or null.
  nextEnd() {
    const now = this.now();
    let next = null;
    for (const t of this.timers()) if (t.end > now && (next === null || t.end < next)) next = t.end;
    return next;
  }

  // Achievements: the next tier of each, and whether its counter reached it.
  achievementRows() {
    const out = [];
    for (const a of this.data.achievements || []) {
      const claimed = (this.state.achievements || {})[a.id] || 0;
      const value = (this.state.counters || {})[a.counter] || 0;
      const tier = a.tiers[claimed];
      out.push({ def: a, claimed, value, tier, claimable: !!tier && value >= tier.at });
    }
    return out;
  }

  // Today's daily reward: the UTC day and whether it was claimed.
  daily() {
    const d = this.data.daily;
    if (!d) return null;
    const today = Math.floor(this.now() / 86400000);
    const s = this.state.daily || { streak: 0 };
    const claimed = s.last_day === today;
    const continues = s.last_day === today - 1;
    const streak = claimed ? s.streak : continues ? s.streak + 1 : 1;
    const rewards = d.rewards || [];
    let index = Math.min(streak, rewards.length) - 1;
    if (d.after_last === "restart" && rewards.length) index = (streak - 1) % rewards.length;
    return { claimed, streak, reward: rewards[index], day: index + 1, days: rewards.length };
  }

  xpLevel() {
    const levels = this.data.xp_levels || [];
    let level = 1;
    for (let i = 0; i < levels.length; i++) if (this.state.xp >= levels[i]) level = i + 1;
    return level;
  }

  offerOpen(o) {
    if (o.limit && (this.state.purchases || {})[o.id] >= o.limit) return false;
    if (o.window) {
      const now = this.now();
      if (now < Date.parse(o.window.start) || now >= Date.parse(o.window.end)) return false;
    }
    return true;
  }
}
