// The dashboard's one page (controller/cli/dashboard/__init__.py serves it): the list at /, a
// rollout at /rollouts/<namespace>/<name>. Everything after the first load arrives on the event
// stream (/api/stream, fed by the server's watch): no polling. Text goes in as text, never as HTML.
"use strict";

const TOKEN = document.querySelector('meta[name="modelrollout-token"]').content;
const main = document.getElementById("main");
const live = document.getElementById("live");
// For people and for the browser test: when this page was loaded and how many updates it applied.
window.__dashboard = { loadedAt: Date.now(), updates: 0 };
const COLORS = { candidate: "#2563eb", incumbent: "#7a8494", bound: "#dc2626", needed: "#b45309", pass: "#15803d" };

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "onclick") node.addEventListener("click", v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== undefined && v !== null) node.setAttribute(k, String(v));
  for (const c of children.flat()) if (c !== undefined && c !== null) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function age(ts) {
  if (!ts) return "-";
  const s = Math.max(0, Math.round((Date.now() - Date.parse(ts)) / 1000));
  if (s < 120) return s + "s";
  if (s < 7200) return Math.floor(s / 60) + "m";
  if (s < 172800) return Math.floor(s / 3600) + "h";
  return Math.floor(s / 86400) + "d";
}

function clock(ts) {
  if (!ts) return "-";
  const d = typeof ts === "number" ? new Date(ts * 1000) : new Date(ts);
  return d.toISOString().replace("T", " ").slice(0, 19);
}

function num(v) {
  if (v === undefined || v === null) return "-";
  const a = Math.abs(v);
  return a !== 0 && (a < 0.001 || a >= 1e6) ? v.toExponential(2) : String(+v.toPrecision(4));
}

function badge(phase) { return el("span", { class: "badge " + phase, "data-phase": phase }, phase); }

function weightBar(w) {
  if (!w) return el("span", { class: "muted" }, "-");
  return el("span", {}, el("span", { class: "bar", title: `incumbent ${w.incumbent}%, candidate ${w.candidate}%` },
    el("span", { class: "c", style: `width:${w.candidate}%` }), el("span", { class: "i", style: `width:${w.incumbent}%` })),
    " ", `${w.candidate}%`);
}

function toast(text, error) {
  const t = document.getElementById("toast");
  t.textContent = text;
  t.className = error ? "error" : "";
  t.style.display = "block";
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.style.display = "none"; }, 6000);
}

async function getJSON(path) {
  const reply = await fetch(path, { headers: { Accept: "application/json" } });
  const body = await reply.json();
  if (!reply.ok) throw new Error(body.error || reply.statusText);
  return body;
}

// -- the list -----------------------------------------------------------------------------------

const rows = new Map();

function listRow(r) {
  const key = `${r.namespace}/${r.name}`;
  const row = el("tr", { class: "rollout", "data-key": key, onclick: () => { location.href = `/rollouts/${key}`; } },
    el("td", {}, r.namespace),
    el("td", {}, el("a", { href: `/rollouts/${key}` }, r.name)),
    el("td", { class: "phase" }, badge(r.phase)),
    el("td", {}, r.step || "-"),
    el("td", {}, weightBar(r.weights)),
    el("td", { class: "reason" }, r.reason || "-"),
    el("td", {}, r.incumbent || "-"),
    el("td", {}, r.candidate || "-"),
    el("td", { class: "t" }, age(r.created)));
  row.title = r.message || "";
  return row;
}

function renderList(items) {
  rows.clear();
  const body = el("tbody", {});
  for (const r of items) { const row = listRow(r); rows.set(`${r.namespace}/${r.name}`, row); body.append(row); }
  main.replaceChildren(
    el("h1", {}, "Rollouts"),
    el("p", { class: "muted", id: "count" }),
    el("table", { id: "rollouts" },
      el("thead", {}, el("tr", {}, ...["Namespace", "Name", "Phase", "Step", "Candidate weight", "Verdict / reason", "Incumbent", "Candidate", "Age"].map((h) => el("th", {}, h)))),
      body));
  count();
}

function count() {
  const n = rows.size;
  document.getElementById("count").textContent = `${n} rollout${n === 1 ? "" : "s"}; click one for its evidence.`;
}

async function loadList() {
  const data = await getJSON("/api/rollouts");
  document.getElementById("scope").textContent = data.namespace ? `namespace ${data.namespace}` : "all namespaces";
  renderList(data.items);
}

function onListMessage(msg) {
  if (msg.type === "reset") { loadList(); return; }
  if (!msg.rollout) return;
  const key = `${msg.rollout.namespace}/${msg.rollout.name}`;
  const old = rows.get(key);
  const body = document.querySelector("#rollouts tbody");
  if (!body) return; // the list is still loading: it will have this change
  if (msg.type === "deleted") { if (old) old.remove(); rows.delete(key); count(); return; }
  const row = listRow(msg.rollout);
  rows.set(key, row);
  if (old) { old.replaceWith(row); return; }
  const after = [...body.children].find((r) => r.dataset.key > key);
  body.insertBefore(row, after || null);
  count();
}

// -- one rollout --------------------------------------------------------------------------------

const route = location.pathname.match(/^\/rollouts\/([^/]+)\/([^/]+)$/);
let loading = null, again = false;

function expandedSteps(canary) {
  if (canary.steps) return canary.steps;
  const lin = canary.linear, out = [];
  for (let w = lin.stepWeight; w < lin.maxWeight; w += lin.stepWeight) out.push({ weight: w, hold: lin.hold });
  out.push({ weight: lin.maxWeight, hold: lin.hold });
  return out;
}

function timeline(obj) {
  const status = obj.status || {};
  const steps = expandedSteps(obj.spec.canary || {});
  const current = status.currentStep ?? 0;
  const finished = status.phase === "Promoted";
  const box = el("div", { class: "steps", id: "steps" });
  steps.forEach((s, i) => {
    const state = finished || i < current ? "done" : i === current && ["Progressing", "Paused"].includes(status.phase) ? "current" : "";
    const readBack = state === "current" && status.weights ? `read back: ${status.weights.candidate}% / ${status.weights.incumbent}%` : "";
    box.append(el("div", { class: `step ${state}`, "data-step": i + 1 },
      el("div", { class: "muted" }, `step ${i + 1}`), el("div", { class: "w" }, `${s.weight}%`),
      el("div", { class: "muted" }, `hold ${s.hold || "0s"}`),
      s.manualGate ? el("div", { class: "gate" }, "manual gate") : null,
      readBack ? el("div", { class: "muted" }, readBack) : null));
  });
  const back = status.phase === "RolledBack";
  box.append(el("div", { class: `step ${finished ? "current" : ""} ${back ? "back" : ""}` },
    el("div", { class: "muted" }, back ? "rolled back" : "promoted"), el("div", { class: "w" }, back ? "0%" : "100%")));
  return box;
}

// An SVG line chart of [t, v] series; every measured point is a dot, thresholds are dashed.
function chart(title, series) {
  const shown = series.filter((s) => s.points && s.points.length);
  if (!shown.some((s) => !s.dashed)) return null;
  const W = 420, H = 140, L = 46, R = 8, T = 16, B = 18;
  const ts = shown.flatMap((s) => s.points.map((p) => p[0])), vs = shown.flatMap((s) => s.points.map((p) => p[1]));
  let t0 = Math.min(...ts), t1 = Math.max(...ts), v0 = Math.min(0, ...vs), v1 = Math.max(...vs);
  if (t1 === t0) { t0 -= 30; t1 += 30; }
  if (v1 === v0) v1 = v0 + 1;
  v1 += (v1 - v0) * 0.08;
  const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R), y = (v) => T + (1 - (v - v0) / (v1 - v0)) * (H - T - B);
  const g = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title, "data-title": title });
  g.append(svg("text", { x: L, y: 11 }, title));
  for (const v of [v0, (v0 + v1) / 2, v1]) {
    g.append(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#eef0f3" }));
    g.append(svg("text", { x: L - 4, y: y(v) + 3, "text-anchor": "end" }, num(v)));
  }
  g.append(svg("text", { x: L, y: H - 4 }, clock(t0).slice(11)), svg("text", { x: W - R, y: H - 4, "text-anchor": "end" }, clock(t1).slice(11)));
  const legend = el("div", { class: "legend" });
  for (const s of shown) {
    const pts = [...s.points].sort((a, b) => a[0] - b[0]);
    const path = s.step ? pts.map((p, i) => `${i ? "L" : "M"}${x(p[0])},${y(p[1])}` + (pts[i + 1] ? ` H${x(pts[i + 1][0])}` : "")).join(" ")
      : pts.map((p, i) => `${i ? "L" : "M"}${x(p[0])},${y(p[1])}`).join(" ");
    g.append(svg("path", { d: path, fill: "none", stroke: s.color, "stroke-width": s.dashed ? 1.5 : 2, "stroke-dasharray": s.dashed ? "5 4" : null, "data-series": s.name }));
    if (!s.dashed) for (const p of pts) g.append(svg("circle", { cx: x(p[0]), cy: y(p[1]), r: 2.2, fill: s.color, "data-series": s.name }, svg("title", {}, `${s.name} ${num(p[1])} at ${clock(p[0])}`)));
    legend.append(el("span", {}, el("i", { style: `background:${s.color}` }), `${s.name} ${num(pts[pts.length - 1][1])}`));
  }
  return el("div", {}, g, legend);
}

function neededSeries(series) {
  // samples needed in all = the candidate's samples so far + those still missing, at each analysis.
  const have = new Map((series.candidateSamples || []).map((p) => [p[0], p[1]]));
  return (series.samplesNeeded || []).filter((p) => have.has(p[0])).map((p) => [p[0], have.get(p[0]) + p[1]]);
}

function guardrailCard(spec, st, series) {
  const verdict = st ? st.verdict : "Pending";
  const ev = (st && st.evidence) || {};
  const rule = spec.absolute ? "absolute" : spec.relative ? "relative" : spec.sequential ? "sequential" : spec.drift ? "drift" : "";
  const s = series || {};
  const charts = [
    chart("value: candidate vs incumbent vs bound", [
      { name: "candidate", color: COLORS.candidate, points: s.candidate },
      { name: "incumbent", color: COLORS.incumbent, points: s.incumbent },
      { name: "bound", color: COLORS.bound, points: s.limit, dashed: true, step: true },
    ]),
    chart("samples vs needed", [
      { name: "candidate samples", color: COLORS.candidate, points: s.candidateSamples },
      { name: "incumbent samples", color: COLORS.incumbent, points: s.incumbentSamples },
      { name: "needed", color: COLORS.needed, points: neededSeries(s), dashed: true },
    ]),
    chart("sequential evidence (log e-value) vs threshold", [
      { name: "worse", color: COLORS.bound, points: s.worse },
      { name: "fails at", color: COLORS.bound, points: s.worseThreshold, dashed: true, step: true },
      { name: "not worse", color: COLORS.pass, points: s.notWorse },
      { name: "passes at", color: COLORS.pass, points: s.notWorseThreshold, dashed: true, step: true },
    ]),
  ].filter(Boolean);
  return el("div", { class: "guardrail", "data-guardrail": spec.name },
    el("h3", {}, spec.name, " ", el("span", { class: verdict }, verdict), el("span", { class: "muted" }, ` · ${rule}${spec.critical ? " · critical" : ""}`)),
    el("div", { class: "msg" }, (st && st.message) || "not analysed yet"),
    el("div", { class: "msg" }, ev.bound ? `bound ${ev.bound}` : "", ev.statistic ? ` · ${ev.statistic}` : ""),
    charts.length ? charts : el("div", { class: "muted" }, "no evidence yet"));
}

const ACTIONS = [
  { id: "promote", label: "Promote", when: (p) => ["Progressing", "Paused"].includes(p), ask: (o) => `Promote ${o.metadata.name} past step ${(o.status.currentStep ?? 0) + 1}?` },
  { id: "promote-full", label: "Promote fully", when: (p) => ["Progressing", "Paused"].includes(p), ask: (o) => `Promote ${o.metadata.name} straight to 100%?` },
  { id: "pause", label: "Pause", when: (p, o) => !o.spec.paused && !["Promoted", "RolledBack"].includes(p), ask: (o) => `Pause ${o.metadata.name} where it is?` },
  { id: "resume", label: "Resume", when: (p, o) => !!o.spec.paused, ask: (o) => `Resume ${o.metadata.name}?` },
  { id: "abort", label: "Abort", danger: true, when: (p) => ["Progressing", "Paused"].includes(p), ask: (o) => `Abort ${o.metadata.name} and roll back to ${(o.status.incumbent || {}).name}?` },
  { id: "retry", label: "Retry", when: (p) => p === "RolledBack", ask: (o) => `Retry ${o.spec.candidate.name} from step 1?` },
];

async function act(obj, action) {
  if (!window.confirm(action.ask(obj))) return;
  const { namespace, name } = obj.metadata;
  try {
    const reply = await fetch(`/api/rollouts/${namespace}/${name}/${action.id}`, { method: "POST", headers: { "X-Modelrollout-Token": TOKEN } });
    const body = await reply.json();
    if (!reply.ok) throw new Error(body.error || reply.statusText);
    toast(body.message);
  } catch (err) { toast(String(err.message || err), true); }
}

function renderDetail(data) {
  const obj = data.object, status = obj.status || {}, phase = status.phase || "Pending";
  const byName = new Map((status.guardrails || []).map((g) => [g.name, g]));
  const actions = el("div", { class: "actions" }, ACTIONS.map((a) =>
    el("button", { id: `do-${a.id}`, class: a.danger ? "danger" : "", disabled: !a.when(phase, obj), onclick: () => act(obj, a) }, a.label)));
  const history = [...(status.history || [])].reverse();
  main.replaceChildren(
    el("div", { class: "head" },
      el("div", { class: "what" },
        el("h1", {}, obj.metadata.name, " ", el("span", { id: "phase" }, badge(phase))),
        el("div", { class: "muted" }, `${obj.metadata.namespace} · ${(status.incumbent || {}).name || "-"} → ${obj.spec.candidate.name} · started ${age(status.rolloutStarted)} ago`),
        el("div", { id: "reason" }, el("b", {}, status.reason || ""), " ", status.message || "")),
      actions),
    el("h2", {}, "Steps ", el("span", { class: "muted" }, status.stepDisplay ? `(${status.stepDisplay})` : "")),
    timeline(obj),
    el("h2", {}, "Guardrails ", el("span", { class: "muted", id: "source" }, `history: ${data.source}`)),
    el("div", { class: "guardrails" }, (obj.spec.guardrails || []).map((g) => guardrailCard(g, byName.get(g.name), data.series[g.name]))),
    el("div", { class: "cols" },
      el("div", {}, el("h2", {}, "Decisions"), el("table", { id: "decisions" },
        el("thead", {}, el("tr", {}, ["Time", "Step", "Action", "Reason", "Message"].map((h) => el("th", {}, h)))),
        el("tbody", {}, history.map((d) => el("tr", {}, el("td", { class: "t" }, clock(d.time)), el("td", {}, d.step + 1), el("td", {}, d.action), el("td", {}, d.reason), el("td", {}, d.message || "")))))),
      el("div", {}, el("h2", {}, "Events"), el("table", { id: "events" },
        el("thead", {}, el("tr", {}, ["Last", "Type", "Reason", "Message"].map((h) => el("th", {}, h)))),
        el("tbody", {}, data.events.map((e) => el("tr", { "data-reason": e.reason }, el("td", { class: "t" }, clock(e.lastTimestamp || e.eventTime)), el("td", {}, e.type), el("td", {}, e.reason), el("td", {}, e.message || ""))))))));
  document.title = `${obj.metadata.name} · ${phase} · modelrollout`;
}

async function loadDetail() {
  if (loading) { again = true; return loading; }
  loading = (async () => {
    try {
      renderDetail(await getJSON(`/api/rollouts/${route[1]}/${route[2]}`));
    } catch (err) {
      main.replaceChildren(el("h1", {}, `${route[1]}/${route[2]}`), el("p", {}, String(err.message || err)));
    } finally {
      loading = null;
      if (again) { again = false; loadDetail(); }
    }
  })();
  return loading;
}

function onDetailMessage(msg) {
  if (msg.type === "reset" || (msg.rollout && msg.rollout.namespace === route[1] && msg.rollout.name === route[2])) loadDetail();
}

// -- the stream ---------------------------------------------------------------------------------

// The stream is opened first and each (re)open loads the page's data, so no change falls between
// the load and the stream.
function connect(onMessage, reload) {
  const stream = new EventSource("/api/stream");
  stream.onopen = () => { live.className = "live on"; live.textContent = "live"; reload(); };
  stream.onerror = () => { live.className = "live off"; live.textContent = "reconnecting"; };
  stream.onmessage = (e) => {
    const msg = JSON.parse(e.data);
    if (msg.type === "error") { toast(msg.message, true); return; }
    window.__dashboard.updates += 1;
    live.dataset.updates = String(window.__dashboard.updates);
    onMessage(msg);
  };
}

if (route) {
  document.getElementById("scope").textContent = `${route[1]}/${route[2]}`;
  connect(onDetailMessage, loadDetail);
} else {
  connect(onListMessage, () => loadList().catch((err) => { main.replaceChildren(el("p", {}, String(err.message || err))); }));
}
