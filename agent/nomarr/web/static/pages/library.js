// Library: the whole library as a table: text search, label score/tier filters, sorting, paging.
// The state lives in the URL (?q=&label=&tier=&min=&sort=&order=&page=), so a view can be linked.

import { api, el, fmtDuration, fmtNum, label, playButton, showError, trackLink, fill } from "../lib.js";

const SIZES = [10, 25, 50, 100];

export async function render(root, ctx) {
  const q = ctx.query;
  const state = {
    q: q.get("q") || "", label: q.get("label") || "", tier: q.get("tier") || "", min: q.get("min") || "",
    status: q.get("status") || "ok", sort: q.get("sort") || "id", order: q.get("order") || "asc",
    page: Math.max(0, parseInt(q.get("page") || "0", 10) || 0),
    size: SIZES.includes(Number(q.get("size"))) ? Number(q.get("size")) : 50,
  };
  const search = el("input#search", { type: "search", placeholder: "Title, artist, album or path", value: state.q, "aria-label": "Search the library" });
  const labelSel = el("select#label-filter", { "aria-label": "Label" }, el("option", { value: "" }, "Any label"));
  const tierSel = el("select#tier-filter", { "aria-label": "Tier" },
    ["", "high", "medium", "low"].map((t) => el("option", { value: t, selected: t === state.tier }, t ? "tier " + t : "Any tier")));
  const minInput = el("input#min-score", { type: "number", min: 0, max: 1, step: 0.05, placeholder: "min", value: state.min, "aria-label": "Minimum score", style: { width: "84px" } });
  const statusSel = el("select#status-filter", { "aria-label": "Status" },
    [["ok", "Analysed"], ["failed", "Failed"], ["missing", "Missing"], ["all", "All"]].map(([v, t]) => el("option", { value: v, selected: v === state.status }, t)));
  const sizeSel = el("select#page-size", { "aria-label": "Rows per page" },
    SIZES.map((n) => el("option", { value: n, selected: n === state.size }, `${n} rows`)));
  const count = el("span.muted#count");
  const table = el("div.table-wrap");
  const pager = el("div.pager");
  root.append(
    el("div.page-head", el("div", el("h1", "Library"), count)),
    el("div.toolbar",
      el("label.field.grow", "Search", search),
      el("label.field", "Label", labelSel), el("label.field", "Tier", tierSel), el("label.field", "Score ≥", minInput),
      el("label.field", "Status", statusSel)),
    table, pager);

  api("/moods").then((m) => {
    for (const it of m.items) labelSel.append(el("option", { value: it.label, selected: it.label === state.label }, label(it.label)));
  }).catch((e) => showError(null, e));

  let ctl = null;
  let timer = 0;
  async function load() {
    const url = new URLSearchParams();
    for (const [k, v] of Object.entries(state)) if (v && !(k === "page" && v === 0) && !(k === "status" && v === "ok") && !(k === "sort" && v === "id") && !(k === "order" && v === "asc")) url.set(k, v);
    history.replaceState(null, "", "/library" + (url.toString() ? "?" + url : ""));
    ctl?.abort();
    ctl = new AbortController();
    const hasLabel = !!state.label;
    const query = {
      q: state.q, status: state.status, sort: !hasLabel && state.sort === "score" ? "id" : state.sort, order: state.order,
      offset: state.page * state.size, limit: state.size, label: state.label,
      tier: hasLabel ? state.tier : "", min_score: hasLabel ? state.min : "",
    };
    table.setAttribute("aria-busy", "true");
    try {
      const page = await api("/browse", { query, signal: ctl.signal });
      draw(page);
    } catch (e) {
      if (e.name !== "AbortError") showError(table, e);
    } finally { table.removeAttribute("aria-busy"); }
  }

  function header(key, text, cls) {
    const active = state.sort === key;
    return el("th" + (cls || ""), el("button.sort", {
      type: "button", dataset: { sort: key },
      "aria-sort": active ? (state.order === "asc" ? "ascending" : "descending") : null,
      onclick: () => {
        if (state.sort === key) state.order = state.order === "asc" ? "desc" : "asc";
        else { state.sort = key; state.order = key === "score" ? "desc" : "asc"; }
        state.page = 0;
        load();
      },
    }, text));
  }

  function draw(page) {
    const from = page.total ? page.offset + 1 : 0;
    const to = page.offset + page.items.length;
    count.textContent = `${fmtNum(page.total)} track${page.total === 1 ? "" : "s"}` + (state.q ? ` matching “${state.q}”` : "");
    const showScore = !!page.label;
    // tempo, key and energy columns appear once the agent stores those descriptors
    const has = (k) => page.items.some((t) => t[k] !== undefined && t[k] !== null);
    const desc = [["bpm", "BPM", (v) => Math.round(v)], ["key", "Key", String], ["energy", "Energy", (v) => v.toFixed(2)]].filter(([k]) => has(k));
    const failed = state.status !== "ok";
    fill(table, el("table#tracks",
      el("thead", el("tr", el("th", el("span.hidden", "Play")), header("title", "Title"), header("artist", "Artist"),
        header("album", "Album", ".hide-phone"), header("duration", "Time", ".hide-phone"),
        showScore ? header("score", label(page.label)) : null,
        desc.map(([, name]) => el("th.hide-phone", name)),
        failed ? el("th", "Status") : el("th.hide-phone", "Strongest labels"))),
      el("tbody", page.items.length ? page.items.map((t) => el("tr", { dataset: { track: t.id } },
        el("td", t.status === "ok" ? playButton(t) : null),
        el("td.title", { title: t.path }, trackLink(t)),
        el("td", t.artist || el("span.muted", "–")),
        el("td.hide-phone", t.album || el("span.muted", "–")),
        el("td.hide-phone.nowrap", fmtDuration(t.duration)),
        showScore ? el("td.nowrap", t.score === null || t.score === undefined ? el("span.muted", "–") :
          el("span.chip.tier-" + t.tier, { title: "tier " + t.tier }, t.score.toFixed(3))) : null,
        desc.map(([k, , f]) => el("td.hide-phone.nowrap", t[k] === null || t[k] === undefined ? "–" : f(t[k]))),
        failed ? el("td", el("span" + (t.status === "ok" ? ".ok" : ".bad"), t.status), t.error ? el("div.small.muted", t.error) : null)
          : el("td.hide-phone", t.top.map((l) => el("span.chip", label(l))))))
        : el("tr", el("td.empty", { colSpan: 7 }, "No track matches."))),
    ));
    fill(pager, 
      el("span.muted", page.total ? `${fmtNum(from)}–${fmtNum(to)} of ${fmtNum(page.total)}` : ""),
      el("div", { style: { display: "flex", gap: "8px" } }, sizeSel,
        el("button.ghost#prev", { type: "button", disabled: state.page === 0, onclick: () => { state.page--; load(); } }, "← Previous"),
        el("button.ghost#next", { type: "button", disabled: to >= page.total, onclick: () => { state.page++; load(); } }, "Next →")));
  }

  search.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => { state.q = search.value.trim(); state.page = 0; load(); }, 200);
  });
  labelSel.addEventListener("change", () => {
    state.label = labelSel.value;
    if (state.label) { state.sort = "score"; state.order = "desc"; } else if (state.sort === "score") state.sort = "id";
    state.page = 0; load();
  });
  tierSel.addEventListener("change", () => { state.tier = tierSel.value; state.page = 0; load(); });
  minInput.addEventListener("change", () => { state.min = minInput.value; state.page = 0; load(); });
  sizeSel.addEventListener("change", () => { state.size = Number(sizeSel.value); state.page = 0; load(); });
  statusSel.addEventListener("change", () => { state.status = statusSel.value; state.page = 0; load(); });
  await load();
  return () => { ctl?.abort(); clearTimeout(timer); };
}
