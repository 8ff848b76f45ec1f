// Overview: libraries and counts, the scan running now (pushed by the event stream), queue,
// failures with their reasons, recent analyses, models with provider/precision, memory.

import { api, basename, el, fmtAgo, fmtDuration, fmtEta, fmtNum, showError, toast, trackLink, fill } from "../lib.js";

export async function render(root, ctx) {
  const stats = el("div.grid");
  const scan = el("div.card.span-7#scan-card", el("h2", "Scan"), el("p.muted", "…"));
  const libs = el("div.card.span-5#libraries", el("h2", "Libraries"));
  const failures = el("div.card.span-6#failures", el("h2", "Failures"));
  const recent = el("div.card.span-6#recent", el("h2", "Recent analyses"));
  const models = el("div.card.span-12#models-card", el("h2", "Models in use"));
  root.append(
    el("div.page-head", el("div", el("h1", "Overview"), el("p.muted#agent-line", "")),
      el("button#scan-now", { type: "button", onclick: scanNow }, "Scan libraries now")),
    stats, el("div.grid", { style: { marginTop: "16px" } }, scan, libs, failures, recent, models));

  async function scanNow(ev) {
    ev.target.disabled = true;
    try {
      const r = await api("/scan", { method: "POST", body: {} });
      toast(`Scan queued (${r.queued} root${r.queued === 1 ? "" : "s"}).`);
    } catch (e) { showError(null, e); } finally { ev.target.disabled = false; }
  }

  let lastScans = -1;
  const off = ctx.onStatus((s) => {
    document.getElementById("agent-line").textContent =
      `nomarr ${s.version} · up ${fmtDuration(s.uptime_s)} · agent ${s.agent_id.slice(0, 8)}`;
    const t = s.tracks || {};
    const mem = s.memory_mb || {};
    fill(stats, 
      stat("Tracks", fmtNum(t.ok || 0), "present and analysed", "stat-tracks"),
      stat("Failed", fmtNum(t.failed || 0), "could not be analysed", "stat-failed"),
      stat("Recordings", fmtNum(t.recordings || 0), `${fmtNum(t.analyses || 0)} analyses`, "stat-recordings"),
      stat("Memory", `${Math.round((mem.agent || 0) + (mem.workers || 0))} MB`,
        `agent ${Math.round(mem.agent || 0)} MB` + (mem.workers ? ` · workers ${Math.round(mem.workers)} MB` : " · workers unloaded"), "stat-memory"),
    );
    renderScan(scan, s);
    fill(libs, el("h2", "Libraries"), s.roots.length ? el("ul.list", s.roots.map((r) => el("li",
      el("span.grow.mono", { title: r.path }, r.path),
      el("span.chip", r.watch === "poll" ? `poll ${Math.round(r.poll_interval_s / 60)} min` : r.watch),
      r.exists ? el("span.nowrap", fmtNum(r.tracks) + " tracks") : el("span.bad", "missing")))) :
      el("p.empty", "No library configured: start the agent with --library PATH."));
    if (s.queue.scans_completed !== lastScans) {
      lastScans = s.queue.scans_completed;
      loadLists();
    }
  });

  async function loadLists() {
    try {
      const [failed, rec, ms] = await Promise.all([
        api("/tracks", { query: { status: "failed", limit: 8 } }),
        api("/analyses/recent", { query: { limit: 8 } }),
        api("/models"),
      ]);
      fill(failures, el("h2", `Failures (${fmtNum(failed.total)})`), failed.items.length ?
        el("ul.list", failed.items.map((t) => el("li", el("span.grow", el("span.mono", { title: t.path }, basename(t.path)),
          el("div.small.bad", t.error || "unknown reason"))))) : el("p.empty", "No failures."));
      fill(recent, el("h2", "Recent analyses"), rec.items.length ?
        el("ul.list", rec.items.map((r) => el("li", el("span.grow", trackLink(r.track),
          r.track.artist ? el("span.muted", " — " + r.track.artist) : null),
          el("span.chip", r.model), el("span.muted.small.nowrap", fmtAgo(r.created))))) : el("p.empty", "Nothing analysed yet."));
      const used = ms.items.filter((m) => m.default || Object.keys(m.providers || {}).length);
      fill(models, el("h2", "Models in use"), used.length ? el("div.table-wrap", el("table",
        el("thead", el("tr", el("th", "Model"), el("th", "Kind"), el("th", "Provider"), el("th", "Precision"), el("th.hide-phone", "Licence"))),
        el("tbody", used.map((m) => el("tr",
          el("td", el("a", { href: "/models?model=" + encodeURIComponent(m.id) }, m.id)),
          el("td", m.kind),
          el("td", Object.entries(m.providers || {}).map(([p, n]) => el("span.chip", { title: `${n} analyses` }, p.replace("ExecutionProvider", "")))
            .concat(Object.keys(m.providers || {}).length ? [] : [el("span.muted", "not run yet")])),
          el("td", m.precision || "–"),
          el("td.hide-phone", m.licence || "–")))))) : el("p.empty", "No model has run yet."));
    } catch (e) { showError(failures, e); }
  }
  return off;
}

function stat(labelText, value, sub, id) {
  return el("div.card.span-3", { id }, el("div.stat-label", labelText), el("div.stat", value), el("div.muted.small", sub));
}

function renderScan(card, s) {
  const q = s.queue;
  const p = q.progress;
  const kids = [el("h2", "Scan")];
  if (q.running) {
    const pct = p && p.total ? Math.round((100 * p.done) / p.total) : 0;
    kids.push(
      el("div.stat#scan-state", p && p.total ? `${fmtNum(p.done)} / ${fmtNum(p.total)} files` : "Looking for changes…"),
      el("div.progress", { role: "progressbar", "aria-valuenow": pct, "aria-valuemin": 0, "aria-valuemax": 100 },
        el("span", { style: { width: pct + "%" } })),
      el("dl.kv",
        el("dt", "Now"), el("dd.mono#scan-file", p && p.file ? basename(p.file) : q.current || "–"),
        el("dt", "Rate"), el("dd#scan-rate", p ? `${Math.round(p.rate_per_min)} files/min` : "–"),
        el("dt", "ETA"), el("dd#scan-eta", p ? fmtEta(p.eta_s) : "–"),
        el("dt", "Queued"), el("dd", `${fmtNum(q.pending_paths)} path(s) waiting`)));
  } else {
    kids.push(el("div.stat#scan-state", "Idle"));
    const last = q.last_scan;
    if (last && last.summary) {
      const sm = last.summary;
      kids.push(el("p.muted", `Last scan ${fmtAgo(last.finished)} (${last.reason}), ${fmtDuration(sm.elapsed_s)}:`),
        el("div", ["files", "analysed", "reused", "skipped", "written", "failed", "missing"]
          .filter((k) => sm[k]).map((k) => el("span.chip", `${k} ${fmtNum(sm[k])}`))));
      if (sm.error) kids.push(el("p.bad", sm.error));
    } else kids.push(el("p.muted", "No scan since the agent started."));
    kids.push(el("p.muted.small", `${fmtNum(q.pending_paths)} path(s) queued · ${q.scans_completed} scan(s) since start`));
  }
  if (s.pull) {
    const pct = s.pull.total ? Math.round((100 * s.pull.done) / s.pull.total) : 0;
    kids.push(el("h3", `Downloading ${s.pull.id}`), el("div.progress", el("span", { style: { width: pct + "%" } })));
  }
  fill(card, ...kids);
}
