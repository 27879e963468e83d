// pgqueue dashboard (SPEC §14): plain JavaScript over the HTTP API and the /ws stream.
//
// The page holds no rights of its own: it sends the signed-in token as a Bearer header on
// every request (and as ?token= on the WebSocket, the one place browsers cannot set a
// header), and shows whatever the API answers. A user token therefore sees its own tasks
// because the API and the stream only ever give it those — never because this code hides
// anything. Every value from the API is put into the page as text (textContent), never as
// markup.
"use strict";

const TOKEN_KEY = "pgqueue.token";
const SAMPLES_KEY = "pgqueue.samples";
const CHART_WINDOW_MS = 15 * 60 * 1000;
const OVERVIEW_POLL_MS = 5000;
const WORKERS_POLL_MS = 2000;
const SCHEDULES_POLL_MS = 10000;
const PAGE_SIZE = 50;
const TERMINAL = new Set(["completed", "failed", "cancelled"]);
const STATUSES = ["pending", "running", "blocked", "waiting", "completed", "failed", "cancelled"];
// Offered as filters only once the server reports them (GET /queues counts them per queue).
const OPTIONAL_STATUSES = new Set(["blocked", "waiting"]);
const EVENTS_SHOWN = 200; // newest events drawn at first; the rest on request

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  signedIn: false,
  view: null, // the current view: {onTask?, onReconnect?, stop?}
  ws: null,
  wsBackoff: 500,
  streamDropped: false, // the stream was open and closed: changes may have been missed
  lastEventId: null,
  statuses: new Set(STATUSES.filter((s) => !OPTIONAL_STATUSES.has(s))), // the server's
};

// -- DOM helpers ---------------------------------------------------------------------------

/** An element: h("a", {href: "#/"}, "text", child). Strings become text nodes, never HTML. */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key in el && typeof value !== "string") el[key] = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function svg(tag, attrs) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs || {})) el.setAttribute(key, String(value));
  return el;
}

function main() {
  return document.getElementById("main");
}

function setMain(...children) {
  const m = main();
  m.replaceChildren();
  append(m, children);
}

// -- formatting ----------------------------------------------------------------------------

function fmtNum(n) {
  return n === null || n === undefined ? "—" : Number(n).toLocaleString("en");
}

function fmtAge(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "—";
  const s = Math.max(0, seconds);
  if (s < 1) return `${s.toFixed(1)} s`;
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} d`;
}

/** A <time> showing the local time (and how long ago), with the RFC 3339 value as title. */
function fmtTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  const ago = (Date.now() - d.getTime()) / 1000;
  const rel = ago >= 0 ? `${fmtAge(ago)} ago` : `in ${fmtAge(-ago)}`;
  const sameDay = new Date().toDateString() === d.toDateString();
  const text = sameDay ? d.toLocaleTimeString("en-GB") : d.toLocaleString("en-GB");
  return h("time", { datetime: iso, title: `${iso} (${rel})` }, text);
}

function shortId(id) {
  return String(id).slice(0, 8);
}

function taskLink(id, text) {
  return h("a", { href: `#/tasks/${encodeURIComponent(id)}`, class: "mono" }, text || shortId(id));
}

function statusBadge(status) {
  return h("span", { class: `status status-${status}`, "data-status": status }, status);
}

function json(value) {
  return JSON.stringify(value, null, 2);
}

function progressOf(task) {
  if (task.status === "completed") return 100;
  const p = task.progress || {};
  return typeof p.percent === "number" ? p.percent : null;
}

function progressCell(task) {
  const pct = progressOf(task);
  if (pct === null) return task.progress && task.progress.message ? task.progress.message : "";
  return h("progress", { max: 100, value: pct, title: `${pct}%`, "aria-label": `${pct}% done` });
}

// -- the API -------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
    this.detail = detail;
  }
  toString() {
    return this.status ? `${this.status}: ${this.detail}` : this.detail;
  }
}

/** JSON over HTTP with the token as Bearer header; an error answer becomes an ApiError. */
async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let resp;
  try {
    resp = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch (err) {
    throw new ApiError(0, `the server did not answer (${err.message})`);
  }
  const text = await resp.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (!resp.ok) {
    let detail = resp.statusText || "error";
    if (data && typeof data === "object" && data.detail) detail = String(data.detail);
    else if (typeof data === "string" && data) detail = data.slice(0, 500);
    if (resp.status === 401 && state.signedIn) signOut(`Signed out: ${detail}`);
    throw new ApiError(resp.status, detail);
  }
  return data;
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : "";
}

/** A view's "this token may not see this" (403) or other error, instead of breaking. */
function apiProblem(err, what) {
  if (err.status === 403) {
    return h("p", { class: "notice", "data-problem": "forbidden" },
      `${what} not available for this token (${err.detail}).`);
  }
  return h("p", { class: "alert", role: "alert" }, `${what}: ${err}`);
}

// -- sign in, session, live stream ---------------------------------------------------------

async function boot() {
  document.getElementById("signout").addEventListener("click", () => signOut("Signed out."));
  window.addEventListener("hashchange", route);
  try {
    // Whether this server wants a token at all (`pgqueue dev`, `serve --insecure`: no).
    const session = await api("/ui/session.json");
    if (session.auth_required && !state.token) {
      showSignIn(null);
      return;
    }
    if (!session.auth_required) state.token = null;
    else await api("/queues"); // the saved token still works?
    startSession();
  } catch (err) {
    if (err.status === 401) showSignIn(`The saved token was refused: ${err.detail}`);
    else setMain(h("p", { class: "alert", role: "alert" }, `Cannot reach the pgqueue API: ${err}`));
  }
}

function showSignIn(message) {
  stopView();
  closeStream();
  state.signedIn = false;
  document.getElementById("nav").hidden = true;
  document.getElementById("session").hidden = true;
  const input = h("input", {
    id: "token", name: "token", type: "password", autocomplete: "off", required: true,
    spellcheck: "false", placeholder: "pgq_…",
  });
  const alert = h("p", { class: "alert", role: "alert", id: "signin-error" }, message || "");
  const button = h("button", { type: "submit" }, "Sign in");
  const form = h("form", {
    onsubmit: async (ev) => {
      ev.preventDefault();
      button.disabled = true;
      alert.textContent = "";
      state.token = input.value.trim();
      try {
        await api("/queues");
        sessionStorage.setItem(TOKEN_KEY, state.token);
        startSession();
      } catch (err) {
        state.token = null;
        alert.textContent = err.status === 401 ? `Sign-in refused: ${err.detail}` : String(err);
        button.disabled = false;
        input.focus();
      }
    },
  },
  h("label", { for: "token" }, "API token"),
  input,
  h("p", { class: "muted" },
    "Create one with ", h("code", {}, "pgqueue token create --user NAME --role admin|user"),
    ". It is kept in this tab only (sessionStorage)."),
  button,
  alert);
  setMain(h("section", { class: "signin panel", "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title" }, "Sign in to pgqueue"), form));
  document.title = "Sign in · pgqueue";
  input.focus();
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(SAMPLES_KEY);
  state.token = null;
  showSignIn(message);
}

function startSession() {
  state.signedIn = true;
  document.getElementById("nav").hidden = false;
  document.getElementById("session").hidden = false;
  document.getElementById("signout").hidden = !state.token;
  document.getElementById("who").textContent = state.token
    ? `token ${state.token.slice(0, 10)}…`
    : "no auth (insecure)";
  openStream();
  route();
}

function setLive(s, text) {
  const el = document.getElementById("live");
  el.dataset.state = s;
  el.textContent = text;
}

/** Follow every change this token may see (/ws, SPEC §5); reconnect with backoff. */
function openStream() {
  closeStream();
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  let url = `${proto}//${location.host}/ws`;
  if (state.token) url += `?token=${encodeURIComponent(state.token)}`;
  const ws = new WebSocket(url);
  let opened = false;
  state.ws = ws;
  setLive("connecting", "connecting");
  ws.onopen = () => {
    opened = true;
    state.wsBackoff = 500;
    const op = { op: "subscribe", all: true };
    // Servers that number their changes can replay what was missed while disconnected.
    if (state.lastEventId) op.since = state.lastEventId;
    ws.send(JSON.stringify(op));
    setLive("live", "live");
    // Back after a drop: what changed meanwhile is read again (unless `since` replays it).
    if (state.streamDropped && !op.since && state.view && state.view.onReconnect) state.view.onReconnect();
    state.streamDropped = false;
  };
  ws.onmessage = (ev) => {
    let msg;
    try {
      msg = JSON.parse(ev.data);
    } catch {
      return;
    }
    if (msg.type === "task" || msg.type === "state") {
      if (msg.event_id) state.lastEventId = msg.event_id;
      if (state.view && state.view.onTask) state.view.onTask(msg.event || "state", msg.task);
    } else if (msg.type === "error" && msg.code === "since_expired") {
      state.lastEventId = null;
      if (state.view && state.view.onReconnect) state.view.onReconnect();
    }
  };
  ws.onclose = (ev) => {
    if (state.ws !== ws) return; // replaced or closed on purpose
    state.ws = null;
    if (ev.code === 4401) {
      signOut(`Signed out: ${ev.reason || "the token was refused"}`);
      return;
    }
    setLive("off", "offline, reconnecting");
    if (opened) state.streamDropped = true;
    const delay = state.wsBackoff;
    state.wsBackoff = Math.min(state.wsBackoff * 2, 10000);
    setTimeout(() => {
      if (state.signedIn && !state.ws) openStream();
    }, delay);
  };
}

function closeStream() {
  const ws = state.ws;
  state.ws = null;
  if (ws) ws.close(1000, "bye");
  setLive("off", "offline");
}

// -- routing -------------------------------------------------------------------------------

const ROUTES = [
  [/^#?\/?$/, () => overviewView()],
  [/^#\/tasks\/([^/?]+)$/, (m) => taskView(decodeURIComponent(m[1]))],
  [/^#\/tasks(?:\?(.*))?$/, (m) => tasksView(new URLSearchParams(m[1] || ""))],
  [/^#\/workers$/, () => workersView()],
  [/^#\/schedules$/, () => schedulesView()],
  [/^#\/queues\/([^/?]+)$/, (m) => queueView(decodeURIComponent(m[1]))],
];

function stopView() {
  if (state.view && state.view.stop) state.view.stop();
  state.view = null;
}

function route() {
  if (!state.signedIn) return;
  const hash = location.hash;
  if (hash && !hash.startsWith("#/")) return; // an in-page anchor (the skip link)
  stopView();
  for (const [pattern, make] of ROUTES) {
    const m = hash.match(pattern);
    if (m) {
      const name = pattern === ROUTES[0][0] ? "overview" : hash.slice(2).split(/[/?]/)[0];
      for (const a of document.querySelectorAll("nav a")) {
        if (a.dataset.view === name) a.setAttribute("aria-current", "page");
        else a.removeAttribute("aria-current");
      }
      delete main().dataset.taskStatus;
      state.view = make(m);
      main().focus({ preventScroll: true });
      return;
    }
  }
  setMain(h("h1", {}, "Not found"), h("p", {}, "No such view. ", h("a", { href: "#/" }, "Overview")));
}

function title(text) {
  document.title = `${text} · pgqueue`;
  return h("h1", {}, text);
}

/** Run fn at most once per `ms`, the last call winning (live updates arrive in bursts). */
function throttle(fn, ms) {
  let timer = null;
  let again = false;
  return () => {
    if (timer) {
      again = true;
      return;
    }
    fn();
    timer = setTimeout(function tick() {
      if (again) {
        again = false;
        fn();
        timer = setTimeout(tick, ms);
      } else timer = null;
    }, ms);
  };
}

/** Call fn now and every `ms` while the tab is visible (a hidden tab costs the API nothing). */
function poller(fn, ms) {
  let stopped = false;
  let timer = null;
  const run = async () => {
    if (!document.hidden) await fn();
    if (!stopped) timer = setTimeout(run, ms);
  };
  const onVisible = () => {
    if (!document.hidden && !stopped) {
      clearTimeout(timer);
      run();
    }
  };
  document.addEventListener("visibilitychange", onVisible);
  run();
  return () => {
    stopped = true;
    clearTimeout(timer);
    document.removeEventListener("visibilitychange", onVisible);
  };
}

// -- Overview ------------------------------------------------------------------------------

function loadSamples() {
  try {
    const all = JSON.parse(sessionStorage.getItem(SAMPLES_KEY) || "[]");
    const since = Date.now() - CHART_WINDOW_MS;
    return Array.isArray(all) ? all.filter((s) => s.t >= since) : [];
  } catch {
    return [];
  }
}

function overviewView() {
  const chartThroughput = h("div", { class: "chart panel" });
  const chartDepth = h("div", { class: "chart panel" });
  const tableBox = h("div", {});
  const problem = h("div", {});
  const updated = h("p", { class: "muted" });
  setMain(
    title("Overview"),
    problem,
    h("div", { class: "charts" }, chartThroughput, chartDepth),
    h("h2", {}, "Queues"),
    tableBox,
    updated,
  );
  let samples = loadSamples();
  let lastSample = 0;
  let active = true;

  const draw = () => {
    drawChart(chartThroughput, samples, [{ key: "throughput", label: "completed per minute", cls: "a" }],
      "Throughput, last 15 minutes");
    drawChart(chartDepth, samples, [
      { key: "pending", label: "pending", cls: "b" },
      { key: "running", label: "running", cls: "a" },
    ], "Depth, last 15 minutes");
  };

  const refresh = async () => {
    if (!active) return;
    let queues;
    try {
      queues = await api("/queues");
    } catch (err) {
      problem.replaceChildren(apiProblem(err, "Queues"));
      return;
    }
    if (!active) return;
    problem.replaceChildren();
    noteStatuses(queues);
    const now = Date.now();
    if (now - lastSample >= OVERVIEW_POLL_MS - 250) {
      lastSample = now;
      const sum = (key) => queues.reduce((acc, q) => acc + (Number(q[key]) || 0), 0);
      samples.push({ t: now, throughput: sum("completed_last_minute"), pending: sum("pending"), running: sum("running") });
      samples = samples.filter((s) => s.t >= now - CHART_WINDOW_MS);
      try {
        sessionStorage.setItem(SAMPLES_KEY, JSON.stringify(samples));
      } catch {
        // storage full: the chart still draws from memory
      }
    }
    tableBox.replaceChildren(queuesTable(queues));
    updated.textContent = `Updated ${new Date(now).toLocaleTimeString("en-GB")}; counts poll every ${OVERVIEW_POLL_MS / 1000} s and on every change.`;
    draw();
  };
  const stopPoll = poller(refresh, OVERVIEW_POLL_MS);
  const soon = throttle(refresh, 1000);
  const onResize = throttle(draw, 200);
  window.addEventListener("resize", onResize);
  draw();
  return {
    onTask: soon,
    onReconnect: refresh,
    stop() {
      active = false;
      stopPoll();
      window.removeEventListener("resize", onResize);
    },
  };
}

// SPEC §12's settings beyond pause and the concurrency limit, when the server reports them.
const MORE_SETTINGS = ["rate_limit", "per_user_concurrency", "fair", "circuit_breaker"];
const LIMIT_KEYS = ["concurrency_limit", ...MORE_SETTINGS, "open_breakers"];

function limitsText(q) {
  const parts = [];
  for (const key of LIMIT_KEYS) {
    const v = q[key];
    if (v === null || v === undefined || v === false || (Array.isArray(v) && !v.length)) continue;
    parts.push(`${key.replace(/_/g, " ")}: ${typeof v === "object" ? JSON.stringify(v) : v}`);
  }
  return parts.join("; ") || "none";
}

function noteStatuses(queues) {
  for (const q of queues) for (const s of OPTIONAL_STATUSES) if (s in q) state.statuses.add(s);
}

function queuesTable(queues) {
  if (!queues.length) {
    return h("p", { class: "notice" }, "No queues yet. Enqueue a task: ",
      h("code", {}, "curl -X POST /tasks -d '{\"kind\": \"demo.echo\"}'"));
  }
  const counts = ["pending", "running", "blocked", "waiting", "completed", "failed", "cancelled"]
    .filter((k) => queues.some((q) => k in q));
  const head = h("tr", {},
    h("th", { scope: "col" }, "Queue"),
    counts.map((k) => h("th", { scope: "col", class: "num" }, k)),
    h("th", { scope: "col", class: "num" }, "due"),
    h("th", { scope: "col", class: "num" }, "oldest due"),
    h("th", { scope: "col", class: "num" }, "done/min"),
    h("th", { scope: "col" }, "paused"),
    h("th", { scope: "col" }, "limits"),
    h("th", { scope: "col" }, h("span", { class: "muted" }, "settings")));
  const rows = queues.map((q) => h("tr", { "data-queue": q.name },
    h("th", { scope: "row" }, h("a", { href: `#/tasks?queue=${encodeURIComponent(q.name)}` }, q.name)),
    counts.map((k) => h("td", { class: "num", "data-count": k },
      q[k] ? h("a", { href: `#/tasks?queue=${encodeURIComponent(q.name)}&status=${k}` }, fmtNum(q[k])) : fmtNum(q[k]))),
    h("td", { class: "num" }, fmtNum(q.due)),
    h("td", { class: "num" }, q.due ? fmtAge(q.oldest_due_age_s) : "—"),
    h("td", { class: "num" }, fmtNum(q.completed_last_minute)),
    h("td", {}, q.paused ? h("strong", {}, "paused") : "no"),
    h("td", {}, limitsText(q)),
    h("td", {}, h("a", { href: `#/queues/${encodeURIComponent(q.name)}`, "aria-label": `settings of ${q.name}` }, "settings"))));
  return h("div", { class: "table-wrap" }, h("table", { id: "queues" }, h("thead", {}, head), h("tbody", {}, rows)));
}

/** A line chart of `series` over the last 15 minutes, drawn as SVG at the box's pixel width. */
function drawChart(box, samples, series, caption) {
  const width = Math.max(240, Math.floor(box.clientWidth - 32) || 560);
  const height = 170;
  const pad = { l: 44, r: 10, t: 10, b: 22 };
  const now = Date.now();
  const x0 = now - CHART_WINDOW_MS;
  let max = 1;
  for (const s of samples) for (const { key } of series) max = Math.max(max, s[key] || 0);
  max = niceCeil(max);
  const xs = (t) => pad.l + ((t - x0) / CHART_WINDOW_MS) * (width - pad.l - pad.r);
  const ys = (v) => height - pad.b - (v / max) * (height - pad.t - pad.b);
  const latest = samples[samples.length - 1];
  const summary = series.map(({ key, label }) => `${label} ${latest ? fmtNum(latest[key]) : "—"}`).join(", ");
  const el = svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-label": `${caption}: now ${summary}` });
  for (const v of [0, max / 2, max]) {
    el.append(svg("line", { class: "axis", x1: pad.l, x2: width - pad.r, y1: ys(v), y2: ys(v) }));
    const label = svg("text", { x: pad.l - 6, y: ys(v) + 4, "text-anchor": "end" });
    label.textContent = fmtNum(Math.round(v * 10) / 10);
    el.append(label);
  }
  for (const [t, text] of [[x0, "−15 min"], [now - CHART_WINDOW_MS / 2, "−7.5 min"], [now, "now"]]) {
    const label = svg("text", { x: xs(t), y: height - 6, "text-anchor": t === x0 ? "start" : t === now ? "end" : "middle" });
    label.textContent = text;
    el.append(label);
  }
  for (const { key, cls } of series) {
    const points = samples.map((s) => `${xs(s.t).toFixed(1)},${ys(s[key] || 0).toFixed(1)}`);
    if (points.length === 1) points.push(`${xs(now).toFixed(1)},${ys(samples[0][key] || 0).toFixed(1)}`);
    if (points.length) el.append(svg("polyline", { class: `line-${cls}`, points: points.join(" ") }));
  }
  const legend = h("div", { class: "legend" }, series.map(({ key, label, cls }) =>
    h("span", {}, h("span", { class: `swatch swatch-${cls}`, "aria-hidden": "true" }), `${label}: ${latest ? fmtNum(latest[key]) : "—"}`)));
  // The points are this tab's polls of GET /queues: a new tab has no past to draw yet.
  if (!samples.length || samples[0].t > x0 + 30000) {
    legend.append(h("span", { class: "muted" }, samples.length ? `since ${new Date(samples[0].t).toLocaleTimeString("en-GB")}` : "collecting…"));
  }
  box.replaceChildren(h("figure", {}, h("figcaption", {}, caption), el, legend));
}

function niceCeil(v) {
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

// -- Tasks ---------------------------------------------------------------------------------

const FILTERS = ["status", "queue", "kind", "tag", "user_id"];

function tasksView(params) {
  const filters = Object.fromEntries(FILTERS.map((k) => [k, params.get(k) || ""]));
  const cursor = params.get("cursor") || "";
  const form = filterForm(filters);
  const problem = h("div", {});
  const tbody = h("tbody", {});
  const pager = h("div", { class: "pager" });
  const count = h("p", { class: "muted", role: "status" });
  setMain(title("Tasks"), form, problem,
    h("div", { class: "table-wrap" }, h("table", { id: "tasks" },
      h("thead", {}, h("tr", {},
        ["Task", "Kind", "Queue", "Status", "Progress", "Attempts", "User", "Created", "Updated"]
          .map((c) => h("th", { scope: "col" }, c)))),
      tbody)),
    count, pager);
  const rows = new Map(); // task id -> {tr, task}

  const renderRow = (task) => {
    const cells = [
      h("td", {}, taskLink(task.id)),
      h("td", {}, task.kind),
      h("td", {}, task.queue),
      h("td", {}, statusBadge(task.status)),
      h("td", {}, progressCell(task)),
      h("td", { class: "num" }, `${task.attempts}/${(task.max_retries ?? 0) + 1}`),
      h("td", {}, task.user_id ?? "—"),
      h("td", {}, fmtTime(task.created_at)),
      h("td", {}, fmtTime(task.updated_at)),
    ];
    const old = rows.get(task.id);
    const tr = old ? old.tr : h("tr", { "data-task": task.id });
    tr.dataset.status = task.status;
    tr.replaceChildren(...cells);
    rows.set(task.id, { tr, task });
    return tr;
  };

  const load = async () => {
    let page;
    try {
      page = await api(`/tasks${query({ ...filters, cursor, limit: PAGE_SIZE })}`);
    } catch (err) {
      problem.replaceChildren(apiProblem(err, "Tasks"));
      return;
    }
    problem.replaceChildren();
    rows.clear();
    tbody.replaceChildren(...page.items.map(renderRow));
    count.textContent = page.items.length ? `${page.items.length} tasks on this page, newest first.` : "No tasks match.";
    const base = query(filters).slice(1);
    pager.replaceChildren();
    append(pager, [
      cursor ? h("a", { href: `#/tasks${base ? `?${base}` : ""}` }, "« First page") : null,
      page.next_cursor ? h("a", { href: `#/tasks?${base ? `${base}&` : ""}cursor=${encodeURIComponent(page.next_cursor)}` }, "Next page »") : null,
    ]);
  };
  load();

  const matches = (t) =>
    (!filters.status || t.status === filters.status) &&
    (!filters.queue || t.queue === filters.queue) &&
    (!filters.kind || t.kind === filters.kind) &&
    (!filters.tag || (t.tags || []).includes(filters.tag)) &&
    (!filters.user_id || t.user_id === filters.user_id);

  return {
    onTask(event, t) {
      const row = rows.get(t.id);
      if (row) {
        renderRow({ ...row.task, ...t });
        flash(row.tr);
      } else if (!cursor && matches(t)) {
        // A task this token may see, new on the first page: shown at the top.
        const tr = renderRow(t);
        tbody.prepend(tr);
        flash(tr);
        while (tbody.children.length > PAGE_SIZE) {
          const last = tbody.lastElementChild;
          rows.delete(last.dataset.task);
          last.remove();
        }
      }
    },
    onReconnect: load,
  };
}

function flash(tr) {
  tr.classList.remove("flash");
  void tr.offsetWidth; // restart the animation
  tr.classList.add("flash");
}

function filterForm(filters) {
  const field = (name, label, control) => h("label", { for: `f-${name}` }, label, control);
  const input = (name) => h("input", { id: `f-${name}`, name, value: filters[name], size: 14, autocomplete: "off" });
  const status = h("select", { id: "f-status", name: "status" },
    h("option", { value: "" }, "any"),
    STATUSES.filter((s) => state.statuses.has(s) || filters.status === s)
      .map((s) => h("option", { value: s, selected: filters.status === s }, s)));
  return h("form", {
    class: "filters panel",
    "aria-label": "Filter tasks",
    onsubmit(ev) {
      ev.preventDefault();
      const data = new FormData(ev.target);
      const q = query(Object.fromEntries(FILTERS.map((k) => [k, String(data.get(k) || "").trim()])));
      location.hash = `#/tasks${q}`;
    },
  },
  field("status", "Status", status),
  field("queue", "Queue", input("queue")),
  field("kind", "Kind", input("kind")),
  field("tag", "Tag", input("tag")),
  field("user_id", "User", input("user_id")),
  h("button", { type: "submit" }, "Apply"),
  h("a", { href: "#/tasks", class: "button secondary" }, "Clear"));
}

// -- Task ----------------------------------------------------------------------------------

const FIELD_ORDER = [
  "id", "status", "queue", "kind", "priority", "attempts", "max_retries", "user_id", "tags",
  "parent_id", "depends_on", "worker_id", "cancel_requested", "run_at", "created_at", "started_at",
  "heartbeat_at", "completed_at", "updated_at", "timeout_s", "backoff_base_s", "backoff_max_s",
  "idempotency_key", "callback_url", "exit_code", "waiting_for", "seq",
];
// Shown in their own sections below the fields.
const BLOCKS = new Set(["payload", "result", "error", "progress", "checkpoint", "usage"]);
const TIME_FIELDS = /(_at)$/;

function taskView(id) {
  let task = null;
  let showAllEvents = false;
  let active = true; // false once the view is left: late answers must not touch the page
  const head = h("div", {});
  const alert = h("p", { class: "alert", role: "alert", id: "action-error" });
  const progressBox = h("div", { class: "progress-big" });
  const whyBox = h("section", { class: "panel", id: "why", hidden: true, "aria-labelledby": "why-title" });
  const fields = h("dl", { class: "fields", id: "fields" });
  const blocks = h("div", {});
  const links = h("div", {});
  const timeline = h("ol", { class: "timeline", id: "events" });

  const cancelBtn = h("button", { type: "button", class: "danger", id: "cancel", hidden: true, onclick: () => act("cancel") }, "Cancel");
  const retryBtn = h("button", { type: "button", id: "retry", hidden: true, onclick: () => act("retry") }, "Retry");
  const signalName = h("input", { id: "signal-name", name: "name", required: true, size: 14, autocomplete: "off" });
  const signalPayload = h("textarea", { id: "signal-payload", name: "payload", rows: 1, cols: 28, placeholder: "{}" });
  const signalForm = h("form", {
    class: "inline", id: "signal", hidden: true, "aria-label": "Send a signal",
    async onsubmit(ev) {
      ev.preventDefault();
      let payload;
      try {
        payload = signalPayload.value.trim() ? JSON.parse(signalPayload.value) : undefined;
      } catch (err) {
        alert.textContent = `payload: not JSON (${err.message})`;
        signalPayload.focus();
        return;
      }
      await act("signal", { name: signalName.value.trim(), ...(payload === undefined ? {} : { payload }) });
    },
  },
  h("label", { for: "signal-name" }, "Signal name", signalName),
  h("label", { for: "signal-payload" }, "Payload (JSON)", signalPayload),
  h("button", { type: "submit", class: "secondary" }, "Send signal"));

  setMain(
    head,
    h("div", { class: "actions" }, cancelBtn, retryBtn, signalForm),
    alert,
    progressBox,
    whyBox,
    h("div", { class: "grid2" },
      h("section", { class: "panel", "aria-labelledby": "fields-title" }, h("h2", { id: "fields-title" }, "Fields"), fields),
      h("div", {}, blocks, links)),
    h("section", { class: "panel", "aria-labelledby": "events-title" }, h("h2", { id: "events-title" }, "Events"), timeline),
  );
  head.append(title(`Task ${shortId(id)}`));

  async function act(what, body) {
    alert.textContent = "";
    for (const b of [cancelBtn, retryBtn]) b.disabled = true;
    try {
      const answer = await api(`/tasks/${encodeURIComponent(id)}/${what}`, { method: "POST", body });
      if (answer && answer.id === id) update(answer);
      if (what === "signal") signalName.value = "";
      refreshSoon();
    } catch (err) {
      alert.textContent = `${what} failed: ${err}`;
    } finally {
      for (const b of [cancelBtn, retryBtn]) b.disabled = false;
    }
  }

  function update(t) {
    if (!active) return;
    task = { ...(task || {}), ...t };
    const pct = progressOf(task);
    head.replaceChildren(
      title(`${task.kind} ${shortId(task.id)}`),
      h("p", {}, statusBadge(task.status), " ", task.cancel_requested && !TERMINAL.has(task.status) ? h("strong", {}, "cancel requested") : "",
        " in queue ", h("a", { href: `#/tasks?queue=${encodeURIComponent(task.queue)}` }, task.queue)),
    );
    document.getElementById("main").dataset.taskStatus = task.status;
    cancelBtn.hidden = TERMINAL.has(task.status);
    retryBtn.hidden = !(task.status === "failed" || task.status === "cancelled");
    signalForm.hidden = TERMINAL.has(task.status);
    const msg = task.progress && task.progress.message ? task.progress.message : "";
    progressBox.replaceChildren(
      h("label", { for: "task-progress" }, "Progress"),
      h("progress", { id: "task-progress", max: 100, value: pct ?? 0 }),
      h("span", { id: "progress-text" }, `${pct === null ? "—" : `${Math.round(pct * 10) / 10}%`}${msg ? ` — ${msg}` : ""}`),
    );
    renderFields();
    renderBlocks();
  }

  function renderFields() {
    const keys = [...FIELD_ORDER.filter((k) => k in task), ...Object.keys(task).filter((k) => !FIELD_ORDER.includes(k) && !BLOCKS.has(k)).sort()];
    fields.replaceChildren(...keys.flatMap((k) => [h("dt", {}, k), h("dd", { "data-field": k }, fieldValue(k, task[k]))]));
  }

  function renderBlocks() {
    const parts = [];
    const block = (name, label, value, extra) => h("section", { class: "panel", id: `block-${name}`, "aria-label": label },
      h("h2", {}, label), extra || null, value === undefined ? null : h("pre", {}, json(value)));
    if (task.error) {
      const { traceback, ...rest } = task.error;
      parts.push(h("section", { class: "panel", id: "block-error", "aria-label": "Error" },
        h("h2", {}, "Error"),
        h("p", {}, h("strong", {}, String(rest.type ?? "error")), ": ", String(rest.message ?? "")),
        h("pre", {}, json(rest)),
        traceback ? [h("h3", {}, "Traceback"), h("pre", { class: "traceback", id: "traceback" }, String(traceback))] : null));
    }
    if ("result" in task && task.result !== null) parts.push(block("result", "Result", task.result));
    if ("payload" in task) parts.push(block("payload", "Payload", task.payload));
    if (task.progress) parts.push(block("progress", "Progress", task.progress));
    if (task.checkpoint) parts.push(block("checkpoint", "Checkpoint", task.checkpoint));
    if (task.usage) {
      const u = task.usage;
      parts.push(block("usage", "Usage", undefined,
        h("p", {}, `${fmtNum(u.input_tokens)} input tokens, ${fmtNum(u.output_tokens)} output tokens, cost ${Math.round((u.cost ?? 0) * 1e6) / 1e6}`)));
    }
    blocks.replaceChildren(...parts);
  }

  async function loadRelated() {
    const [children, deps] = await Promise.all([
      api(`/tasks${query({ parent_id: id, limit: 100 })}`).catch(() => null),
      Promise.resolve(task && Array.isArray(task.depends_on) ? task.depends_on : []),
    ]);
    const parts = [];
    if (task && task.parent_id) parts.push(h("p", {}, "Parent: ", taskLink(task.parent_id, task.parent_id)));
    if (deps.length) parts.push(h("h3", {}, "Depends on"), h("ul", { class: "links" }, deps.map((d) => h("li", {}, taskLink(d, d)))));
    if (children && children.items.length) {
      parts.push(h("h3", {}, "Children"), h("ul", { class: "links", id: "children" }, children.items.map((c) =>
        h("li", {}, taskLink(c.id), ` ${c.kind} `, statusBadge(c.status)))));
    }
    links.replaceChildren(parts.length ? h("section", { class: "panel", "aria-label": "Related tasks" }, h("h2", {}, "Related"), parts) : "");
  }

  async function loadEvents() {
    let events;
    try {
      events = await api(`/tasks/${encodeURIComponent(id)}/events`);
    } catch (err) {
      timeline.replaceChildren(h("li", {}, `events: ${err}`));
      return;
    }
    const item = (e) => h("li", { "data-event": e.event },
      h("span", { class: "when" }, fmtTime(e.at)),
      h("strong", {}, e.event), ` → ${e.status}, attempt ${e.attempt}`,
      e.worker_id ? h("span", { class: "muted" }, ` on ${e.worker_id}`) : "",
      e.data !== null && e.data !== undefined ? h("details", {}, h("summary", {}, "data"), h("pre", {}, json(e.data))) : "");
    // A long task reports progress thousands of times: the oldest ones wait behind a button.
    const hidden = showAllEvents ? 0 : Math.max(0, events.length - EVENTS_SHOWN);
    timeline.replaceChildren(...events.slice(hidden).map(item));
    if (hidden) {
      timeline.prepend(h("li", { class: "more" }, h("button", {
        type: "button",
        class: "secondary",
        id: "all-events",
        onclick() {
          showAllEvents = true;
          loadEvents();
        },
      }, `Show the ${fmtNum(hidden)} older events`)));
    }
    if (!events.length) timeline.replaceChildren(h("li", {}, "no events"));
  }

  /** The `why` panel: shown when the server answers GET /tasks/{id}/why (SPEC §12). */
  async function loadWhy() {
    if (!task || task.status === "running" || TERMINAL.has(task.status)) {
      whyBox.hidden = true;
      return;
    }
    let why;
    try {
      why = await api(`/tasks/${encodeURIComponent(id)}/why`);
    } catch {
      whyBox.hidden = true; // not served by this server (yet), or not answerable now
      return;
    }
    const reasons = (why && why.reasons) || [];
    whyBox.replaceChildren(h("h2", { id: "why-title" }, "Why is it not running?"),
      reasons.length
        ? h("ul", {}, reasons.map((r) => h("li", { "data-code": r.code }, h("strong", {}, r.code), r.detail ? `: ${r.detail}` : "")))
        : h("p", {}, "No reason: it should start soon."));
    whyBox.hidden = false;
  }

  async function load() {
    try {
      update(await api(`/tasks/${encodeURIComponent(id)}`));
    } catch (err) {
      if (!active) return false;
      const msg = err.status === 404 ? `There is no task ${id} that this token may see.` : String(err);
      head.replaceChildren(title("Task not found"));
      setMain(head, h("p", { class: "alert", role: "alert", id: "not-found" }, msg), h("p", {}, h("a", { href: "#/tasks" }, "All tasks")));
      return false;
    }
    await Promise.all([loadEvents(), loadRelated(), loadWhy()]);
    return true;
  }
  const refreshSoon = throttle(() => {
    load();
  }, 300);
  load().then((ok) => {
    // Follow this task even if it is outside the "all" subscription's reach.
    if (ok && state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify({ op: "subscribe", task_ids: [id] }));
  });
  return {
    onTask(event, t) {
      if (t.id !== id || !task) return;
      // The stream carries status and progress: shown at once; the rest is read again.
      update(t);
      refreshSoon();
    },
    onReconnect: load,
    stop() {
      active = false;
      if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify({ op: "unsubscribe", task_ids: [id] }));
    },
  };
}

function fieldValue(key, value) {
  if (value === null || value === undefined) return "—";
  if ((key === "parent_id" || key === "last_task_id") && value) return taskLink(value, value);
  if (key === "depends_on" && Array.isArray(value)) return value.length ? h("span", {}, value.map((d, i) => [i ? ", " : "", taskLink(d)])) : "—";
  if (key === "status") return statusBadge(value);
  if (key === "queue") return h("a", { href: `#/tasks?queue=${encodeURIComponent(value)}` }, value);
  if (TIME_FIELDS.test(key) && typeof value === "string") return fmtTime(value);
  if (Array.isArray(value)) return value.length ? value.join(", ") : "—";
  if (typeof value === "object") return h("code", {}, JSON.stringify(value));
  return String(value);
}

// -- Workers -------------------------------------------------------------------------------

function workersView() {
  const box = h("div", {});
  const note = h("p", { class: "muted" });
  setMain(title("Workers"), box, note);
  const stop = poller(async () => {
    let workers;
    try {
      workers = await api("/workers");
    } catch (err) {
      box.replaceChildren(apiProblem(err, "Workers are"));
      return;
    }
    note.textContent = `Live: read every ${WORKERS_POLL_MS / 1000} s. A worker is listed while its heartbeat row exists.`;
    if (!workers.length) {
      box.replaceChildren(h("p", { class: "notice" }, "No live worker. Start one: ", h("code", {}, "pgqueue worker myapp:app")));
      return;
    }
    box.replaceChildren(h("div", { class: "table-wrap" }, h("table", { id: "workers" },
      h("thead", {}, h("tr", {}, ["Worker", "Host", "PID", "Queues", "Kinds", "Running", "Started", "Heartbeat age"]
        .map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, workers.map((w) => h("tr", { "data-worker": w.id },
        h("td", { class: "mono" }, w.id),
        h("td", {}, w.host),
        h("td", { class: "num" }, w.pid),
        h("td", {}, (w.queues || []).join(", ")),
        h("td", {}, (w.kinds || []).length ? w.kinds.join(", ") : "any"),
        h("td", { class: "num" }, `${w.running}/${w.concurrency}`),
        h("td", {}, fmtTime(w.started_at)),
        h("td", { class: "num", "data-heartbeat-age": w.heartbeat_age_s }, fmtAge(w.heartbeat_age_s))))))));
  }, WORKERS_POLL_MS);
  return { stop };
}

// -- Schedules -----------------------------------------------------------------------------

function schedulesView() {
  const box = h("div", {});
  const alert = h("p", { class: "alert", role: "alert" });
  setMain(title("Schedules"), alert, box);
  const load = async () => {
    let schedules;
    try {
      schedules = await api("/schedules");
    } catch (err) {
      box.replaceChildren(apiProblem(err, "Schedules are"));
      return;
    }
    if (!schedules.length) {
      box.replaceChildren(h("p", { class: "notice" }, "No schedules. Create one: ", h("code", {}, "pgqueue schedule add …"), " or POST /schedules."));
      return;
    }
    box.replaceChildren(h("div", { class: "table-wrap" }, h("table", { id: "schedules" },
      h("thead", {}, h("tr", {}, ["Name", "Cron", "Time zone", "Task", "State", "Next fire", "Last fire", ""]
        .map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, schedules.map((s) => h("tr", { "data-schedule": s.name },
        h("th", { scope: "row" }, s.name),
        h("td", { class: "mono" }, s.cron),
        h("td", {}, s.timezone),
        h("td", {}, `${s.task.kind ?? "?"} on ${s.task.queue ?? "default"}`),
        h("td", {}, s.enabled ? "active" : h("strong", {}, "paused")),
        h("td", {}, s.enabled ? fmtTime(s.next_fire_at) : "—"),
        h("td", {}, s.last_fire_at ? [fmtTime(s.last_fire_at), " ", s.last_task_id ? taskLink(s.last_task_id) : ""] : "never"),
        h("td", {}, h("button", {
          type: "button",
          class: "secondary",
          "aria-label": `${s.enabled ? "Pause" : "Resume"} ${s.name}`,
          async onclick(ev) {
            ev.target.disabled = true;
            alert.textContent = "";
            try {
              await api(`/schedules/${encodeURIComponent(s.name)}`, { method: "PATCH", body: { enabled: !s.enabled } });
            } catch (err) {
              alert.textContent = `${s.enabled ? "pause" : "resume"} ${s.name} failed: ${err}`;
            }
            await load();
          },
        }, s.enabled ? "Pause" : "Resume"))))))));
  };
  const stop = poller(load, SCHEDULES_POLL_MS);
  return { stop };
}

// -- Queue settings ------------------------------------------------------------------------

function queueView(name) {
  const statsBox = h("div", {});
  const alert = h("p", { class: "alert", role: "alert", id: "settings-error" });
  const saved = h("p", { role: "status", class: "muted" });
  const paused = h("input", { type: "checkbox", id: "q-paused", name: "paused" });
  const limit = h("input", { type: "number", id: "q-limit", name: "concurrency_limit", min: 1, max: 100000, size: 8, placeholder: "none" });
  const more = h("textarea", { id: "q-more", name: "more", rows: 2, cols: 40, placeholder: "{\"rate_limit\": {\"tasks\": 10, \"per_s\": 1}}" });
  let loadedOnce = false;
  const form = h("form", {
    class: "panel", id: "queue-settings", "aria-label": `Settings of ${name}`,
    async onsubmit(ev) {
      ev.preventDefault();
      alert.textContent = "";
      saved.textContent = "";
      let extra = {};
      try {
        extra = more.value.trim() ? JSON.parse(more.value) : {};
      } catch (err) {
        alert.textContent = `more settings: not JSON (${err.message})`;
        return;
      }
      const body = { paused: paused.checked, concurrency_limit: limit.value ? Number(limit.value) : null, ...extra };
      try {
        await api(`/queues/${encodeURIComponent(name)}`, { method: "PATCH", body });
        saved.textContent = "Saved.";
        loadedOnce = false;
        await load();
      } catch (err) {
        alert.textContent = `saving failed: ${err}`;
      }
    },
  },
  h("h2", {}, "Settings"),
  h("div", { class: "actions" },
    h("label", { class: "check", for: "q-paused" }, paused, "Paused (no task of this queue starts)"),
    h("label", { for: "q-limit" }, "Concurrency limit (empty: none)", limit)),
  h("label", { for: "q-more" }, "Other settings as JSON (e.g. rate_limit, per_user_concurrency, fair)", more),
  h("div", { class: "actions" }, h("button", { type: "submit" }, "Save")),
  alert, saved);
  setMain(title(`Queue ${name}`), h("p", {}, h("a", { href: `#/tasks?queue=${encodeURIComponent(name)}` }, "Its tasks")), statsBox, form);

  async function load() {
    let queues;
    try {
      queues = await api("/queues");
    } catch (err) {
      statsBox.replaceChildren(apiProblem(err, "Queues"));
      return;
    }
    const q = queues.find((x) => x.name === name);
    if (!q) {
      statsBox.replaceChildren(h("p", { class: "notice" }, `No queue ${name} has tasks or settings yet.`));
      return;
    }
    statsBox.replaceChildren(queuesTable([q]));
    if (!loadedOnce) {
      loadedOnce = true;
      paused.checked = !!q.paused;
      limit.value = q.concurrency_limit ?? "";
      const current = Object.fromEntries(MORE_SETTINGS.filter((k) => k in q).map((k) => [k, q[k]]));
      more.value = Object.keys(current).length ? JSON.stringify(current) : "";
    }
  }
  const stop = poller(load, OVERVIEW_POLL_MS);
  return { stop, onTask: throttle(load, 1000) };
}

boot();
