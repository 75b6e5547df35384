// Private keys stay in this browser: IndexedDB holds the CryptoKey objects themselves
// (structured clones of non-extractable keys: no script, ours included, can read the
// key bytes out). One record per registered key, so old envelopes stay readable.
// Beside them: the fingerprint pinned for each peer on first use ("pins"), and the ids
// of the messages this browser sealed end to end ("sealed").

const DB_NAME = "courier-console";
const STORE = "keys";
const PINS = "pins";
const SEALED = "sealed";

function open() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB_NAME, 2);
    request.onupgradeneeded = () => {
      const db = request.result;
      if (!db.objectStoreNames.contains(STORE)) {
        db.createObjectStore(STORE, { keyPath: "id" }).createIndex("owner", "owner");
      }
      if (!db.objectStoreNames.contains(PINS)) db.createObjectStore(PINS, { keyPath: "id" });
      if (!db.objectStoreNames.contains(SEALED)) db.createObjectStore(SEALED, { keyPath: "id" });
    };
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

async function run(mode, work, name = STORE) {
  const db = await open();
  try {
    return await new Promise((resolve, reject) => {
      const tx = db.transaction(name, mode);
      const request = work(tx.objectStore(name));
      tx.oncomplete = () => resolve(request ? request.result : undefined);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error);
    });
  } finally {
    db.close();
  }
}

const owner = (who) => `${who.tenant}/${who.user}`;

/** Keep a registered pair: {keyId, fingerprint, createdAt} from the server's answer. */
export function saveKey(who, registered, pair) {
  const record = {
    id: `${owner(who)}/${registered.keyId}`,
    owner: owner(who),
    keyId: registered.keyId,
    fingerprint: registered.fingerprint,
    createdAt: registered.createdAt,
    privateKey: pair.privateKey,
    publicKey: pair.publicKey,
  };
  return run("readwrite", (store) => store.put(record)).then(() => record);
}

/** Every key of this user in this browser, newest first. */
export async function keysOf(who) {
  const all = await run("readonly", (store) => store.index("owner").getAll(owner(who)));
  return (all || []).sort((a, b) => String(b.createdAt).localeCompare(String(a.createdAt)));
}

export function keyById(who, keyId) {
  return run("readonly", (store) => store.get(`${owner(who)}/${keyId}`));
}

/** The fingerprint pinned for ``peer`` ({peer, fingerprint, keyId, pinnedAt}), or undefined. */
export function pinOf(who, peer) {
  return run("readonly", (store) => store.get(`${owner(who)}/${peer}`), PINS);
}

/** Pin (or, after the person checked it, re-pin) ``peer``'s key fingerprint. */
export function pin(who, peer, fingerprint, keyId) {
  const record = {
    id: `${owner(who)}/${peer}`,
    peer,
    fingerprint,
    keyId,
    pinnedAt: new Date().toISOString(),
  };
  return run("readwrite", (store) => store.put(record), PINS).then(() => record);
}

/** Remember that this browser sealed ``messageId`` end to end. */
export function markSealed(who, messageId) {
  return run("readwrite", (store) => store.put({ id: `${owner(who)}/${messageId}` }), SEALED);
}

/** Whether this browser sealed ``messageId`` end to end. */
export async function sealedHere(who, messageId) {
  return Boolean(await run("readonly", (store) => store.get(`${owner(who)}/${messageId}`), SEALED));
}
