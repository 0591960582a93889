// The base on its grid, drawn on a Canvas 2D: pan (drag, arrow keys), zoom
// (wheel, pinch, + and -), select (click or tap), and a footprint ghost
// that shows where a building would go and whether it fits.

const TILE = 32; // pixels per grid cell at zoom 1
const ZOOM_MIN = 0.25;
const ZOOM_MAX = 3;
const DRAG_PX = 5; // a press that moves less than this is a click
// Frame times kept for the benchmark (docs/benchmarks.md): enough for a
// few seconds of panning.
const FRAMES_KEPT = 2000;

// A stable colour for anything without art.
function hue(id) {
  let h = 0;
  for (const c of id) h = (h * 31 + c.charCodeAt(0)) % 360;
  return h;
}

function initials(name) {
  return name.split(/\s+/).filter(Boolean).slice(0, 2).map((w) => w[0].toUpperCase()).join("");
}

export class BaseView {
  constructor(canvas, model, handlers) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.model = model;
    this.handlers = handlers; // {select(id|null), tile(x, y), changed()}
    this.images = new Map();
    this.selected = null;
    this.ghost = null; // {type, x, y, moving}
    this.zoom = 1;
    this.center = { x: model.data.grid.width / 2, y: model.data.grid.height / 2 };
    this.dirty = true;
    this.pointers = new Map();
    this.frames = [];
    this.lastTimerDraw = 0;
    this.bind();
    new ResizeObserver(() => this.resize()).observe(canvas);
    this.resize();
    const loop = (t) => {
      this.tick(t);
      requestAnimationFrame(loop);
    };
    requestAnimationFrame(loop);
  }

  resize() {
    const r = this.canvas.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    this.canvas.width = Math.max(1, Math.round(r.width * dpr));
    this.canvas.height = Math.max(1, Math.round(r.height * dpr));
    this.dpr = dpr;
    if (!this.fitted && r.width > 0) {
      this.fitted = true;
      this.fit();
    }
    this.dirty = true;
  }

  // Zoom so that the whole grid shows.
  fit() {
    const r = this.canvas.getBoundingClientRect();
    const g = this.model.data.grid;
    this.zoom = Math.min(ZOOM_MAX, Math.max(ZOOM_MIN, Math.min(r.width / (g.width * TILE), r.height / (g.height * TILE))));
    this.center = { x: g.width / 2, y: g.height / 2 };
    this.dirty = true;
  }

  image(path) {
    const url = this.model.asset(path);
    if (!url) return null;
    let img = this.images.get(url);
    if (!img) {
      img = new Image();
      img.onload = () => (this.dirty = true);
      img.src = url;
      this.images.set(url, img);
    }
    return img.complete && img.naturalWidth ? img : null;
  }

  // Screen (CSS pixels) to grid coordinates.
  toGrid(px, py) {
    const r = this.canvas.getBoundingClientRect();
    const s = TILE * this.zoom;
    return { x: (px - r.width / 2) / s + this.center.x, y: (py - r.height / 2) / s + this.center.y };
  }

  pan(dx, dy) {
    const g = this.model.data.grid;
    this.center.x = Math.min(g.width, Math.max(0, this.center.x + dx));
    this.center.y = Math.min(g.height, Math.max(0, this.center.y + dy));
    this.dirty = true;
  }

  zoomBy(f, px, py) {
    const r = this.canvas.getBoundingClientRect();
    const before = this.toGrid(px ?? r.width / 2, py ?? r.height / 2);
    this.zoom = Math.min(ZOOM_MAX, Math.max(ZOOM_MIN, this.zoom * f));
    const after = this.toGrid(px ?? r.width / 2, py ?? r.height / 2);
    this.pan(before.x - after.x, before.y - after.y);
  }

  buildingAt(gx, gy) {
    for (const b of this.model.state.buildings) {
      const s = this.model.buildings.get(b.building).size;
      if (gx >= b.x && gx < b.x + s.w && gy >= b.y && gy < b.y + s.h) return b;
    }
    return null;
  }

  bind() {
    const c = this.canvas;
    c.addEventListener("pointerdown", (e) => {
      c.setPointerCapture(e.pointerId);
      this.pointers.set(e.pointerId, { x: e.offsetX, y: e.offsetY, sx: e.offsetX, sy: e.offsetY });
    });
    c.addEventListener("pointermove", (e) => {
      const p = this.pointers.get(e.pointerId);
      if (this.ghost && e.pointerType === "mouse" && !p) {
        const g = this.toGrid(e.offsetX, e.offsetY);
        this.moveGhost(g.x, g.y);
      }
      if (!p) return;
      if (this.pointers.size === 2) {
        const [a, b] = [...this.pointers.values()];
        const before = Math.hypot(a.x - b.x, a.y - b.y);
        p.x = e.offsetX;
        p.y = e.offsetY;
        const after = Math.hypot(a.x - b.x, a.y - b.y);
        if (before > 0) this.zoomBy(after / before, (a.x + b.x) / 2, (a.y + b.y) / 2);
        p.dragged = true;
        return;
      }
      const s = TILE * this.zoom;
      if (Math.hypot(e.offsetX - p.sx, e.offsetY - p.sy) > DRAG_PX) p.dragged = true;
      if (p.dragged) this.pan(-(e.offsetX - p.x) / s, -(e.offsetY - p.y) / s);
      p.x = e.offsetX;
      p.y = e.offsetY;
    });
    const up = (e) => {
      const p = this.pointers.get(e.pointerId);
      this.pointers.delete(e.pointerId);
      if (!p || p.dragged || e.type === "pointercancel") return;
      const g = this.toGrid(e.offsetX, e.offsetY);
      this.click(g.x, g.y);
    };
    c.addEventListener("pointerup", up);
    c.addEventListener("pointercancel", up);
    c.addEventListener("wheel", (e) => {
      e.preventDefault();
      this.zoomBy(Math.exp(-e.deltaY / 500), e.offsetX, e.offsetY);
    }, { passive: false });
    c.addEventListener("keydown", (e) => this.key(e));
  }

  click(gx, gy) {
    if (this.ghost) {
      const x = Math.floor(gx - this.ghostSize().w / 2 + 0.5);
      const y = Math.floor(gy - this.ghostSize().h / 2 + 0.5);
      // A click on the ghost where it stands places it; elsewhere moves it.
      if (x === this.ghost.x && y === this.ghost.y) return this.handlers.place();
      this.ghost.x = x;
      this.ghost.y = y;
      this.dirty = true;
      this.handlers.changed();
      return;
    }
    const b = this.buildingAt(Math.floor(gx), Math.floor(gy));
    this.select(b ? b.id : null);
  }

  select(id) {
    this.selected = id;
    this.dirty = true;
    this.handlers.select(id);
  }

  ghostSize() {
    return this.model.buildings.get(this.ghost.type).size;
  }

  moveGhost(gx, gy) {
    const s = this.ghostSize();
    const x = Math.floor(gx - s.w / 2 + 0.5);
    const y = Math.floor(gy - s.h / 2 + 0.5);
    if (x !== this.ghost.x || y !== this.ghost.y) {
      this.ghost.x = x;
      this.ghost.y = y;
      this.dirty = true;
      this.handlers.changed();
    }
  }

  // Starts placing a building type (or moving building `moving`): the
  // ghost starts at the first free spot near the view's centre.
  startGhost(type, moving) {
    const s = this.model.buildings.get(type).size;
    let at = { x: Math.floor(this.center.x - s.w / 2), y: Math.floor(this.center.y - s.h / 2) };
    const g = this.model.data.grid;
    search: for (let r = 0; r < Math.max(g.width, g.height); r++) {
      for (let dy = -r; dy <= r; dy++) {
        for (let dx = -r; dx <= r; dx++) {
          const x = at.x + dx;
          const y = at.y + dy;
          if (this.model.fits(type, x, y, moving) === "ok") {
            at = { x, y };
            break search;
          }
        }
      }
    }
    this.ghost = { type, x: at.x, y: at.y, moving };
    this.center = { x: at.x + s.w / 2, y: at.y + s.h / 2 };
    this.dirty = true;
    this.canvas.focus();
  }

  stopGhost() {
    this.ghost = null;
    this.dirty = true;
  }

  key(e) {
    const step = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] }[e.key];
    if (step) {
      e.preventDefault();
      if (this.ghost) {
        this.ghost.x += step[0];
        this.ghost.y += step[1];
        this.dirty = true;
        this.handlers.changed();
      } else {
        this.pan(step[0] * 2, step[1] * 2);
      }
    } else if (e.key === "+" || e.key === "=") {
      this.zoomBy(1.25);
    } else if (e.key === "-") {
      this.zoomBy(0.8);
    } else if (e.key === "Enter" && this.ghost) {
      e.preventDefault();
      this.handlers.place();
    } else if (e.key === "Escape") {
      if (this.ghost) this.handlers.cancelPlace();
      else this.select(null);
    } else if (e.key === "n" || e.key === "p") {
      // Next or previous building, for keyboards.
      const list = this.model.state.buildings;
      if (!list.length) return;
      const i = list.findIndex((b) => b.id === this.selected);
      const j = e.key === "n" ? (i + 1) % list.length : (i - 1 + list.length) % list.length;
      const b = list[j];
      const s = this.model.buildings.get(b.building).size;
      this.center = { x: b.x + s.w / 2, y: b.y + s.h / 2 };
      this.select(b.id);
    }
  }

  tick(t) {
    // Timers move: redraw a few times a second while any bar runs, and at
    // once whenever something changed.
    const timers = this.model.state && this.model.state.buildings.some((b) => b.upgrade);
    if (!this.dirty && !(timers && t - this.lastTimerDraw > 250)) return;
    this.lastTimerDraw = t;
    this.dirty = false;
    const start = performance.now();
    this.draw();
    if (this.frames.length >= FRAMES_KEPT) this.frames.shift();
    this.frames.push(performance.now() - start);
  }

  draw() {
    const { ctx, model } = this;
    if (!model.state) return;
    const w = this.canvas.width;
    const h = this.canvas.height;
    const g = model.data.grid;
    const s = TILE * this.zoom * this.dpr;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#1d2421";
    ctx.fillRect(0, 0, w, h);
    ctx.setTransform(s, 0, 0, s, w / 2 - this.center.x * s, h / 2 - this.center.y * s);
    ctx.fillStyle = "#3b4a34";
    ctx.fillRect(0, 0, g.width, g.height);
    // Grid lines only when they are far enough apart to help.
    if (s >= 10) {
      ctx.strokeStyle = "rgba(255,255,255,0.07)";
      ctx.lineWidth = 1 / s;
      ctx.beginPath();
      for (let x = 0; x <= g.width; x++) {
        ctx.moveTo(x, 0);
        ctx.lineTo(x, g.height);
      }
      for (let y = 0; y <= g.height; y++) {
        ctx.moveTo(0, y);
        ctx.lineTo(g.width, y);
      }
      ctx.stroke();
    }
    const now = model.now();
    for (const b of model.state.buildings) this.drawBuilding(b, s, now);
    if (this.ghost) {
      const sz = this.ghostSize();
      const fit = model.fits(this.ghost.type, this.ghost.x, this.ghost.y, this.ghost.moving);
      ctx.fillStyle = fit === "ok" ? "rgba(80,220,120,0.45)" : "rgba(240,70,60,0.5)";
      ctx.fillRect(this.ghost.x, this.ghost.y, sz.w, sz.h);
      ctx.strokeStyle = fit === "ok" ? "#7dffa8" : "#ff8a80";
      ctx.lineWidth = 2 / s;
      ctx.strokeRect(this.ghost.x, this.ghost.y, sz.w, sz.h);
      const img = this.image(model.buildings.get(this.ghost.type).icon);
      if (img) {
        ctx.globalAlpha = 0.6;
        ctx.drawImage(img, this.ghost.x + 0.15, this.ghost.y + 0.15, sz.w - 0.3, sz.h - 0.3);
        ctx.globalAlpha = 1;
      }
    }
  }

  drawBuilding(b, s, now) {
    const { ctx, model } = this;
    const def = model.buildings.get(b.building);
    if (!def) return;
    const { w, h } = def.size;
    ctx.fillStyle = `hsl(${hue(b.building)} 35% 32%)`;
    ctx.fillRect(b.x + 0.05, b.y + 0.05, w - 0.1, h - 0.1);
    const img = this.image(def.icon);
    if (img) {
      ctx.drawImage(img, b.x + 0.12, b.y + 0.12, w - 0.24, h - 0.24);
    } else {
      ctx.fillStyle = "#f4f1e8";
      ctx.font = `${Math.min(w, h) * 0.4}px sans-serif`;
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      ctx.fillText(initials(def.name), b.x + w / 2, b.y + h / 2);
    }
    if (b.id === this.selected) {
      ctx.strokeStyle = "#ffd54a";
      ctx.lineWidth = 3 / s;
      ctx.strokeRect(b.x + 0.02, b.y + 0.02, w - 0.04, h - 0.04);
    }
    // Level badge.
    if (s >= 12) {
      ctx.fillStyle = "rgba(0,0,0,0.65)";
      ctx.fillRect(b.x + 0.05, b.y + 0.05, 0.75, 0.5);
      ctx.fillStyle = "#fff";
      ctx.font = `0.38px sans-serif`;
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      ctx.fillText(String(b.level), b.x + 0.43, b.y + 0.31);
    }
    if (b.upgrade) {
      const f = Math.min(1, Math.max(0, (now - b.upgrade.started_ms) / Math.max(1, b.upgrade.ends_ms - b.upgrade.started_ms)));
      ctx.fillStyle = "rgba(0,0,0,0.7)";
      ctx.fillRect(b.x + 0.1, b.y + h - 0.35, w - 0.2, 0.25);
      ctx.fillStyle = "#4fc3f7";
      ctx.fillRect(b.x + 0.1, b.y + h - 0.35, (w - 0.2) * f, 0.25);
    } else if (model.derived.producing && model.derived.producing[b.id] && model.stored(b) > 0) {
      ctx.fillStyle = "#ffd54a";
      ctx.beginPath();
      ctx.arc(b.x + w - 0.35, b.y + 0.35, 0.22, 0, Math.PI * 2);
      ctx.fill();
    }
  }
}
