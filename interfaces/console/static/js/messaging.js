// The messaging demo: a key pair made in the browser, conversations, plain, service-
// encrypted and end-to-end messages, live arrival over the WebSocket, delivery ticks.

import { $, announce, h, replace, svg, timeElement } from "./dom.js";
import { api, ApiError, describe } from "./session.js";
import {
  checkEnvelope, e2eAad, fingerprintOfPem, generateKeyPair, messageIdFor, openEnvelope,
  publicKeyPem, seal,
} from "./crypto.js";
import { keyById, keysOf, markSealed, pin, pinOf, saveKey, sealedHere } from "./keystore.js";

const CONVERSATIONS_KEY = "courier.conversations";
const CURSOR_KEY = "courier.cursor";
const PING_SECONDS = 30;
const HISTORY = 50;

let who = null;
let socket = null;
let stopped = true;
let bound = false;
let retryDelay = 1000;
let reconnectTimer = null;
let pingTimer = null;
let attempt = 0; // which connect() is current: a stop or a newer attempt ends the older one
let openId = null;
const conversations = new Map(); // id → {id, type, participantIds, title, unread}
const threads = new Map(); // conversation id → Map(message id → entry)
const pendingStatus = new Map(); // status frames that came before the send's answer
const readSent = new Set(); // ids of messages this page has marked read
const keyChanges = new Map(); // peer → {peer, pinned, now, keyId}: a key unlike its pin

export function start(signedIn) {
  who = signedIn;
  stopped = false;
  if (!bound) bind();
  conversations.clear();
  threads.clear();
  keyChanges.clear();
  renderKeyWarnings();
  openId = null;
  for (const conversation of JSON.parse(sessionStorage.getItem(CONVERSATIONS_KEY) || "[]")) {
    conversations.set(conversation.id, { ...conversation, unread: 0 });
  }
  renderConversations();
  renderThreadHeader();
  replace($("#thread"));
  if (!globalThis.crypto || !globalThis.crypto.subtle) {
    $("#key-status").textContent =
      "This page is not a secure context (HTTPS or localhost), so the browser offers no WebCrypto.";
    $("#key-generate").disabled = true;
  } else {
    refreshKeyStatus();
  }
  connect();
}

export function stop() {
  stopped = true;
  attempt += 1;
  clearTimeout(reconnectTimer);
  clearInterval(pingTimer);
  if (socket) socket.close(1000, "leaving");
  socket = null;
}

function bind() {
  bound = true;
  $("#key-generate").addEventListener("click", onGenerate);
  $("#conv-form").addEventListener("submit", onStartConversation);
  $("#send-form").addEventListener("submit", onSend);
  $("#send-text").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) $("#send-form").requestSubmit();
  });
}

// ---- keys -------------------------------------------------------------------------

async function refreshKeyStatus() {
  const status = $("#key-status");
  try {
    const local = await keysOf(who);
    let registered = null;
    try {
      registered = await api(`/api/keys/${encodeURIComponent(who.user)}`);
    } catch (error) {
      if (error.status !== 404) throw error;
    }
    const here = registered && local.find((k) => k.keyId === registered.keyId);
    status.dataset.state = here ? "ready" : "missing";
    if (here) {
      replace(status, "Key ", h("code", { id: "key-id" }, here.keyId),
        " is registered and its private key is in this browser. Fingerprint ",
        h("code", { class: "wrap" }, registered.fingerprint), ".");
    } else if (registered) {
      replace(status, "Your registered key ", h("code", {}, registered.keyId),
        " is not in this browser: what was sealed for it cannot be opened here. ",
        "Generate a new pair to read new encrypted messages.");
    } else {
      status.textContent = "No key pair yet: generate one to send and read encrypted messages.";
    }
  } catch (error) {
    status.textContent = `Cannot check your key: ${describe(error)}`;
  }
}

async function onGenerate() {
  const button = $("#key-generate");
  const status = $("#key-status");
  button.disabled = true;
  status.dataset.state = "working";
  status.textContent = "Generating an RSA-4096 key pair in this browser (this can take a few seconds)…";
  try {
    const pair = await generateKeyPair();
    status.textContent = "Registering the public key…";
    const pem = await publicKeyPem(pair.publicKey);
    const registered = await api("/api/keys/me", { method: "PUT", body: { publicKeyPem: pem } });
    await saveKey(who, registered, pair);
    await pin(who, who.user, await fingerprintOfPem(pem), registered.keyId); // our own, new key
    keyChanges.delete(who.user);
    renderKeyWarnings();
    announce(`Key ${registered.keyId} registered`);
    await refreshKeyStatus();
  } catch (error) {
    status.dataset.state = "missing";
    status.textContent = `Could not make or register a key: ${describe(error)}`;
  } finally {
    button.disabled = false;
  }
}

/**
 * Every participant's public key, with its fingerprint computed here from the PEM (not
 * taken from the server's answer) and compared with the one pinned on first use.
 */
async function participantKeys(participantIds) {
  const keys = {};
  const changed = [];
  for (const user of participantIds) {
    let key;
    try {
      key = await api(`/api/keys/${encodeURIComponent(user)}`);
    } catch (failure) {
      if (failure.status === 404) throw new Error(`${user} has no registered public key yet`);
      throw failure;
    }
    const fingerprint = await fingerprintOfPem(key.publicKeyPem);
    const pinned = await pinOf(who, user);
    if (!pinned) {
      await pin(who, user, fingerprint, key.keyId);
    } else if (pinned.fingerprint !== fingerprint) {
      changed.push({ peer: user, pinned: pinned.fingerprint, now: fingerprint, keyId: key.keyId });
    }
    keys[user] = key.publicKeyPem;
  }
  return { keys, changed };
}

function renderKeyWarnings() {
  const box = $("#key-warnings");
  const items = [...keyChanges.values()].map((c) =>
    h("li", { dataset: { peer: c.peer } },
      h("strong", {}, `The key of ${c.peer} has changed.`),
      " Pinned fingerprint ", h("code", { class: "wrap" }, c.pinned),
      ", now ", h("code", { class: "wrap" }, c.now),
      `. Nothing is sealed end to end for ${c.peer} until you have compared the new `
        + "fingerprint with them another way (in person, by phone). ",
      h("button", { type: "button", onclick: () => trustNewKey(c) }, `Trust ${c.peer}'s new key`)));
  replace(box, items.length ? h("ul", {}, items) : null);
  box.hidden = items.length === 0;
}

async function trustNewKey(change) {
  await pin(who, change.peer, change.now, change.keyId);
  keyChanges.delete(change.peer);
  renderKeyWarnings();
  announce(`The new key of ${change.peer} is trusted`);
}

// ---- conversations ----------------------------------------------------------------

function saveConversations() {
  const plain = [...conversations.values()].map(({ unread, ...c }) => c);
  sessionStorage.setItem(CONVERSATIONS_KEY, JSON.stringify(plain));
}

function remember(conversation) {
  const known = conversations.get(conversation.id);
  conversations.set(conversation.id, { unread: 0, ...known, ...conversation });
  saveConversations();
  renderConversations();
  if (socket && socket.readyState === WebSocket.OPEN) {
    socket.send(JSON.stringify({ type: "subscribe", conversationId: conversation.id }));
  }
}

function conversationName(c) {
  const others = c.participantIds.filter((p) => p !== who.user);
  if (c.type === "direct") return `Direct with ${others.join(", ") || "yourself"}`;
  return `${c.title || "Group"} (${c.participantIds.length} people)`;
}

function renderConversations() {
  const list = $("#conv-list");
  const items = [...conversations.values()].map((c) =>
    h("li", {},
      h("button", {
        type: "button",
        class: "conv",
        "aria-current": c.id === openId ? "true" : null,
        dataset: { conversation: c.id },
        onclick: () => openConversation(c.id),
      },
      h("span", {}, conversationName(c)),
      c.unread ? h("span", { class: "badge", "aria-label": `${c.unread} new` }, String(c.unread)) : null)));
  replace(list, items);
  $("#conv-empty").hidden = items.length > 0;
}

async function onStartConversation(event) {
  event.preventDefault();
  const form = event.target;
  const error = $("#conv-error");
  error.textContent = "";
  const people = form.people.value.split(/[\s,]+/).filter(Boolean);
  const body = { type: form.kind.value, participantIds: people };
  if (form.title.value.trim()) body.title = form.title.value.trim();
  try {
    const conversation = await api("/api/conversations", { method: "POST", body });
    remember(conversation);
    form.reset();
    openConversation(conversation.id);
    $("#send-text").focus();
  } catch (failure) {
    error.textContent = `Cannot start it: ${describe(failure)}`;
  }
}

function renderThreadHeader() {
  const conversation = conversations.get(openId);
  $("#thread-title").textContent = conversation ? conversationName(conversation) : "No conversation open";
  $("#send-form").hidden = !conversation;
}

async function openConversation(id) {
  openId = id;
  const conversation = conversations.get(id);
  conversation.unread = 0;
  renderConversations();
  renderThreadHeader();
  const list = $("#thread");
  replace(list, ...entriesOf(id).map((e) => e.node));
  try {
    const page = await api(`/api/conversations/${id}/messages?limit=${HISTORY}`);
    for (const message of page.items) addMessage(message, {});
  } catch (error) {
    $("#send-error").textContent = `Cannot load the conversation: ${describe(error)}`;
  }
}

// ---- messages ---------------------------------------------------------------------

function thread(conversationId) {
  if (!threads.has(conversationId)) threads.set(conversationId, new Map());
  return threads.get(conversationId);
}

function entriesOf(conversationId) {
  return [...thread(conversationId).values()].sort((a, b) =>
    a.message.createdAt.localeCompare(b.message.createdAt));
}

/** Add or update a message; ``local`` is what this page knows beside it (its text). */
function addMessage(message, local) {
  const entries = thread(message.conversationId);
  let entry = entries.get(message.id);
  if (!entry) {
    entry = { message, text: null, note: null, protection: null, node: h("li", { class: "msg" }) };
    entries.set(message.id, entry);
  } else if (message.updatedAt >= entry.message.updatedAt) {
    entry.message = { ...entry.message, ...message };
  }
  if (local.text !== undefined) entry.text = local.text;
  if (local.protection) entry.protection = local.protection;
  if (!message.isEncrypted) entry.text = message.content;
  const early = pendingStatus.get(message.id);
  if (early) {
    pendingStatus.delete(message.id);
    applyStatus(entry, early);
  }
  render(entry);
  place(entry);
  if (message.isEncrypted && entry.text === null && !entry.opening && !entry.refused) open(entry);
  return entry;
}

function place(entry) {
  if (entry.message.conversationId !== openId) return;
  markRead(entry);
  const list = $("#thread");
  if (entry.node.parentNode === list) return;
  const later = entriesOf(openId).find(
    (e) => e.node.parentNode === list && e.message.createdAt > entry.message.createdAt);
  list.insertBefore(entry.node, later ? later.node : null);
}

/** A message shown in the open thread is read: tell the service once (a read receipt). */
function markRead(entry) {
  const m = entry.message;
  if (m.senderId === who.user || readSent.has(m.id)) return;
  readSent.add(m.id);
  api(`/api/messages/${m.id}/read`, { method: "POST" }).catch(() => readSent.delete(m.id));
}

async function open(entry) {
  entry.opening = true;
  entry.note = "Decrypting in this browser…";
  render(entry);
  try {
    const envelope = await api(`/api/messages/${entry.message.id}/envelope`);
    let form;
    try {
      form = checkEnvelope(envelope, entry.message.id); // before any decryption
    } catch (refusal) {
      entry.refused = true;
      entry.note = `Not decrypted: ${refusal.message}.`;
      return;
    }
    const key = await keyById(who, envelope.recipientKeyId);
    if (!key) {
      entry.note = `Sealed for key ${envelope.recipientKeyId}, which is not in this browser.`;
    } else {
      entry.text = await openEnvelope(envelope, key.privateKey);
      entry.note = null;
      // "End to end" only for what this browser sealed itself: the envelope comes from
      // the server, which could have sealed anything with any AAD.
      if (!entry.protection) {
        entry.protection = (await sealedHere(who, entry.message.id)) ? "e2e"
          : form === "server" ? "server" : "received";
      }
      entry.decrypted = true;
    }
  } catch (error) {
    if (error.code === "not_ready") entry.note = "Waiting for the encryption job…";
    else if (error.code === "content_shredded") entry.note = "Its content key was shredded.";
    else entry.note = `Cannot decrypt: ${describe(error)}`;
  } finally {
    entry.opening = false;
    render(entry);
  }
}

const STAGES = [
  ["Accepted", () => true],
  ["Encrypted", (m) => !["accepted", "encrypting"].includes(m.status), (m) => m.isEncrypted],
  ["Delivered", (m) => m.status === "delivered"],
  ["Notified", (m) => m.notified],
  ["Indexed", (m) => m.indexed],
];

function ticks(message) {
  const items = [];
  for (const [name, done, applies] of STAGES) {
    if (applies && !applies(message)) continue;
    const ok = Boolean(done(message));
    const label = name === "Delivered" ? `${name} ${message.deliveredCount}/${message.recipientCount}` : name;
    items.push(h("li", { class: ok ? "done" : "todo", dataset: { stage: name.toLowerCase() } },
      h("span", { "aria-hidden": "true" }, ok ? "✓" : "○"), " ", label,
      h("span", { class: "visually-hidden" }, ok ? " (done)" : " (pending)")));
  }
  if (message.status === "failed") {
    items.push(h("li", { class: "failed", dataset: { stage: "failed" } }, "✗ Failed"));
  }
  const readers = (message.readBy || []).length;
  if (readers) {
    items.push(h("li", { class: "done", dataset: { stage: "read" } },
      h("span", { "aria-hidden": "true" }, "✓"), " ", `Read ${readers}/${message.recipientCount}`));
  }
  return h("ul", { class: "ticks", "aria-label": "Delivery status" }, items);
}

function render(entry) {
  const m = entry.message;
  const mine = m.senderId === who.user;
  entry.node.className = `msg ${mine ? "mine" : "theirs"}`;
  entry.node.dataset.messageId = m.id;
  entry.node.dataset.status = m.status;
  if (entry.refused) entry.node.dataset.refused = "true";
  const protection = !m.isEncrypted ? "plain"
    : entry.protection === "e2e" ? "end to end"
    : entry.protection === "server" ? "encrypted by the service" : "encrypted";
  // "end to end" is said of what this browser sealed; what it received is "encrypted".
  const body = entry.text !== null
    ? h("p", { class: "text" }, entry.text)
    : h("p", { class: "text sealed" }, entry.note || "Encrypted");
  replace(entry.node,
    h("p", { class: "meta" },
      h("strong", {}, mine ? "You" : m.senderId), " · ", timeElement(m.createdAt), " · ",
      h("span", { class: m.isEncrypted ? "tag lock" : "tag" },
        m.isEncrypted ? lockIcon() : null, protection),
      entry.decrypted ? h("span", { class: "tag ok" }, "decrypted here") : null),
    body,
    mine ? ticks(m) : null);
}

function lockIcon() {
  return svg("svg", { class: "lock-icon", viewBox: "0 0 16 16", width: 12, height: 12, "aria-hidden": "true" },
    svg("path", { d: "M4 7V5a4 4 0 0 1 8 0v2h1v8H3V7zm2 0h4V5a2 2 0 0 0-4 0z", fill: "currentColor" }));
}

function applyStatus(entry, frame) {
  entry.message = {
    ...entry.message,
    status: frame.status,
    deliveredCount: frame.deliveredCount,
    recipientCount: frame.recipientCount,
    notified: frame.notified,
    indexed: frame.indexed,
  };
  if (frame.event === "Read" && frame.readBy) {
    const readers = new Set(entry.message.readBy || []);
    readers.add(frame.readBy);
    entry.message.readBy = [...readers];
  }
}

function onStatus(frame) {
  const entry = thread(frame.conversationId).get(frame.messageId);
  if (!entry) {
    pendingStatus.set(frame.messageId, frame);
    return;
  }
  applyStatus(entry, frame);
  render(entry);
  if (entry.message.isEncrypted && entry.text === null && !entry.opening && !entry.refused) {
    open(entry);
  }
}

function onNew(frame) {
  const m = frame.message;
  sessionStorage.setItem(CURSOR_KEY, frame.cursor);
  if (!conversations.has(m.conversationId)) {
    remember({
      id: m.conversationId,
      type: m.type,
      participantIds: [m.senderId, ...m.recipientIds.filter((r) => r !== m.senderId)],
      title: null,
    });
  }
  addMessage(m, {});
  if (m.conversationId !== openId) {
    conversations.get(m.conversationId).unread += 1;
    renderConversations();
  }
  announce(`New message from ${m.senderId}`);
  socket.send(JSON.stringify({ type: "ack", messageId: m.id }));
}

async function onSend(event) {
  event.preventDefault();
  const form = event.target;
  const error = $("#send-error");
  const button = $("#send-button");
  const conversation = conversations.get(openId);
  const text = form.text.value;
  if (!text.trim()) {
    error.textContent = "Write something first.";
    return;
  }
  const protection = form.protection.value;
  const clientMessageId = crypto.randomUUID();
  error.textContent = "";
  button.disabled = true;
  try {
    const body = { clientMessageId };
    let sealedId = null;
    if (protection === "e2e") {
      const { keys, changed } = await participantKeys(conversation.participantIds);
      if (changed.length) {
        for (const change of changed) keyChanges.set(change.peer, change);
        renderKeyWarnings();
        const names = changed.map((c) => c.peer).join(", ");
        throw new Error(`the key of ${names} is not the one pinned in this browser (see above)`);
      }
      // The service names a send by its clientMessageId: the AAD binds that id and the
      // version, and every reader checks it before decrypting.
      sealedId = await messageIdFor(who.tenant, who.user, clientMessageId);
      body.sealed = await seal(text, e2eAad(sealedId), keys);
    } else {
      body.content = text;
      if (protection === "server") body.encrypted = true;
    }
    const answer = conversation.type === "direct"
      ? await api("/api/messages/direct", {
        method: "POST",
        body: { ...body, recipientId: conversation.participantIds.find((p) => p !== who.user) },
      })
      : await api("/api/messages/group", {
        method: "POST",
        body: { ...body, conversationId: conversation.id },
      });
    if (sealedId !== null) {
      if (answer.message.id !== sealedId) {
        throw new Error(`sent, but the service named it ${answer.message.id}, not the id it was sealed for`);
      }
      await markSealed(who, sealedId);
    }
    addMessage(answer.message, { text, protection });
    form.text.value = "";
    announce("Message sent");
  } catch (failure) {
    error.textContent = `Not sent: ${describe(failure)}`;
  } finally {
    button.disabled = false;
    form.text.focus();
  }
}

// ---- the WebSocket ----------------------------------------------------------------

function setLive(state, text) {
  $("#live-dot").dataset.state = state;
  $("#live-status").textContent = text;
}

function retryLater() {
  setLive("down", `Disconnected; reconnecting in ${Math.round(retryDelay / 1000)} s`);
  reconnectTimer = setTimeout(connect, retryDelay);
  retryDelay = Math.min(retryDelay * 2, 15000);
}

// The token stays out of URLs: the socket opens with a single-use ticket (docs/API.md §6).
async function connect() {
  const mine = ++attempt;
  setLive("connecting", "Connecting…");
  let ticket;
  try {
    ({ ticket } = await api("/api/ws/ticket", { method: "POST" }));
  } catch (failure) {
    if (stopped || mine !== attempt) return;
    if (failure instanceof ApiError && (failure.status === 401 || failure.status === 403)) {
      setLive("down", `Live updates refused: ${describe(failure)}`);
      return;
    }
    retryLater();
    return;
  }
  if (stopped || mine !== attempt) return;
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  let url = `${scheme}//${location.host}/ws?ticket=${encodeURIComponent(ticket)}`;
  const cursor = sessionStorage.getItem(CURSOR_KEY);
  if (cursor) url += `&since=${encodeURIComponent(cursor)}`;
  const ws = new WebSocket(url);
  socket = ws;
  ws.onmessage = (event) => {
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch {
      return;
    }
    if (frame.type === "ready") onReady(frame);
    else if (frame.type === "message.new") onNew(frame);
    else if (frame.type === "message.status") onStatus(frame);
  };
  ws.onclose = (event) => {
    clearInterval(pingTimer);
    if (stopped || socket !== ws) return;
    if (event.code === 4401) {
      setLive("down", "Your token was refused or has expired: sign in again.");
      return;
    }
    if (event.code === 4400) sessionStorage.removeItem(CURSOR_KEY);
    retryLater();
  };
}

function onReady(frame) {
  sessionStorage.setItem(CURSOR_KEY, frame.cursor);
  retryDelay = 1000;
  setLive("up", "Live: connected");
  for (const id of conversations.keys()) {
    socket.send(JSON.stringify({ type: "subscribe", conversationId: id }));
  }
  clearInterval(pingTimer);
  pingTimer = setInterval(() => {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send('{"type":"ping"}');
  }, PING_SECONDS * 1000);
}
