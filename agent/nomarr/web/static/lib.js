// Shared helpers for the console's pages: the API client (session cookie + CSRF token), a tiny
// DOM builder, formatting, toasts, the persistent audio player and playlist export.

export const API = "/api/v1";
const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Call the agent's API; JSON in and out. State changes carry the session's CSRF token. */
export async function api(path, { method = "GET", body, signal, query } = {}) {
  let url = API + path;
  if (query) {
    const qs = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) {
      if (v === undefined || v === null || v === "") continue;
      for (const one of Array.isArray(v) ? v : [v]) qs.append(k, String(one));
    }
    const s = qs.toString();
    if (s) url += "?" + s;
  }
  const headers = { Accept: "application/json" };
  if (method !== "GET" && method !== "HEAD") headers["X-CSRF-Token"] = csrf;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(url, {
    method, headers, signal, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (resp.status === 401) {
    location.assign("/login?next=" + encodeURIComponent(location.pathname + location.search));
    throw new ApiError(401, "unauthorized", "signed out");
  }
  const data = await resp.json().catch(() => null);
  if (!resp.ok) {
    const e = data?.error || {};
    throw new ApiError(resp.status, e.code || "error", e.message || resp.statusText);
  }
  return data;
}

export const csrfToken = () => csrf;

/** el("div.card#id", {attrs}, children…): a DOM element. Text children are text nodes (never HTML). */
export function el(spec, attrs, ...children) {
  const m = /^([a-z0-9-]+)?((?:[.#][\w-]+)*)$/i.exec(spec);
  const node = document.createElement((m && m[1]) || "div");
  if (m && m[2]) {
    for (const part of m[2].match(/[.#][\w-]+/g)) {
      if (part[0] === ".") node.classList.add(part.slice(1));
      else node.id = part.slice(1);
    }
  }
  if (attrs && (typeof attrs !== "object" || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs);
    attrs = null;
  }
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k === "style" && typeof v === "object") Object.assign(node.style, v);
    else if (k in node && typeof v !== "string") node[k] = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  append(node, children);
  return node;
}

/** Replace a node's children, skipping null/false (replaceChildren would print "null"). */
export function fill(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

function append(node, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(node, c);
    else node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function fmtDuration(s) {
  if (s === null || s === undefined || !isFinite(s)) return "–";
  s = Math.round(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  return (h ? h + ":" + String(m).padStart(2, "0") : m) + ":" + String(sec).padStart(2, "0");
}

export function fmtEta(s) {
  if (s === null || s === undefined || !isFinite(s)) return "–";
  if (s < 60) return Math.round(s) + " s";
  if (s < 3600) return Math.round(s / 60) + " min";
  return (s / 3600).toFixed(1) + " h";
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return "–";
  const u = ["B", "KB", "MB", "GB"];
  let i = 0;
  while (n >= 1000 && i < u.length - 1) { n /= 1000; i++; }
  return (i ? n.toFixed(n < 10 ? 1 : 0) : n) + " " + u[i];
}

export function fmtAgo(t) {
  const d = Date.now() / 1000 - t;
  if (d < 60) return "just now";
  if (d < 3600) return Math.round(d / 60) + " min ago";
  if (d < 86400) return Math.round(d / 3600) + " h ago";
  return new Date(t * 1000).toLocaleDateString();
}

export const fmtNum = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString());
export const basename = (p) => (p || "").split("/").pop();
export const trackName = (t) => t.title || basename(t.path);
export const label = (s) => (s || "").replace(/_/g, " ");

export function toast(message, kind = "info") {
  const box = document.getElementById("toasts");
  const t = el("div.toast", { role: kind === "error" ? "alert" : "status" }, message);
  if (kind === "error") t.classList.add("error");
  box.append(t);
  setTimeout(() => t.remove(), kind === "error" ? 7000 : 3500);
}

/** Show an API failure in a container (or as a toast) in words a person can act on. */
export function showError(where, e) {
  const msg = e instanceof ApiError ? e.message : String(e && e.message ? e.message : e);
  if (where) fill(where, el("p.bad", msg));
  else toast(msg, "error");
}

// -- the player ---------------------------------------------------------------------------------

const listeners = new Set();
export function onPlay(fn) { listeners.add(fn); return () => listeners.delete(fn); }

export function audioUrl(id) { return `${API}/tracks/${id}/audio`; }

/** Play a track in the persistent player at the bottom of every page. */
export function play(track, at = 0) {
  const bar = document.getElementById("player");
  const audio = document.getElementById("audio");
  bar.hidden = false;
  document.getElementById("now-title").textContent = trackName(track);
  document.getElementById("now-artist").textContent = [track.artist, track.album].filter(Boolean).join(" — ");
  const src = audioUrl(track.id);
  if (audio.dataset.track !== String(track.id)) {
    audio.src = src;
    audio.dataset.track = String(track.id);
  }
  if (at) audio.currentTime = at;
  audio.play().catch((e) => {
    if (e.name !== "AbortError") toast(`Cannot play ${trackName(track)} here: ${e.message}`, "error");
  });
  for (const fn of listeners) fn(track);
}

let queue = [];
/** Play tracks one after the other (a playlist preview). */
export function playAll(tracks) {
  queue = tracks.slice(1);
  if (tracks.length) play(tracks[0]);
}
document.getElementById("audio")?.addEventListener("ended", () => {
  const next = queue.shift();
  if (next) play(next);
});

export function playButton(track) {
  return el("button.icon.ghost", {
    type: "button", title: "Play " + trackName(track), "aria-label": "Play " + trackName(track),
    dataset: { play: track.id }, onclick: (ev) => { ev.preventDefault(); play(track); },
  }, "▶");
}

export function trackLink(t) {
  return el("a", { href: `/track/${t.id}`, dataset: { link: "" } }, trackName(t));
}

/** A playlist as an M3U file download (absolute paths: the agent's view of the library). */
export function downloadM3U(name, tracks) {
  const lines = ["#EXTM3U", `#PLAYLIST:${name}`];
  for (const t of tracks) {
    lines.push(`#EXTINF:${Math.round(t.duration || -1)},${[t.artist, trackName(t)].filter(Boolean).join(" - ")}`);
    lines.push(t.path);
  }
  const blob = new Blob([lines.join("\n") + "\n"], { type: "audio/x-mpegurl" });
  const a = el("a", { href: URL.createObjectURL(blob), download: name.replace(/[^\w.-]+/g, "_") + ".m3u" });
  document.body.append(a);
  a.click();
  setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
}

/** A list of tracks with play buttons and links (playlists, similar tracks, map selections). */
export function trackList(tracks, extra) {
  if (!tracks.length) return el("p.empty", "No tracks.");
  return el("ol.list.tracklist", tracks.map((t, i) => el("li", { dataset: { track: t.id } },
    playButton(t),
    el("span.muted.small", String(i + 1)),
    el("span.grow", trackLink(t), t.artist ? el("span.muted", " — " + t.artist) : null),
    extra ? extra(t) : null,
    el("span.muted.small.nowrap", fmtDuration(t.duration)),
  )));
}

/** A search box that finds one track (playlist seeds, path ends). Calls pick(track). */
export function trackPicker(placeholder, pick) {
  const input = el("input", { type: "search", placeholder, autocomplete: "off", "aria-label": placeholder });
  const results = el("ul.list.picker-results");
  let ctl = null;
  let timer = 0;
  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      ctl?.abort();
      ctl = new AbortController();
      const q = input.value.trim();
      if (!q) { fill(results); return; }
      try {
        const page = await api("/browse", { query: { q, limit: 6 }, signal: ctl.signal });
        fill(results, ...page.items.map((t) => el("li", {},
          el("button.ghost", { type: "button", onclick: () => { pick(t); input.value = trackName(t); fill(results); } },
            trackName(t)),
          el("span.muted.small.grow", t.artist || ""))));
        if (!page.items.length) fill(results, el("li.muted", "No match."));
      } catch (e) { if (e.name !== "AbortError") showError(results, e); }
    }, 180);
  });
  return el("div.picker", input, results);
}
