// Playlists: by mood, seed radio, a path from one track to another, and free text when a CLAP
// model is installed. Every result is a preview you can play and download as M3U.

import { api, downloadM3U, el, label, playAll, showError, trackList, trackName, trackPicker, fill } from "../lib.js";

export async function render(root, ctx) {
  const moods = await api("/moods").catch((e) => { showError(null, e); return { items: [], zero_shot: false }; });
  const result = el("div.card#playlist-result", el("p.empty", "Build a playlist to preview it here."));
  const tabs = el("div.tabs", { role: "tablist" });
  const panel = el("div.card#playlist-form", { style: { marginBottom: "16px" } });
  root.append(el("div.page-head", el("div", el("h1", "Playlists"),
    el("p.muted", "Preview, play, then download as M3U."))), tabs, panel, result);

  const kinds = [
    ["mood", "Mood", moodForm],
    ["radio", "Seed radio", radioForm],
    ["path", "Path A → B", pathForm],
  ];
  if (moods.zero_shot) kinds.push(["text", "Text", textForm]);
  let active = ctx.query.get("seed") ? "radio" : ctx.query.get("kind") || "mood";
  function select(kind) {
    active = kind;
    fill(tabs, ...kinds.map(([k, t]) => el("button", {
      type: "button", role: "tab", "aria-selected": String(k === active), class: k === active ? "active" : "",
      dataset: { tab: k }, onclick: () => select(k),
    }, t)));
    fill(panel, kinds.find(([k]) => k === active)[2]());
  }

  async function run(name, path, body) {
    fill(result, el("p.muted", "Building…"));
    try {
      const pl = await api(path, { method: "POST", body });
      const items = pl.items;
      fill(result, 
        el("div.page-head", el("div", el("h2", name), el("p.muted.small", `${items.length} tracks` + (pl.model ? ` · ${pl.model}` : "") + (pl.zero_shot ? " · zero-shot (CLAP)" : ""))),
          el("div", { style: { display: "flex", gap: "8px" } },
            el("button#play-all", { type: "button", onclick: () => playAll(items), disabled: !items.length }, "▶ Play all"),
            el("button.ghost#download-m3u", { type: "button", onclick: () => downloadM3U(name, items), disabled: !items.length }, "Download M3U"))),
        trackList(items, (t) => t.score !== null && t.score !== undefined ? el("span.chip", t.score.toFixed(2)) : null));
    } catch (e) { showError(result, e); }
  }

  function sizeField() {
    return el("label.field", "Tracks", el("input#pl-size", { type: "number", min: 2, max: 200, value: 25, style: { width: "80px" } }));
  }
  const size = () => Math.max(2, Math.min(200, parseInt(document.getElementById("pl-size").value, 10) || 25));

  function moodForm() {
    const sel = el("select#mood-label", { "aria-label": "Mood" }, moods.items.map((m) => el("option", { value: m.label }, label(m.label))));
    return el("form.toolbar", { onsubmit: (ev) => { ev.preventDefault(); run(`${label(sel.value)} mix`, "/playlists/mood", { label: sel.value, limit: size() }); } },
      el("label.field.grow", "Label", sel), sizeField(), el("button#build", { type: "submit", disabled: !moods.items.length }, "Build"));
  }

  function radioForm() {
    let seed = null;
    const seedId = Number(ctx.query.get("seed")) || null;
    const chosen = el("span.muted#seed-chosen", "No seed chosen.");
    const pick = (t) => { seed = t; chosen.textContent = "Seed: " + trackName(t); };
    if (seedId) api(`/tracks/${seedId}`).then(pick).catch(() => {});
    return el("form", { onsubmit: (ev) => { ev.preventDefault(); if (!seed) return showError(null, "Choose a seed track first."); run(`Radio: ${trackName(seed)}`, "/playlists/radio", { track_id: seed.id, limit: size() }); } },
      el("div.toolbar", el("label.field.grow", "Seed track", trackPicker("Find the seed track…", pick)), sizeField(), el("button#build", { type: "submit" }, "Build")), chosen);
  }

  function pathForm() {
    let a = null, b = null;
    const chosen = el("p.muted#path-chosen", "Choose where to start and where to end.");
    const say = () => { chosen.textContent = `${a ? trackName(a) : "?"} → ${b ? trackName(b) : "?"}`; };
    return el("form", { onsubmit: (ev) => { ev.preventDefault(); if (!a || !b) return showError(null, "Choose both ends first."); run(`${trackName(a)} to ${trackName(b)}`, "/playlists/path", { start: { track_id: a.id }, end: { track_id: b.id }, limit: size() }); } },
      el("div.toolbar", el("label.field.grow", "From", trackPicker("Start track…", (t) => { a = t; say(); })),
        el("label.field.grow", "To", trackPicker("End track…", (t) => { b = t; say(); })), sizeField(), el("button#build", { type: "submit" }, "Build")), chosen);
  }

  function textForm() {
    const text = el("input#text-query", { type: "text", placeholder: "e.g. mellow piano on a rainy evening", maxlength: 500 });
    return el("form.toolbar", { onsubmit: (ev) => { ev.preventDefault(); if (text.value.trim()) run(text.value.trim(), "/playlists/text", { text: text.value.trim(), limit: size() }); } },
      el("label.field.grow", "Describe the music", text), sizeField(), el("button#build", { type: "submit" }, "Build"));
  }

  select(kinds.some(([k]) => k === active) ? active : "mood");
  return null;
}
