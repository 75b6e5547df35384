// WebCrypto only: RSA-4096 key pairs, opening envelopes, sealing end to end
// (the same formats as docs/SECURITY.md and tests/e2e/webcrypto_client.mjs).

const { subtle } = globalThis.crypto;
const OAEP = { name: "RSA-OAEP", hash: "SHA-256" };
const TAG_BYTES = 16;

export const fromB64 = (text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));

export function toB64(buffer) {
  const bytes = new Uint8Array(buffer);
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(text);
}

const pemBody = (pem) => fromB64(pem.replace(/-----[^-]+-----/g, "").replace(/\s+/g, ""));

/** A new RSA-OAEP (SHA-256) 4096-bit pair; the private key cannot be exported. */
export function generateKeyPair() {
  return subtle.generateKey(
    { ...OAEP, modulusLength: 4096, publicExponent: new Uint8Array([1, 0, 1]) },
    false,
    ["wrapKey", "unwrapKey"],
  );
}

/** The public key as a SubjectPublicKeyInfo PEM, what PUT /api/keys/me takes. */
export async function publicKeyPem(publicKey) {
  const der = toB64(await subtle.exportKey("spki", publicKey));
  const lines = der.match(/.{1,64}/g).join("\n");
  return `-----BEGIN PUBLIC KEY-----\n${lines}\n-----END PUBLIC KEY-----\n`;
}

/** Unwrap the data key with our private key and decrypt (AES-256-GCM, tag appended). */
export async function openEnvelope(envelope, privateKey) {
  if (envelope.algorithm !== "AES-256-GCM" || envelope.keyAlgorithm !== "RSA-OAEP-256") {
    throw new Error(`unknown algorithms ${envelope.algorithm} / ${envelope.keyAlgorithm}`);
  }
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
  const plain = await subtle.decrypt(
    {
      name: "AES-GCM",
      iv: fromB64(envelope.iv),
      additionalData: envelope.aad ? fromB64(envelope.aad) : new Uint8Array(),
      tagLength: 128,
    },
    dataKey,
    sealed,
  );
  return new TextDecoder().decode(plain);
}

/**
 * Seal ``plaintext`` in this browser for every participant: a fresh AES-256-GCM key,
 * wrapped with RSA-OAEP for each public key ({userId: publicKeyPem}). The answer is
 * the ``sealed`` body of a send; the server never sees the plaintext or the key.
 */
export async function seal(plaintext, aad, publicKeys) {
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
  for (const [user, pem] of Object.entries(publicKeys)) {
    const publicKey = await subtle.importKey("spki", pemBody(pem), OAEP, false, ["wrapKey"]);
    wrappedKeys[user] = toB64(await subtle.wrapKey("raw", dataKey, publicKey, { name: "RSA-OAEP" }));
  }
  return {
    ciphertext: toB64(sealed.slice(0, sealed.length - TAG_BYTES)),
    iv: toB64(iv),
    authTag: toB64(sealed.slice(sealed.length - TAG_BYTES)),
    aad: toB64(additionalData),
    wrappedKeys,
  };
}

/** SHA-256 of a PEM public key's DER SubjectPublicKeyInfo, hex: the registry's fingerprint. */
export async function fingerprintOfPem(pem) {
  const digest = new Uint8Array(await subtle.digest("SHA-256", pemBody(pem)));
  return [...digest].map((b) => b.toString(16).padStart(2, "0")).join("");
}

// Python's json.dumps of a list of strings (", " between items, every character
// outside printable ASCII escaped as \uXXXX), as domain/message.py names a send.
const pythonJson = (items) => "[" + items.map((s) => JSON.stringify(s).replace(
  /[\u007f-\uffff]/g, (c) => "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0"))).join(", ") + "]";

const NAMESPACE_URL = "6ba7b8119dad11d180b400c04fd430c8";

/**
 * The id the service gives a send with this clientMessageId (a UUID v5, see
 * ``message_id_for`` in domain/message.py): known before sending, so the AAD can name it.
 */
export async function messageIdFor(tenant, sender, clientMessageId) {
  const namespace = Uint8Array.from(NAMESPACE_URL.match(/../g), (x) => parseInt(x, 16));
  const name = new TextEncoder().encode(pythonJson(["courier:message", tenant, sender, clientMessageId]));
  const input = new Uint8Array(namespace.length + name.length);
  input.set(namespace);
  input.set(name, namespace.length);
  const bytes = new Uint8Array(await subtle.digest("SHA-1", input)).slice(0, 16);
  bytes[6] = (bytes[6] & 0x0f) | 0x50;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

export const VERSION = "v1";
/** The AAD this console seals end to end with: it binds the message id and the version. */
export const e2eAad = (messageId) => `courier:e2e:${messageId}:${VERSION}`;
const serverAad = (messageId) => `courier:message:${messageId}:${VERSION}`;

/**
 * Check, before decrypting, that an envelope is the one of ``messageId`` (the message
 * this page asked for) in the version it knows, and that its AAD names that message and
 * version. The answer is the AAD's form ("server" or "e2e"); anything else throws.
 */
export function checkEnvelope(envelope, messageId) {
  if (envelope.messageId !== messageId) {
    throw new Error(`the envelope is of another message (${envelope.messageId})`);
  }
  if (envelope.encryptionVersion !== VERSION) {
    throw new Error(`unknown envelope version ${envelope.encryptionVersion}`);
  }
  if (!envelope.aad) throw new Error("the envelope has no additional data naming the message");
  let aad;
  try {
    aad = new TextDecoder("utf-8", { fatal: true }).decode(fromB64(envelope.aad));
  } catch {
    throw new Error("the envelope's additional data is not text");
  }
  if (aad === serverAad(messageId)) return "server";
  if (aad === e2eAad(messageId)) return "e2e";
  throw new Error(`its additional data "${aad.slice(0, 120)}" does not name this message and version`);
}
