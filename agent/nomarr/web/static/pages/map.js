// Map: every recording as a point in a 2-D projection of an embedding space, computed by the
// agent (GET /map: PCA of the normalised embeddings; see docs/console.md for why), coloured by a
// label's score. Hover to see a track, click to play it, drag a rectangle to make a playlist.
// Points are written straight into an ImageData buffer: 100k points draw in a few milliseconds.

import { api, downloadM3U, el, fmtNum, label, play, playAll, showError, trackList, fill } from "../lib.js";

const RAMP = [[44, 62, 143], [63, 167, 214], [246, 213, 92], [237, 85, 59]];

function colour(v) {
  if (v < 0) return [150, 150, 150];
  const x = Math.min(0.9999, Math.max(0, v)) * (RAMP.length - 1);
  const i = Math.floor(x), f = x - i, a = RAMP[i], b = RAMP[i + 1];
  return [a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f, a[2] + (b[2] - a[2]) * f];
}

export async function render(root, ctx) {
  const moods = await api("/moods").catch(() => ({ items: [] }));
  const labelSel = el("select#map-label", { "aria-label": "Colour by" }, el("option", { value: "" }, "No colour"),
    moods.items.map((m) => el("option", { value: m.label, selected: m.label === ctx.query.get("label") }, label(m.label))));
  const canvas = el("canvas#map-canvas", { role: "img", "aria-label": "Map of the library" });
  const tip = el("div.map-tip", { hidden: true });
  const info = el("p.muted.small#map-info", "Loading the map…");
  const selection = el("div.card#map-selection", { style: { marginTop: "16px" } },
    el("p.empty", "Drag a rectangle over the map to make a playlist of the tracks inside (hover: see a track, click: play it)."));
  root.append(
    el("div.page-head", el("div", el("h1", "Map"), info),
      el("div.toolbar", { style: { margin: 0 } }, el("label.field", "Colour by", labelSel),
        el("div.legend", el("span", "low"), el("span.scale"), el("span", "high")))),
    el("div.map-wrap", canvas, tip), selection);

  let data = null;
  let px = null; // Float32Array of screen x, y per point (CSS pixels)
  let grid = null;
  const names = new Map();
  let drag = null;

  async function load() {
    info.textContent = "Loading the map…";
    try {
      const t0 = performance.now();
      data = await api("/map", { query: { label: labelSel.value } });
      const t1 = performance.now();
      draw();
      const t2 = performance.now();
      canvas.dataset.points = String(data.track_ids.length);
      canvas.dataset.fetchMs = String(Math.round(t1 - t0));
      canvas.dataset.drawMs = String(Math.round(t2 - t1));
      info.textContent = `${fmtNum(data.track_ids.length)} recordings · ${data.model} · ${data.method}` +
        (data.explained.length ? ` · axes explain ${(100 * (data.explained[0] + data.explained[1])).toFixed(0)} % of the variance` : "");
    } catch (e) { showError(selection, e); info.textContent = ""; }
  }

  function draw(rect) {
    if (!data) return;
    const w = canvas.clientWidth, h = canvas.clientHeight, dpr = window.devicePixelRatio || 1;
    const W = Math.round(w * dpr), H = Math.round(h * dpr);
    if (canvas.width !== W || canvas.height !== H) { canvas.width = W; canvas.height = H; px = null; }
    const g = canvas.getContext("2d");
    const n = data.x.length;
    const pad = 12;
    if (!px) {
      px = new Float32Array(2 * n);
      const sx = (w - 2 * pad) / 2.4, sy = (h - 2 * pad) / 2.4;
      for (let i = 0; i < n; i++) {
        px[2 * i] = pad + (data.x[i] + 1.2) * sx;
        px[2 * i + 1] = pad + (1.2 - data.y[i]) * sy;
      }
      buildGrid(w, h);
      if (n) canvas.dataset.firstPoint = `${px[0].toFixed(1)},${px[1].toFixed(1)}`; // where a test can point
    }
    const img = g.createImageData(W, H);
    const buf = new Uint32Array(img.data.buffer);
    const dark = matchMedia("(prefers-color-scheme: dark)").matches;
    const bg = dark ? 0xff241d18 : 0xffffffff;
    buf.fill(bg);
    const vals = data.values;
    const lut = new Uint32Array(257);
    for (let i = 0; i <= 256; i++) {
      const [r, gg, b] = i === 256 ? (dark ? [140, 150, 170] : [90, 110, 170]) : colour(i / 255);
      lut[i] = (255 << 24) | (Math.round(b) << 16) | (Math.round(gg) << 8) | Math.round(r);
    }
    const size = Math.round((n < 2000 ? 7 : n < 20000 ? 4 : n < 60000 ? 3 : 2) * Math.min(dpr, 2));
    // draw low scores first so the high ones stay visible on top
    const order = vals ? Array.from({ length: n }, (_, i) => i).sort((a, b) => vals[a] - vals[b]) : null;
    for (let k = 0; k < n; k++) {
      const i = order ? order[k] : k;
      const x = Math.round(px[2 * i] * dpr), y = Math.round(px[2 * i + 1] * dpr);
      const x0 = x - (size >> 1), y0 = y - (size >> 1);
      if (x0 < 0 || y0 < 0 || x0 + size > W || y0 + size > H) continue;
      const c = vals ? (vals[i] < 0 ? lut[256] : lut[Math.round(vals[i] * 255)]) : lut[256];
      for (let dy = 0; dy < size; dy++) {
        const row = (y0 + dy) * W + x0;
        for (let dx = 0; dx < size; dx++) buf[row + dx] = c;
      }
    }
    g.putImageData(img, 0, 0);
    if (rect) {
      g.save();
      g.scale(dpr, dpr);
      g.strokeStyle = "#9b5de5"; g.lineWidth = 1.5; g.setLineDash([5, 4]);
      g.fillStyle = "rgba(155, 93, 229, 0.12)";
      g.fillRect(rect.x, rect.y, rect.w, rect.h);
      g.strokeRect(rect.x, rect.y, rect.w, rect.h);
      g.restore();
    }
  }

  const CELL = 12;
  function buildGrid(w, h) {
    const cols = Math.ceil(w / CELL) + 1, rows = Math.ceil(h / CELL) + 1;
    grid = { cols, rows, cells: new Map() };
    for (let i = 0; i < data.x.length; i++) {
      const key = Math.floor(px[2 * i + 1] / CELL) * cols + Math.floor(px[2 * i] / CELL);
      let c = grid.cells.get(key);
      if (!c) grid.cells.set(key, (c = []));
      c.push(i);
    }
  }

  function nearest(x, y) {
    if (!grid) return -1;
    const cx = Math.floor(x / CELL), cy = Math.floor(y / CELL);
    let best = -1, bd = 64;
    for (let dy = -1; dy <= 1; dy++) for (let dx = -1; dx <= 1; dx++) {
      for (const i of grid.cells.get((cy + dy) * grid.cols + cx + dx) || []) {
        const d = (px[2 * i] - x) ** 2 + (px[2 * i + 1] - y) ** 2;
        if (d < bd) { bd = d; best = i; }
      }
    }
    return best;
  }

  async function nameOf(id) {
    if (!names.has(id)) names.set(id, api(`/tracks/${id}`).catch(() => null));
    return names.get(id);
  }

  const pos = (ev) => { const r = canvas.getBoundingClientRect(); return [ev.clientX - r.left, ev.clientY - r.top]; };
  let hoverTimer = 0;
  canvas.addEventListener("pointermove", (ev) => {
    const [x, y] = pos(ev);
    if (drag) {
      drag.x1 = x; drag.y1 = y;
      draw({ x: Math.min(drag.x0, x), y: Math.min(drag.y0, y), w: Math.abs(x - drag.x0), h: Math.abs(y - drag.y0) });
      return;
    }
    clearTimeout(hoverTimer);
    hoverTimer = setTimeout(async () => {
      const i = nearest(x, y);
      if (i < 0) { tip.hidden = true; return; }
      const t = await nameOf(data.track_ids[i]);
      if (!t) return;
      fill(tip, el("strong", t.title || t.path.split("/").pop()), el("div.muted", t.artist || ""),
        data.values && data.values[i] >= 0 ? el("div", `${label(data.label)} ${data.values[i].toFixed(2)}`) : null);
      tip.style.left = Math.min(x + 14, canvas.clientWidth - 270) + "px";
      tip.style.top = y + 14 + "px";
      tip.hidden = false;
    }, 60);
  });
  canvas.addEventListener("pointerleave", () => { tip.hidden = true; });
  canvas.addEventListener("pointerdown", (ev) => {
    const [x, y] = pos(ev);
    drag = { x0: x, y0: y, x1: x, y1: y };
    canvas.setPointerCapture(ev.pointerId);
  });
  canvas.addEventListener("pointerup", async (ev) => {
    if (!drag) return;
    const d = drag;
    drag = null;
    if (Math.abs(d.x1 - d.x0) < 4 && Math.abs(d.y1 - d.y0) < 4) {
      draw();
      const i = nearest(d.x0, d.y0);
      if (i >= 0) { const t = await nameOf(data.track_ids[i]); if (t) play(t); }
      return;
    }
    const [xa, xb] = [Math.min(d.x0, d.x1), Math.max(d.x0, d.x1)];
    const [ya, yb] = [Math.min(d.y0, d.y1), Math.max(d.y0, d.y1)];
    draw({ x: xa, y: ya, w: xb - xa, h: yb - ya });
    const inside = [];
    for (let i = 0; i < data.x.length; i++) {
      const x = px[2 * i], y = px[2 * i + 1];
      if (x >= xa && x <= xb && y >= ya && y <= yb) inside.push(i);
    }
    if (data.values) inside.sort((a, b) => data.values[b] - data.values[a]);
    await showSelection(inside);
  });

  async function showSelection(inside) {
    if (!inside.length) { fill(selection, el("p.empty", "No point inside; drag over some.")); return; }
    const ids = inside.slice(0, 200).map((i) => data.track_ids[i]);
    try {
      const page = await api("/browse", { query: { id: ids, limit: 200 } });
      const order = new Map(ids.map((id, k) => [id, k]));
      const items = page.items.sort((a, b) => order.get(a.id) - order.get(b.id));
      const name = `Map selection (${items.length})`;
      fill(selection, 
        el("div.page-head", el("div", el("h2", name), el("p.muted.small", `${fmtNum(inside.length)} points selected` + (inside.length > 200 ? "; the first 200 are listed" : ""))),
          el("div", { style: { display: "flex", gap: "8px" } },
            el("button#map-play-all", { type: "button", onclick: () => playAll(items) }, "▶ Play all"),
            el("button.ghost#map-m3u", { type: "button", onclick: () => downloadM3U(name, items) }, "Download M3U"))),
        trackList(items));
    } catch (e) { showError(selection, e); }
  }

  labelSel.addEventListener("change", () => {
    const u = new URL(location.href);
    if (labelSel.value) u.searchParams.set("label", labelSel.value); else u.searchParams.delete("label");
    history.replaceState(null, "", u.pathname + u.search);
    load();
  });
  const ro = new ResizeObserver(() => { px = null; draw(); });
  ro.observe(canvas);
  await load();
  return () => ro.disconnect();
}
