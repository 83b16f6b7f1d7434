// The gearsql status page: polls /api/status and /api/jobs and redraws the tables.
// Everything that comes from the server is set as text (textContent), never as HTML: function
// names, uniques and errors are chosen by whoever submits a job.
"use strict";

const POLL_MS = 2000;
const JOBS_SHOWN = 50; // jobs and dead letters per table: the search narrows them
let previous = null; // the last /api/status answer, for rates
let actions = false; // whether this peer may cancel, retry, purge and set maxqueue

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props || {});
  for (const child of children) {
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function row(cells) {
  return el("tr", {}, ...cells.map((c) => (c instanceof Node && c.tagName === "TD" ? c : el("td", {}, c))));
}

function num(value) {
  return el("td", { className: "num" }, value === null || value === undefined ? "–" : value);
}

function fill(id, rows) {
  document.querySelector(`#${id} tbody`).replaceChildren(...rows);
}

function button(label, handler) {
  return el("button", { type: "button", textContent: label, onclick: handler });
}

function clock(epoch) {
  return new Date(epoch * 1000).toISOString().replace("T", " ").slice(0, 19);
}

function perSecond(now, before, seconds, ...keys) {
  if (!before || seconds <= 0) return null;
  let delta = 0;
  for (const key of keys) delta += (now[key] || 0) - (before[key] || 0);
  return delta < 0 ? null : (delta / seconds).toFixed(1);
}

function meanMs(now, before, sum, count) {
  const n = (now[count] || 0) - (before ? before[count] || 0 : 0);
  if (n <= 0) return before ? null : "–";
  return (((now[sum] || 0) - (before ? before[sum] || 0 : 0)) * 1000 / n).toFixed(1);
}

async function act(body, question) {
  if (question && !window.confirm(question)) return;
  const message = document.getElementById("message");
  try {
    const response = await fetch("/api/action", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const answer = await response.json();
    message.textContent = `${body.action}: ${answer.reply}`;
  } catch (error) {
    message.textContent = `${body.action}: ${error}`;
  }
  refresh();
}

function setMaxqueue(fn) {
  const text = window.prompt(`maxqueue for ${fn.name}: high normal low (0: no limit)`, fn.maxqueue.join(" "));
  if (text === null) return;
  const limits = text.trim().split(/\s+/).map(Number);
  if (limits.length === 1) limits.push(limits[0], limits[0]);
  act({ action: "maxqueue", function: fn.hex, limits });
}

function drawFunctions(status) {
  const seconds = previous ? status.clock - previous.clock : 0;
  const before = new Map(previous ? previous.functions.map((f) => [f.hex, f]) : []);
  fill("functions", status.functions.map((fn) => {
    const old = before.get(fn.hex);
    const name = el("td", { className: "name" }, fn.name);
    if (fn.gone) {
      return row([name, num(null), num(null), num(null), num(null), num(fn.dead), num(null), num(null), num(null), num(null), el("td")]);
    }
    const limit = el("td", {}, fn.maxqueue.join(" / "));
    if (actions) limit.append(" ", button("set", () => setMaxqueue(fn)));
    return row([
      name,
      el("td", { className: "num" }, fn.queued.join(" / ")),
      num(fn.later), num(fn.running), num(fn.workers), num(fn.dead),
      num(perSecond(fn, old, seconds, "completed")),
      num(perSecond(fn, old, seconds, "failed", "exceptions")),
      num(meanMs(fn, old, "wait_seconds", "waits")),
      num(meanMs(fn, old, "run_seconds", "runs")),
      limit,
    ]);
  }));
}

function drawStatus(status) {
  actions = status.actions;
  document.getElementById("server").textContent =
    `${status.version} · pid ${status.pid} · ${status.store} · ` +
    `${status.connections.gearman} Gearman and ${status.connections.http} HTTP connections` +
    (status.actions ? "" : " · read-only");
  drawFunctions(status);
  document.getElementById("worker-count").textContent =
    status.worker_count > status.workers.length ? `(${status.workers.length} of ${status.worker_count})` : "";
  fill("workers", status.workers.map((w) =>
    row([num(w.id), w.peer, w.client_id, num(w.running), w.functions.join(" ")])));
  fill("schedules", status.schedules.map((s) => row([s.name, s.function, s.spec, s.due ? clock(s.due) : "never"])));
  document.getElementById("schedules-section").hidden = status.schedules.length === 0;
  fill("relays", status.relays.map((r) => row([
    r.database || r.relay, num(r.backlog), num(r.lag === null ? null : r.lag.toFixed(1)), num(r.dead),
    r.at ? clock(r.at) : "not yet", el("td", { className: "error" }, r.error || ""),
  ])));
  document.getElementById("relays-section").hidden = status.relays.length === 0;
  const dead = document.getElementById("dead-buttons");
  dead.replaceChildren();
  if (actions && status.functions.some((f) => f.dead)) {
    dead.append(
      button("retry all", () => act({ action: "retry", dead: "all" }, "Submit every dead letter again?")),
      button("purge all", () => act({ action: "purge", dead: "all" }, "Forget every dead letter?")),
    );
  }
  previous = status;
}

function drawJobs(answer) {
  fill("jobs", answer.jobs.map((job) => {
    const time = job.due ? `due ${clock(job.due)}` : job.since === null ? "" : `${job.since.toFixed(1)} s`;
    const cancel = actions ? button("cancel", () => act({ action: "cancel", handle: job.handle }, `Cancel ${job.handle}?`)) : "";
    return row([
      job.handle, el("td", { className: "name" }, job.function), job.unique,
      el("td", { className: `state ${job.state}` }, job.state),
      job.priority, num(job.runs), num(job.size), time, el("td", { className: "error" }, job.error), el("td", {}, cancel),
    ]);
  }));
  const more = document.getElementById("jobs-more");
  more.hidden = !answer.more && !answer.dead_more;
  more.textContent = answer.partial
    ? `The search looked at the oldest ${answer.scan} jobs only.`
    : `Only the first ${answer.limit} are shown: narrow the search.`;
  fill("dead", answer.dead.map((job) => row([
    num(job.id), el("td", { className: "name" }, job.function), job.unique, num(job.runs), clock(job.died),
    num(job.size), el("td", { className: "error" }, job.error),
    el("td", {}, ...(actions ? [
      button("retry", () => act({ action: "retry", dead: job.id })),
      button("purge", () => act({ action: "purge", dead: job.id }, `Forget dead letter ${job.id}?`)),
    ] : [])),
  ])));
}

async function getJson(url) {
  const response = await fetch(url, { cache: "no-store" });
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

let timer = null;
let latest = 0; // the newest refresh: an older one that answers late draws nothing

async function refresh() {
  clearTimeout(timer);
  const mine = ++latest;
  const query = new URLSearchParams(new FormData(document.getElementById("search")));
  query.set("limit", JOBS_SHOWN);
  try {
    const [status, jobs] = await Promise.all([getJson("/api/status"), getJson(`/api/jobs?${query}`)]);
    if (mine !== latest) return;
    drawStatus(status);
    drawJobs(jobs);
    document.body.dataset.state = "live";
    document.getElementById("updated").textContent = `updated ${clock(status.time)} UTC`;
  } catch (error) {
    if (mine !== latest) return;
    document.body.dataset.state = "error";
    document.getElementById("updated").textContent = `cannot reach the server (${error.message}); retrying`;
  }
  timer = setTimeout(refresh, POLL_MS);
}

document.getElementById("search").addEventListener("input", refresh);
document.getElementById("search").addEventListener("submit", (event) => event.preventDefault());
refresh();
