// A JavaScript client of Courier that uses only what a browser has: fetch and
// WebCrypto (globalThis.crypto.subtle). No npm packages.
//
//   node webcrypto_client.mjs open BASE_URL  < {"token", "messageId", "privateKeyPem"}
//     fetches the envelope, unwraps the data key (RSA-OAEP, SHA-256) and decrypts
//     (AES-256-GCM, tag appended to the ciphertext, AAD from the envelope); prints
//     {"plaintext", "recipientKeyId", "alteredAadRejected"}.
//
//   node webcrypto_client.mjs send BASE_URL  < {"token", "senderId", "recipientId",
//                                               "plaintext", "aad", "clientMessageId"}
//     seals end to end: a fresh AES-256-GCM key wrapped for the sender's and the
//     recipient's registered public keys; prints {"status", "body", "sealed"}.

const { subtle } = globalThis.crypto;
const OAEP = { name: "RSA-OAEP", hash: "SHA-256" };

const fromB64 = (text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
const toB64 = (buffer) => btoa(String.fromCharCode(...new Uint8Array(buffer)));
const pemBody = (pem) => fromB64(pem.replace(/-----[^-]+-----/g, "").replace(/\s+/g, ""));

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString("utf8"));
}

async function api(baseUrl, token, path, init = {}) {
  const response = await fetch(baseUrl + path, {
    ...init,
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
  });
  return { status: response.status, body: await response.json() };
}

async function openMessage(baseUrl, { token, messageId, privateKeyPem }) {
  const { status, body: envelope } = await api(baseUrl, token, `/api/messages/${messageId}/envelope`);
  if (status !== 200) throw new Error(`envelope answered ${status}: ${JSON.stringify(envelope)}`);
  if (envelope.algorithm !== "AES-256-GCM" || envelope.keyAlgorithm !== "RSA-OAEP-256") {
    throw new Error(`unexpected algorithms ${envelope.algorithm} / ${envelope.keyAlgorithm}`);
  }
  const privateKey = await subtle.importKey("pkcs8", pemBody(privateKeyPem), OAEP, false, [
    "unwrapKey",
  ]);
  const dataKey = await subtle.unwrapKey(
    "raw",
    fromB64(envelope.wrappedKey),
    privateKey,
    { name: "RSA-OAEP" },
    { name: "AES-GCM", length: 256 },
    false,
    ["decrypt"],
  );
  const ciphertext = fromB64(envelope.ciphertext);
  const tag = fromB64(envelope.authTag);
  const sealed = new Uint8Array(ciphertext.length + tag.length);
  sealed.set(ciphertext);
  sealed.set(tag, ciphertext.length);
  const aad = envelope.aad ? fromB64(envelope.aad) : new Uint8Array();
  const decrypt = (additionalData) =>
    subtle.decrypt(
      { name: "AES-GCM", iv: fromB64(envelope.iv), additionalData, tagLength: 128 },
      dataKey,
      sealed,
    );
  const plaintext = new TextDecoder().decode(await decrypt(aad));
  const altered = Uint8Array.from(aad);
  altered[0] ^= 1;
  const alteredAadRejected = await decrypt(altered).then(
    () => false,
    () => true,
  );
  return { plaintext, recipientKeyId: envelope.recipientKeyId, alteredAadRejected };
}

async function sendMessage(baseUrl, input) {
  const { token, senderId, recipientId, plaintext, aad, clientMessageId } = input;
  const dataKey = await subtle.generateKey({ name: "AES-GCM", length: 256 }, true, ["encrypt"]);
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const additionalData = new TextEncoder().encode(aad);
  const sealed = new Uint8Array(
    await subtle.encrypt(
      { name: "AES-GCM", iv, additionalData, tagLength: 128 },
      dataKey,
      new TextEncoder().encode(plaintext),
    ),
  );
  const wrappedKeys = {};
  for (const user of [senderId, recipientId]) {
    const { status, body } = await api(baseUrl, token, `/api/keys/${encodeURIComponent(user)}`);
    if (status !== 200) throw new Error(`no public key for ${user}: ${JSON.stringify(body)}`);
    const publicKey = await subtle.importKey("spki", pemBody(body.publicKeyPem), OAEP, false, [
      "wrapKey",
    ]);
    wrappedKeys[user] = toB64(await subtle.wrapKey("raw", dataKey, publicKey, { name: "RSA-OAEP" }));
  }
  const body = {
    ciphertext: toB64(sealed.slice(0, sealed.length - 16)),
    iv: toB64(iv),
    authTag: toB64(sealed.slice(sealed.length - 16)),
    aad: toB64(additionalData),
    wrappedKeys,
  };
  const answer = await api(baseUrl, token, "/api/messages/direct", {
    method: "POST",
    body: JSON.stringify({ recipientId, sealed: body, clientMessageId }),
  });
  return { ...answer, sealed: body };
}

const [mode, baseUrl] = process.argv.slice(2);
const input = await readStdin();
const result =
  mode === "open" ? await openMessage(baseUrl, input) : await sendMessage(baseUrl, input);
process.stdout.write(JSON.stringify(result));
