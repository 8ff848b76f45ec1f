// Models: the catalogue (kind, licence, size, installed, checksum, provider/precision in use),
// pull with progress, verify, per-model statistics, and the guided import of an Essentia model.

import { api, el, fmtBytes, fmtNum, label, showError, toast, fill } from "../lib.js";

export async function render(root, ctx) {
  const table = el("div.table-wrap#catalogue");
  const detail = el("div.card.span-12#model-detail", el("p.empty", "Choose a model to see what it did in this library."));
  const importCard = el("div.card.span-12#import-card");
  root.append(
    el("div.page-head", el("div", el("h1", "Models"), el("p.muted", "What the agent can run, under which licence, and what it did."))),
    table, el("div.grid", { style: { marginTop: "16px" } }, detail, importCard));
  const verified = {};
  let models = [];
  let pulling = null;

  async function load() {
    try {
      models = (await api("/models")).items;
      draw();
    } catch (e) { showError(table, e); }
  }

  function draw(status) {
    const pull = status?.pull;
    fill(table, el("table",
      el("thead", el("tr", el("th", "Model"), el("th", "Kind"), el("th", "Licence"), el("th.hide-phone", "Size"),
        el("th", "Installed"), el("th.hide-phone", "sha256"), el("th.hide-phone", "Runs on"), el("th", ""))),
      el("tbody", models.map((m) => {
        const v = verified[m.id];
        const busy = pulling === m.id;
        const pct = pull && pull.id === m.id && pull.total ? Math.round((100 * pull.done) / pull.total) : null;
        return el("tr", { dataset: { model: m.id } },
          el("td", el("a", { href: "#", onclick: (ev) => { ev.preventDefault(); showDetail(m.id); } }, m.id),
            m.default ? el("span.chip", { title: "run on every file" }, "default") : null,
            el("div.small.muted", m.name || "")),
          el("td", m.kind, m.needs ? el("div.small.muted", "on " + m.needs) : null),
          el("td", m.licence_url ? el("a", { href: m.licence_url, target: "_blank", rel: "noopener noreferrer" }, m.licence || "licence") : (m.licence || "–")),
          el("td.hide-phone.nowrap", m.builtin ? "built in" : fmtBytes(m.size)),
          el("td", m.installed ? el("span.ok", "✓ yes") : el("span.muted", "no"),
            busy ? el("div.progress.pull-progress", el("span", { style: { width: (pct ?? 5) + "%" } })) : null),
          el("td.hide-phone", v === undefined ? el("span.muted", "not checked") : v.ok ? el("span.ok", "✓ verified") : el("span.bad", "✗ mismatch")),
          el("td.hide-phone", Object.keys(m.providers || {}).map((p) => el("span.chip", p.replace("ExecutionProvider", ""))), m.precision ? el("span.muted.small", " " + m.precision) : null),
          el("td.nowrap", m.installed ? el("button.ghost", { type: "button", dataset: { verify: m.id }, onclick: () => verify(m.id) }, "Verify")
            : el("button", { type: "button", dataset: { pull: m.id }, disabled: !!pulling, onclick: () => pullModel(m.id) }, busy ? "Pulling…" : "Pull")));
      }))));
  }

  async function pullModel(id) {
    pulling = id;
    draw(ctx.status());
    try {
      const r = await api(`/models/${encodeURIComponent(id)}/pull`, { method: "POST" });
      toast(r.status === "installed" ? `${id} installed.` : `${id} was already installed.`);
      pulling = null;
      await load();
      await verify(id);
    } catch (e) {
      pulling = null;
      draw();
      showError(null, e);
    }
  }

  async function verify(id) {
    try {
      const v = await api(`/models/${encodeURIComponent(id)}/verify`, { method: "POST" });
      verified[id] = v;
      draw();
      toast(v.ok ? `${id}: every file matches its sha256.` : `${id}: a file does not match its sha256.`, v.ok ? "info" : "error");
      return v;
    } catch (e) { showError(null, e); return null; }
  }

  async function showDetail(id) {
    fill(detail, el("p.muted", "Loading…"));
    try {
      const s = await api(`/models/${encodeURIComponent(id)}/stats`);
      const pick = el("select#stats-label", { "aria-label": "Label" }, s.labels.map((l) => el("option", { value: l.label }, label(l.label))));
      const hist = el("div#histogram");
      const drawHist = () => {
        const l = s.labels.find((x) => x.label === pick.value);
        if (!l) { fill(hist, el("p.empty", "No scores yet.")); return; }
        const max = Math.max(1, ...l.histogram);
        fill(hist, 
          el("div", { style: { display: "flex", alignItems: "flex-end", gap: "2px", height: "120px", marginTop: "8px" } },
            l.histogram.map((n, i) => el("div", {
              title: `${(i / l.histogram.length).toFixed(2)}–${((i + 1) / l.histogram.length).toFixed(2)}: ${n} recordings`,
              style: { flex: "1", height: (100 * n / max) + "%", minHeight: n ? "2px" : "0",
                background: (i + 0.5) / l.histogram.length >= l.high ? "var(--high)" : (i + 0.5) / l.histogram.length >= l.medium ? "var(--medium)" : "var(--low)", borderRadius: "3px 3px 0 0" },
            }))),
          el("div.small.muted", { style: { display: "flex", justifyContent: "space-between" } }, el("span", "0"), el("span", "score"), el("span", "1")),
          el("p.small", `Tier high ≥ ${l.high.toFixed(3)}, medium ≥ ${l.medium.toFixed(3)} `,
            el("span.muted", l.calibrated ? "(calibrated on this library)" : "(default bounds: fewer than 100 recordings analysed)"),
            ` · ${fmtNum(l.tracks_high)} recordings at high` + (l.mean !== null ? ` · mean ${l.mean.toFixed(3)}` : "")));
      };
      pick.addEventListener("change", drawHist);
      fill(detail, 
        el("h2", s.name || s.id),
        el("dl.kv",
          el("dt", "Id"), el("dd.mono", s.id), el("dt", "Kind"), el("dd", s.kind),
          el("dt", "Licence"), el("dd", s.licence_url ? el("a", { href: s.licence_url, target: "_blank", rel: "noopener noreferrer" }, s.licence || s.licence_url) : s.licence || "–"),
          el("dt", "Source"), el("dd", s.source ? el("a", { href: s.source, target: "_blank", rel: "noopener noreferrer" }, s.source) : "–"),
          el("dt", "Tracks analysed"), el("dd#stats-tracks", fmtNum(s.tracks)),
          el("dt", "Runs on"), el("dd", Object.entries(s.providers).map(([p, n]) => `${p} (${fmtNum(n)})`).join(", ") || "not run yet"),
          el("dt", "Precision"), el("dd", s.precision || "–"),
          el("dt", "Calibrated"), el("dd", s.calibrated_at ? `at ${fmtNum(s.calibrated_at)} recordings` : "not yet (default tier bounds)")),
        s.labels.length ? el("div", el("h3", "Scores in this library"), el("label.field", "Label", pick), hist) : null);
      drawHist();
    } catch (e) { showError(detail, e); }
  }

  importCard.append(importForm(load, verify));
  const off = ctx.onStatus((st) => { if (pulling) draw(st); });
  await load();
  const want = ctx.query.get("model");
  if (want) showDetail(want);
  return off;
}

function importForm(reload, verify) {
  // Guided import: metadata → preview (licence, labels, file) → accept the licence → import → pull → checksum.
  const meta = el("textarea#import-json", { rows: 6, placeholder: "Paste the model's Essentia metadata (.json) here, or choose the file below." });
  const file = el("input#import-file", { type: "file", accept: ".json,application/json" });
  const url = el("input#import-url", { type: "url", placeholder: "ONNX file URL (default: next to the metadata's link)" });
  const sha = el("input#import-sha", { type: "text", placeholder: "expected sha256 (optional)", pattern: "[0-9a-fA-F]{64}", spellcheck: false });
  const out = el("div#import-result");
  file.addEventListener("change", async () => { if (file.files[0]) meta.value = await file.files[0].text(); });
  const body = (dry) => {
    let m;
    try { m = JSON.parse(meta.value); } catch { throw new Error("The metadata is not valid JSON."); }
    return { metadata: m, url: url.value.trim() || null, sha256: sha.value.trim() || null, dry_run: dry };
  };
  async function preview() {
    try {
      const r = await api("/models/import", { method: "POST", body: body(true) });
      const accept = el("input#import-accept", { type: "checkbox" });
      const go = el("button#import-go", { type: "button", disabled: true }, "Import and pull");
      accept.addEventListener("change", () => { go.disabled = !accept.checked; });
      go.addEventListener("click", async () => {
        go.disabled = true;
        try {
          const done = await api("/models/import", { method: "POST", body: body(false) });
          toast(`Manifest for ${done.id} written; downloading…`);
          await reload();
          await api(`/models/${encodeURIComponent(done.id)}/pull`, { method: "POST" });
          const v = await verify(done.id);
          await reload();
          out.append(el("p", v && v.ok ? el("span.ok#import-verified", `✓ ${done.id} installed; sha256 ${v.files[0].actual_sha256.slice(0, 16)}… ${v.files[0].pinned ? "pinned at first download" : "matches the expected hash"}.`)
            : el("span.bad", `${done.id}: the downloaded file does not match.`)));
        } catch (e) { showError(null, e); go.disabled = false; }
      });
      fill(out, el("div.card", { style: { background: "var(--soft)" } },
        el("h3", "Preview"),
        el("dl.kv", el("dt", "Id"), el("dd.mono#import-id", r.id), el("dt", "Name"), el("dd", r.name), el("dt", "Kind"), el("dd", r.kind + (r.needs ? ` (runs on ${r.needs})` : "")),
          el("dt", "Licence"), el("dd#import-licence", r.licence_url ? el("a", { href: r.licence_url, target: "_blank", rel: "noopener noreferrer" }, r.licence || r.licence_url) : (r.licence || "unknown")),
          el("dt", "Labels"), el("dd", r.labels.map((l) => el("span.chip", l))),
          el("dt", "Files"), el("dd.mono", r.files.map((f) => el("div", `${f.name} ← ${f.url}` + (f.sha256 ? ` (sha256 ${String(f.sha256).slice(0, 12)}…)` : " (sha256 pinned at first download)"))))),
        el("p", el("label", accept, ` I accept the licence: ${r.licence || "as published"}`)), go));
    } catch (e) { showError(out, e); }
  }
  return el("div", el("h2", "Import an Essentia model"),
    el("p.muted.small", "Essentia publishes a metadata .json beside every model. nomarr turns it into a manifest, shows the licence before anything is downloaded, and checks the file's sha256."),
    meta, el("div.toolbar", { style: { marginTop: "8px" } }, el("label.field", "Metadata file", file), el("label.field.grow", "Model URL", url), el("label.field.grow", "sha256", sha),
      el("button#import-preview", { type: "button", onclick: preview }, "Preview")), out);
}
