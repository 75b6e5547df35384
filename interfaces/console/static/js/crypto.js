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
