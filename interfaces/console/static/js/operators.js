// Operators: the six queues live (figures, health, a throughput sparkline) and the
// failed-job list with retry. Every figure comes from the admin endpoints (docs/QUEUES.md).

import { $, announce, h, replace, svg, timeElement } from "./dom.js";
import { api, describe } from "./session.js";

const POLL_MS = 2000;
const SAMPLES = 40;

let timer = null;
let running = false;
let bound = false;
let queueNames = []; // as the metrics endpoint lists them, in the service's order
const history = new Map(); // queue → jobs completed per minute, per reading
const last = new Map(); // queue → {completed, at}: the previous reading
const failedShown = new Set(); // queues whose failed list is on screen
const retrying = new Set(); // job ids whose retry was asked for and may still be listed

export function start() {
  running = true;
  if (!bound) {
    bound = true;
    $("#failed-rows").addEventListener("click", onRetryClick);
  }
  tick();
}

export function stop() {
  running = false;
  clearTimeout(timer);
}

async function tick() {
  if (!running) return;
  try {
    const { queues } = await api("/api/messages/queue/metrics");
    queueNames = Object.keys(queues);
    const health = await Promise.all(
      queueNames.map((q) => api(`/api/messages/queue/${q}/health`).catch(() => null)));
    const now = performance.now();
    for (const q of queueNames) {
      if (!history.has(q)) history.set(q, []);
      const before = last.get(q);
      const completed = queues[q].completed;
      last.set(q, { completed, at: now });
      if (!before) continue;
      // Jobs completed since the previous reading, as a rate per minute: bursts show as
      // peaks, where the 60-second window of throughputPerMinute would smooth them away.
      const minutes = Math.max((now - before.at) / 60000, 1e-3);
      const samples = history.get(q);
      samples.push(Math.max(0, completed - before.completed) / minutes);
      if (samples.length > SAMPLES) samples.shift();
    }
    renderQueues(queues, health);
    await refreshFailed(queues);
    $("#ops-error").textContent = "";
    $("#ops-updated").textContent = `Updated ${new Date().toLocaleTimeString()}.`;
  } catch (error) {
    $("#ops-error").textContent = `Last update failed (${describe(error)}); trying again.`;
  }
  if (running) timer = setTimeout(tick, POLL_MS);
}

const pretty = (name) => name.replace(/_/g, " ").toLowerCase();
const figure = (value) => (value === null || value === undefined ? "–" : String(value));

function sparkline(samples) {
  const width = 120;
  const height = 32;
  const top = Math.max(1, ...samples);
  const step = width / (SAMPLES - 1);
  const start = (SAMPLES - samples.length) * step; // the newest reading at the right edge
  const xy = samples.map((v, i) =>
    `${(start + i * step).toFixed(1)},${(height - 1 - (v / top) * (height - 3)).toFixed(1)}`);
  const latest = Math.round(samples.at(-1) ?? 0);
  return h("figure", { class: "spark-box" },
    svg("svg", {
      class: "spark", viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none",
      role: "img",
      "aria-label": `Jobs completed per minute over the last ${samples.length} readings; latest ${latest}`,
    },
    svg("line", { x1: 0, y1: height - 0.5, x2: width, y2: height - 0.5, class: "axis" }),
    xy.length > 1
      ? svg("polygon", { points: `${xy[0].split(",")[0]},${height} ${xy.join(" ")} ${width},${height}`, class: "area" })
      : null,
    svg("polyline", { points: xy.join(" "), class: "trace", "vector-effect": "non-scaling-stroke" })),
    h("figcaption", {}, `completed/min now: ${latest}, peak ${Math.round(Math.max(0, ...samples))}`));
}

function renderQueues(queues, health) {
  const cards = queueNames.map((q, i) => {
    const f = queues[q];
    const status = health[i] ? health[i].status : "unknown";
    return h("article", { class: `queue ${status}`, dataset: { queue: q }, "aria-labelledby": `q-${q}` },
      h("header", {},
        h("h2", { id: `q-${q}` }, pretty(q)),
        h("span", { class: `health ${status}`, dataset: { health: status } },
          h("span", { class: "dot", "aria-hidden": "true" }), status)),
      h("dl", { class: "figures" },
        ...[
          ["Waiting", f.waiting], ["Active", f.active], ["Delayed", f.delayed],
          ["Completed", f.completed], ["Failed", f.failed],
          ["Per minute", f.throughputPerMinute],
          ["p50 / p95 ms", `${figure(f.p50Ms)} / ${figure(f.p95Ms)}`],
        ].map(([label, value]) => h("div", { dataset: { figure: label.toLowerCase() } },
          h("dt", {}, label), h("dd", {}, figure(value))))),
      sparkline(history.get(q)));
  });
  replace($("#queues"), cards);
}

async function refreshFailed(queues) {
  // The failed figure counts every tenant; the list is the admin's own tenant's.
  const wanted = queueNames.filter((q) => queues[q].failed > 0 || failedShown.has(q));
  const pages = await Promise.all(
    wanted.map((q) => api(`/api/messages/queue/${q}/failed?limit=50`)));
  const items = pages.flatMap((p) => p.items)
    .sort((a, b) => String(b.failedAt).localeCompare(String(a.failedAt)));
  failedShown.clear();
  for (const item of items) failedShown.add(item.queue);
  const listed = new Set(items.map((i) => i.jobId));
  for (const job of [...retrying]) {
    if (!listed.has(job)) {
      retrying.delete(job);
      announce(`Job ${job} left the failed list`);
    }
  }
  const focused = document.activeElement && document.activeElement.closest("#failed-rows button")
    ? document.activeElement.dataset.jobId : null;
  replace($("#failed-rows"), items.map((item) => {
    const asked = retrying.has(item.jobId);
    return h("tr", { dataset: { jobId: item.jobId } },
      h("td", {}, h("code", { class: "wrap" }, item.jobId)),
      h("td", {}, pretty(item.queue)),
      h("td", {}, h("code", { class: "wrap" }, item.messageId)),
      h("td", {}, String(item.attempts)),
      h("td", {}, item.error),
      h("td", {}, timeElement(item.failedAt)),
      h("td", {}, h("button", {
        type: "button", class: "retry", disabled: asked,
        dataset: { queue: item.queue, jobId: item.jobId },
        "aria-label": `Retry job ${item.jobId}`,
      }, asked ? "Retry asked" : "Retry")));
  }));
  if (focused) {
    const again = $(`#failed-rows button[data-job-id="${CSS.escape(focused)}"]`);
    if (again) again.focus();
  }
  $("#failed-empty").hidden = items.length > 0;
  $("#failed-table").hidden = items.length === 0;
}

async function onRetryClick(event) {
  const button = event.target.closest("button.retry");
  if (!button) return;
  const { queue, jobId } = button.dataset;
  button.disabled = true;
  button.textContent = "Retrying…";
  try {
    const answer = await api(
      `/api/messages/queue/${queue}/failed/${encodeURIComponent(jobId)}/retry`, { method: "POST" });
    retrying.add(jobId);
    button.textContent = "Retry asked";
    announce(`Retry of ${answer.jobId} requested: ${answer.state}`);
  } catch (error) {
    button.disabled = false;
    button.textContent = "Retry";
    $("#ops-error").textContent = `Retry failed: ${describe(error)}`;
  }
}
