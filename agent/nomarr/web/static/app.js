// The console's shell: a router over the pages the server lists (meta nomarr-pages), the live
// state stream (Server-Sent Events from /api/v1/events) shared by every page, sign-out.
//
// A page is a module pages/<name>.js exporting render(root, ctx) → optional cleanup function.
// ctx = { params, query, status(), onStatus(fn) → unsubscribe, navigate(url) }.

import { api, csrfToken, el, fmtEta, showError, fill } from "./lib.js";

const pages = JSON.parse(document.querySelector('meta[name="nomarr-pages"]').content);
const main = document.getElementById("main");
let cleanup = null;
let current = null;
let lastStatus = null;
const statusListeners = new Set();

function compile(pattern) {
  const names = [];
  const rx = pattern.replace(/\{(\w+)(?::[^}]+\}?)?\}/g, (_, n) => { names.push(n); return "([^/]+)"; });
  return { rx: new RegExp("^" + rx + "$"), names };
}
const routes = pages.map((p) => ({ ...p, ...compile(p.path) }));

function match(pathname) {
  for (const r of routes) {
    const m = r.rx.exec(pathname);
    if (m) return { page: r, params: Object.fromEntries(r.names.map((n, i) => [n, decodeURIComponent(m[i + 1])])) };
  }
  return null;
}

async function show() {
  const found = match(location.pathname);
  if (cleanup) { try { cleanup(); } catch (e) { console.warn(e); } cleanup = null; }
  for (const a of document.querySelectorAll("[data-nav]")) {
    a.classList.toggle("active", found && a.dataset.nav === found.page.name);
    if (found && a.dataset.nav === found.page.name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (!found) {
    fill(main, el("h1", "Not found"), el("p.muted", "No console page here."));
    return;
  }
  document.title = found.page.title + " · nomarr";
  const token = {};
  current = token;
  fill(main, el("p.muted", "Loading…"));
  try {
    const mod = await import(`./pages/${found.page.name}.js`);
    if (current !== token) return;
    const root = el("div.page", { dataset: { page: found.page.name } });
    fill(main, root);
    const ctx = {
      params: found.params,
      query: new URLSearchParams(location.search),
      status: () => lastStatus,
      onStatus: (fn) => { statusListeners.add(fn); if (lastStatus) fn(lastStatus); return () => statusListeners.delete(fn); },
      navigate,
    };
    cleanup = (await mod.render(root, ctx)) || null;
    main.focus({ preventScroll: true });
  } catch (e) {
    if (current === token) showError(main, e);
  }
}

export function navigate(url, { replace = false } = {}) {
  if (replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  window.scrollTo(0, 0);
  show();
}

document.addEventListener("click", (ev) => {
  const a = ev.target.closest("a[href]");
  if (!a || ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || a.target || a.hasAttribute("download")) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || url.pathname.startsWith("/api/") || url.pathname.startsWith("/static/")) return;
  if (!match(url.pathname)) return;
  ev.preventDefault();
  navigate(url.pathname + url.search);
});
window.addEventListener("popstate", show);

// -- live state -----------------------------------------------------------------------------------

const live = document.getElementById("live");
function renderLive(s) {
  const q = s.queue;
  const p = q.progress;
  const busy = q.running || s.pull;
  let text;
  if (p && p.total) text = `Scanning ${p.done}/${p.total} · ${Math.round(p.rate_per_min)}/min · ETA ${fmtEta(p.eta_s)}`;
  else if (q.running) text = "Scanning…";
  else if (s.pull) text = `Downloading ${s.pull.id}…`;
  else text = `Idle · ${(s.tracks.ok || 0).toLocaleString()} tracks`;
  fill(live, el("span.dot" + (busy ? ".busy" : "")), text);
}

function connect() {
  const es = new EventSource("/api/v1/events");
  es.addEventListener("status", (ev) => {
    lastStatus = JSON.parse(ev.data);
    renderLive(lastStatus);
    for (const fn of statusListeners) { try { fn(lastStatus); } catch (e) { console.warn(e); } }
  });
  es.onerror = () => {
    // the browser reconnects by itself; a lost session shows as a failing stream: check once
    if (es.readyState === EventSource.CLOSED) setTimeout(connect, 5000);
    api("/status").catch(() => {});
  };
}

document.getElementById("logout-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  await fetch("/logout", { method: "POST", headers: { "X-CSRF-Token": csrfToken() }, credentials: "same-origin" });
  location.assign("/login");
});

connect();
show();
