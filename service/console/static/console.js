// callbridge console views (docs/console.md). Data arrives as Server-Sent Events snapshots; every
// region has a fixed size and values are written with textContent (never parsed as HTML).
"use strict";
const SVGNS = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

function cell(row, value) {
  const td = document.createElement("td");
  if (value instanceof Node) td.append(value); else td.textContent = value == null ? "" : String(value);
  row.append(td);
  return td;
}

function link(href, text) {
  const a = document.createElement("a");
  a.href = href;
  a.textContent = text;
  return a;
}

function svgLine(points, cls, w, h, label) {
  const svg = document.createElementNS(SVGNS, "svg");
  svg.setAttribute("class", cls);
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
  const line = document.createElementNS(SVGNS, "polyline");
  line.setAttribute("points", points || "");
  svg.append(line);
  return svg;
}

function fill(tbodyId, rows, build) {
  const body = $(tbodyId);
  // Each cell carries its column's name: on a phone the rows are shown as labelled cards.
  const labels = [...body.closest("table").querySelectorAll("th")].map((th) => th.textContent);
  body.textContent = "";
  for (const item of rows) {
    const tr = document.createElement("tr");
    build(tr, item);
    [...tr.children].forEach((td, i) => { td.dataset.label = labels[i] || ""; });
    body.append(tr);
  }
}

function stream(url, name, render) {
  const es = new EventSource(url);
  es.addEventListener(name, (e) => render(JSON.parse(e.data)));
  es.onerror = () => { $("status").textContent = "reconnecting…"; };
  es.onopen = () => { $("status").textContent = "live"; };
  return es;
}

function renderCalls(d) {
  $("count").textContent = String(d.calls.length);
  fill("calls", d.calls, (tr, c) => {
    cell(tr, link("/console/calls/" + encodeURIComponent(c.call_id), c.call_id));
    for (const v of [c.provider, c.caller, c.state, c.duration_s + " s", c.language || "–"]) cell(tr, v);
    const td = cell(tr, svgLine(c.spark, "spark", 120, 24, "frustration " + (c.frustration ?? "n/a")));
    td.title = "frustration " + (c.frustration ?? "n/a");
    cell(tr, "$" + Number(c.cost_usd).toFixed(4));
    cell(tr, c.replica);
  });
}

function renderCall(d) {
  for (const k of ["state", "provider", "caller", "replica", "language"]) $(k).textContent = d[k] || "–";
  $("duration").textContent = d.duration_s + " s";
  $("cost").textContent = "$" + Number(d.cost_usd).toFixed(4);
  const esc = d.escalation_detail;
  $("escalation").textContent = esc.status === "none" ? "none" : `${esc.status} (${esc.trigger}, ${esc.id})`;
  $("chart").querySelector("polyline").setAttribute("points", d.chart);
  $("frustration").textContent = d.frustration == null ? "–" : String(d.frustration);
  const turns = $("turns");
  turns.textContent = "";
  for (const t of d.transcript) {
    const li = document.createElement("li");
    li.textContent = `${t.role}: ${t.text}`;
    turns.append(li);
  }
  turns.scrollTop = turns.scrollHeight;
  const events = $("events");
  events.textContent = "";
  for (const e of d.events) {
    const li = document.createElement("li");
    const when = new Date(e.ts * 1000).toLocaleTimeString();
    const extra = Object.entries(e).filter(([k]) => !["kind", "ts", "seq"].includes(k))
      .map(([k, v]) => `${k}=${v}`).join(" ");
    li.textContent = `${when} ${e.kind} ${extra}`;
    events.append(li);
  }
  if (esc.status !== "none") {
    const li = document.createElement("li");
    li.textContent = `escalation delivery: ${esc.status}`;
    events.append(li);
  }
}

async function redeliver(id, button) {
  button.disabled = true;
  const r = await fetch(`/console/api/escalations/dead/${encodeURIComponent(id)}/redeliver`, {method: "POST"});
  $("status").textContent = r.ok ? "re-delivery queued" : `re-delivery refused (${r.status})`;
}

function renderEscalations(d) {
  fill("escalations", d.recent, (tr, e) => {
    cell(tr, e.escalation_id);
    cell(tr, link("/console/calls/" + encodeURIComponent(e.call_id), e.call_id));
    const at = Number(e.at) ? new Date(Number(e.at) * 1000).toLocaleString() : "–";
    for (const v of [e.trigger, e.status, at]) cell(tr, v);
  });
  fill("dead", d.dead_letter, (tr, e) => {
    for (const v of [e.escalation_id, e.call_id, e.status, e.response]) cell(tr, v).title = v || "";
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = "Re-deliver";
    b.addEventListener("click", () => redeliver(e.id, b));
    cell(tr, b);
  });
  $("pending").textContent = String(d.pending.length);
}

function renderFleet(d) {
  fill("replicas", d.replicas, (tr, r) => {
    const age = r.ts ? Math.max(0, Date.now() / 1000 - r.ts).toFixed(1) + " s ago" : "–";
    for (const v of [r.replica, age, r.calls, r.active_calls, r.draining ? "draining" : "serving"]) cell(tr, v);
  });
}

const view = document.body.dataset.view;
if (view === "calls") stream("/console/api/stream/calls", "calls", renderCalls);
if (view === "call") {
  const es = stream("/console/api/stream/calls/" + encodeURIComponent($("cid").textContent), "call", (d) => {
    if (d.error) { $("status").textContent = d.error; return; }
    renderCall(d);
    const settled = ["none", "delivered"].includes(d.escalation_detail.status);
    if (d.ended && settled) { es.close(); $("status").textContent = "call ended"; } // nothing more will change
  });
}
if (view === "escalations") stream("/console/api/stream/escalations", "escalations", renderEscalations);
if (view === "fleet") stream("/console/api/stream/fleet", "fleet", renderFleet);
