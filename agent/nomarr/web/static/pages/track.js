// Track: play it, see its waveform (with the per-patch timeline and regions when the agent stores
// them), its scores per model with tiers, the bounds that made each tier and provenance, similar
// tracks and the nom: tags in the file.

import { api, basename, el, fmtDuration, label, onPlay, play, playButton, showError, trackList, trackName, fill } from "../lib.js";

export async function render(root, ctx) {
  const id = Number(ctx.params.id);
  let d;
  try {
    d = await api(`/tracks/${id}`);
  } catch (e) {
    showError(root, e);
    return null;
  }
  const wave = el("canvas.wave#waveform", { "aria-label": "Waveform: click to play from there", role: "img" });
  const waveCard = el("div.card.span-12#wave-card", el("h2", "Waveform"), wave, el("p.muted.small#wave-note", "Drawing…"));
  const scores = el("div.card.span-7#scores", el("h2", "Scores"));
  const similar = el("div.card.span-5#similar", el("h2", "Similar tracks"), el("p.muted", "Looking…"));
  const tags = el("div.card.span-12#file-tags", el("h2", "Tags in the file"), el("p.muted", "Reading…"));
  root.append(
    el("div.page-head",
      el("div", el("h1#track-title", trackName(d)),
        el("p.muted", [d.artist, d.album].filter(Boolean).join(" — ") || "Unknown artist"),
        el("p.mono.muted.small", d.path)),
      el("div", { style: { display: "flex", gap: "8px", flexWrap: "wrap" } },
        el("button#play-track", { type: "button", onclick: () => play(d) }, "▶ Play"),
        el("a.button.ghost", { href: `/playlists?seed=${d.id}` }, "Radio from here"))),
    el("div.grid", waveCard, descriptorCard(d), scores, similar, tags));

  drawScores(scores, d);
  loadWave(wave, waveCard, d);
  api("/similar", { method: "POST", body: { track_id: d.id, limit: 10, distinct: true } })
    .then((r) => fill(similar, el("h2", "Similar tracks"), el("p.muted.small", `nearest in ${r.model}`),
      trackList(r.items, (t) => el("span.chip", { title: "cosine similarity" }, t.similarity.toFixed(2)))))
    .catch((e) => { fill(similar, el("h2", "Similar tracks")); similar.append(el("p.muted", e.message)); });
  api(`/tracks/${d.id}/file-tags`).then((ft) => {
    const rows = Object.entries(ft.tags);
    fill(tags, el("h2", "Tags in the file"),
      el("p.small", d.tags_written ? el("span.ok", "✓ The file holds exactly the tags the library wants.")
        : el("span.warn", "The file's tags differ from what the library would write now (the next scan updates them).")),
      ft.error ? el("p.bad", ft.error) : null,
      ft.mood ? el("p", "MOOD: ", el("strong", ft.mood)) : null,
      rows.length ? el("div.tags", rows.map(([k, v]) => el("div", el("span", k), el("span", v)))) : el("p.empty", "No nom: tags in this file."));
  }).catch((e) => showError(tags, e));
  return null;
}

function descriptorCard(d) {
  // Tempo, key, loudness, energy: shown only when the agent stores them (never guessed here).
  const ds = d.descriptors || {};
  const num = (v) => (typeof v === "number" && isFinite(v) ? v : null);
  const bpm = num(d.bpm) ?? num(ds.tempo?.bpm);
  const key = d.key || ds.key?.id3 || null;
  const camelot = d.camelot || ds.key?.camelot || null;
  const lufs = num(ds.loudness?.integrated) ?? num(ds.loudness?.lufs);
  const energy = num(d.energy) ?? num(ds.energy?.value) ?? num(ds.energy);
  const rows = [];
  if (bpm !== null) rows.push(el("dt", "Tempo"), el("dd#tempo", `${bpm.toFixed(1)} BPM`));
  if (key) rows.push(el("dt", "Key"), el("dd", key + (camelot ? ` (${camelot})` : "")));
  if (lufs !== null) rows.push(el("dt", "Loudness"), el("dd", `${lufs.toFixed(1)} LUFS`));
  if (energy !== null) rows.push(el("dt", "Energy"), el("dd", energy.toFixed(2)));
  const facts = [el("dt", "Duration"), el("dd", fmtDuration(d.duration)), el("dt", "Format"),
    el("dd", [d.container, d.codec].filter(Boolean).join(" / ") || "–"), el("dt", "File"), el("dd.mono", basename(d.path))];
  if (d.same_recording?.length) facts.push(el("dt", "Copies"), el("dd", d.same_recording.map((o) => el("a", { href: `/track/${o}` }, "#" + o + " "))));
  return el("div.card.span-12#facts", el("dl.kv", rows, facts));
}

/** Regions as [{start, end}] in seconds, from whichever spelling the agent stores. */
function regionsOf(d) {
  const raw = d.regions || d.descriptors?.regions || [];
  if (!Array.isArray(raw)) return [];
  return raw.map((r) => ({ start: Number(r.start ?? r.start_s), end: Number(r.end ?? r.end_s) }))
    .filter((r) => isFinite(r.start) && isFinite(r.end) && r.end > r.start);
}

async function drawScores(card, d) {
  if (!d.analyses.length) {
    card.append(el("p.empty", d.status === "ok" ? "Not analysed yet." : `This file ${d.status}: ${d.error || ""}`));
    return;
  }
  const bounds = {};
  await Promise.all(d.analyses.map((a) => api(`/models/${encodeURIComponent(a.model)}/stats`)
    .then((s) => { bounds[a.model] = Object.fromEntries(s.labels.map((l) => [l.label, l])); }).catch(() => {})));
  for (const a of d.analyses) {
    const rows = Object.entries(a.scores).sort((x, y) => y[1] - x[1]);
    const b = bounds[a.model] || {};
    const showAll = el("button.ghost.small", { type: "button" }, `Show all ${rows.length}`);
    const body = el("tbody");
    const showRows = (n) => fill(body, ...rows.slice(0, n).map(([lab, v]) => {
      const tier = a.tiers[lab] || "low";
      const lb = b[lab];
      const why = lb ? `${tier}: high ≥ ${lb.high.toFixed(3)}, medium ≥ ${lb.medium.toFixed(3)} ${lb.calibrated ? "(this library's calibration)" : "(default bounds)"}` : tier;
      return el("tr", { dataset: { label: lab } },
        el("td.lab", label(lab)),
        el("td.barcell", el("div.bar", { title: why }, el("span", { style: { width: (100 * v).toFixed(1) + "%" } }),
          lb ? el("i", { style: { left: (100 * lb.high).toFixed(1) + "%" } }) : null)),
        el("td.val", v.toFixed(3)),
        el("td", el("span.chip.tier-" + tier, { title: why }, tier)));
    }));
    showRows(12);
    showAll.addEventListener("click", () => { showRows(rows.length); showAll.remove(); });
    card.append(
      el("h3", a.model),
      el("p.small.muted", `provenance ${a.provenance} · profile ${a.profile} · ${a.patches} patches · keys ${a.tag_prefix}…`),
      el("table.scores", body), rows.length > 12 ? showAll : null);
  }
  card.append(el("p.small.muted", "The bar's tick marks where tier high starts for that label in this library."));
}

async function loadWave(canvas, card, d) {
  const note = card.querySelector("#wave-note");
  let wf;
  try {
    wf = await api(`/tracks/${d.id}/waveform`);
  } catch (e) {
    note.textContent = e.message;
    return;
  }
  const audio = document.getElementById("audio");
  const tl = d.timeline || d.descriptors?.timeline;
  const timeline = tl && Array.isArray(tl.patches) ? tl : null;
  const regions = regionsOf(d);
  const draw = () => {
    const w = canvas.clientWidth, h = canvas.clientHeight, dpr = window.devicePixelRatio || 1;
    canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr);
    const g = canvas.getContext("2d");
    g.scale(dpr, dpr);
    const cs = getComputedStyle(document.body);
    const accent = cs.getPropertyValue("--accent").trim() || "#3657d6";
    const muted = cs.getPropertyValue("--muted").trim() || "#888";
    g.clearRect(0, 0, w, h);
    for (const r of regions) {
      if (!wf.duration) break;
      g.fillStyle = "rgba(155, 93, 229, 0.12)";
      g.fillRect((r.start / wf.duration) * w, 0, ((r.end - r.start) / wf.duration) * w, h);
    }
    const n = wf.peaks.length;
    const max = Math.max(0.05, ...wf.peaks);
    const playing = audio.dataset.track === String(d.id) && wf.duration ? audio.currentTime / wf.duration : -1;
    for (let i = 0; i < n; i++) {
      const x = (i / n) * w;
      const amp = (wf.peaks[i] / max) * (h / 2 - 4);
      g.fillStyle = i / n <= playing ? accent : muted;
      g.globalAlpha = i / n <= playing ? 1 : 0.55;
      g.fillRect(x, h / 2 - amp, Math.max(1, w / n - 0.5), amp * 2);
    }
    g.globalAlpha = 1;
  };
  note.textContent = `${fmtDuration(wf.duration)} · click to play from a point` + (regions.length ? ` · ${regions.length} regions shaded` : "");
  draw();
  if (timeline) card.append(timelineStrip(timeline, wf.duration));
  canvas.addEventListener("click", (ev) => {
    const rect = canvas.getBoundingClientRect();
    play(d, ((ev.clientX - rect.left) / rect.width) * wf.duration);
  });
  const tick = () => { if (audio.dataset.track === String(d.id)) draw(); };
  audio.addEventListener("timeupdate", tick);
  const offPlay = onPlay(() => draw());
  const ro = new ResizeObserver(draw);
  ro.observe(canvas);
  const stop = new MutationObserver(() => {
    if (!canvas.isConnected) { audio.removeEventListener("timeupdate", tick); offPlay(); ro.disconnect(); stop.disconnect(); }
  });
  stop.observe(document.getElementById("main"), { childList: true });
}

function timelineStrip(tl, duration) {
  // Per-patch mood timeline: one row of cells per label, shaded by score.
  const labels = Object.keys(tl.patches[0] || {}).slice(0, 6);
  const c = el("canvas.timeline", { "aria-label": "Mood timeline per patch" });
  requestAnimationFrame(() => {
    const w = c.clientWidth, h = c.clientHeight, dpr = window.devicePixelRatio || 1;
    c.width = w * dpr; c.height = h * dpr;
    const g = c.getContext("2d");
    g.scale(dpr, dpr);
    const rowH = h / Math.max(1, labels.length);
    const hop = tl.hop_s || duration / tl.patches.length;
    tl.patches.forEach((p, i) => labels.forEach((lab, j) => {
      g.fillStyle = `hsla(${(j * 67) % 360}, 70%, 50%, ${Math.min(1, Math.max(0, p[lab] || 0))})`;
      g.fillRect((i * hop / duration) * w, j * rowH, Math.max(1, (hop / duration) * w), rowH - 1);
    }));
  });
  return el("div", c, el("div.legend", labels.map((lab, j) => el("span", el("span.swatch", { style: { background: `hsl(${(j * 67) % 360}, 70%, 50%)` } }), label(lab)))));
}
