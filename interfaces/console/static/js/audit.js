// Auditors: search the event log (message, actor, type, time), who accessed a user's
// messages, a message's trail as a timeline, and the tamper check. Role auditor only;
// every query is itself recorded in the log (docs/AUDIT.md).

import { $, announce, h, replace, timeElement } from "./dom.js";
import { api, describe } from "./session.js";

let bound = false;
let more = null; // () => Promise: the next page of the last listing

export function start() {
  if (bound) return;
  bound = true;
  $("#search-form").addEventListener("submit", onSearch);
  $("#search-form").addEventListener("reset", () => {
    $("#audit-error").textContent = "";
  });
  $("#trail-form").addEventListener("submit", onTrail);
  $("#verify-button").addEventListener("click", onVerify);
  $("#more-button").addEventListener("click", () => more && more());
  $("#timeline").addEventListener("click", (event) => {
    const link = event.target.closest("button[data-trail]");
    if (link) showTrail(link.dataset.trail);
  });
}

export function stop() {}

function isoFromLocal(value) {
  return value ? new Date(value).toISOString() : null;
}

function summary(item) {
  const data = item.data || {};
  const parts = [];
  for (const key of ["status", "stage", "queue", "jobId", "attempts", "error", "what", "action",
    "reason", "query", "results", "recipientIds", "messageIds", "keyId"]) {
    if (data[key] === undefined || data[key] === null) continue;
    const value = Array.isArray(data[key]) ? data[key].join(", ") : String(data[key]);
    if (value) parts.push(`${key}: ${value}`);
  }
  return parts.join(" · ");
}

function entryNode(item) {
  const context = (item.data && item.data.context) || {};
  return h("li", { class: `event ${item.type}`, dataset: { type: item.type, position: item.position } },
    h("div", { class: "when" }, timeElement(item.occurredAt), h("span", { class: "pos" }, `#${item.position}`)),
    h("div", { class: "what" },
      h("p", {}, h("strong", {}, item.type), " on ", item.aggregateType, " ",
        item.aggregateType === "Message"
          ? h("button", { type: "button", class: "link", dataset: { trail: item.aggregateId },
            "aria-label": `Show the trail of message ${item.aggregateId}` }, h("code", {}, item.aggregateId))
          : h("code", {}, item.aggregateId)),
      h("p", { class: "muted" }, `by ${item.actorId} (${item.actorRole})`,
        context.sourceIp ? ` from ${context.sourceIp}` : "",
        context.correlationId ? ` · request ${context.correlationId}` : ""),
      summary(item) ? h("p", { class: "detail" }, summary(item)) : null));
}

function accessNode(item) {
  const node = entryNode(item);
  if (item.messageIds && item.messageIds.length) {
    node.querySelector(".what").append(h("p", { class: "detail" }, `messages: ${item.messageIds.join(", ")}`));
  }
  return node;
}

/** Show a listing and keep its cursor for "Load more". */
async function listing(title, fetchPage, toNode = entryNode) {
  const error = $("#audit-error");
  error.textContent = "";
  const list = $("#timeline");
  replace(list);
  $("#results-title").textContent = title;
  let cursor = null;
  let count = 0;
  const load = async () => {
    try {
      const page = await fetchPage(cursor);
      list.append(...page.items.map(toNode));
      count += page.items.length;
      cursor = page.nextCursor;
      $("#more-button").hidden = !cursor;
      $("#results-summary").textContent =
        count ? `${count} entr${count === 1 ? "y" : "ies"}${cursor ? ", more to load" : ""}.` : "Nothing found.";
      announce($("#results-summary").textContent);
    } catch (failure) {
      error.textContent = describe(failure);
    }
  };
  more = load;
  await load();
}

function onSearch(event) {
  event.preventDefault();
  const form = event.target;
  const user = form.userId.value.trim();
  if (user) {
    listing(`Access to ${user}'s messages`, (cursor) =>
      api(`/api/audit/users/${encodeURIComponent(user)}/access?${new URLSearchParams(cursor ? { cursor } : {})}`),
    accessNode);
    return;
  }
  const params = {};
  for (const name of ["aggregateId", "actorId", "type"]) {
    if (form[name].value.trim()) params[name] = form[name].value.trim();
  }
  for (const name of ["from", "to"]) {
    const iso = isoFromLocal(form[name].value);
    if (iso) params[name] = iso;
  }
  listing("Event log", (cursor) =>
    api(`/api/audit/events?${new URLSearchParams({ ...params, ...(cursor ? { cursor } : {}) })}`));
}

function onTrail(event) {
  event.preventDefault();
  showTrail(event.target.messageId.value.trim());
}

function showTrail(messageId) {
  $("#trail-id").value = messageId;
  listing(`Trail of message ${messageId}`, (cursor) =>
    api(`/api/audit/messages/${encodeURIComponent(messageId)}/trail?${new URLSearchParams(cursor ? { cursor } : {})}`));
  $("#results-title").scrollIntoView({ block: "start" });
}

async function onVerify() {
  const box = $("#verify-result");
  const button = $("#verify-button");
  button.disabled = true;
  replace(box, h("p", {}, "Verifying…"));
  try {
    const v = await api("/api/audit/verify");
    replace(box, v.ok
      ? h("p", { class: "verdict ok", dataset: { verdict: "ok" } },
        h("span", { "aria-hidden": "true" }, "✓ "), `Intact: ${v.checked} events checked`,
        v.chainedThrough !== undefined ? `, chained through position ${v.chainedThrough}` : "",
        v.lag ? ` (${v.lag} newer not chained yet)` : "",
        v.auditedThrough ? `; audit tables match the log through ${v.auditedThrough}` : "",
        v.checkpoint ? `; signed checkpoint at ${v.checkpoint.position} holds.` : ".")
      : h("p", { class: "verdict bad", dataset: { verdict: "tampered" } },
        h("span", { "aria-hidden": "true" }, "✗ "),
        `Tampered: first bad position ${v.firstBadPosition} (${v.checked} checked before it)`,
        v.reason ? `: ${v.reason}` : "."));
  } catch (error) {
    replace(box, h("p", { class: "error" }, describe(error)));
  } finally {
    button.disabled = false;
  }
}
