// Private keys stay in this browser: IndexedDB holds the CryptoKey objects themselves
// (structured clones of non-extractable keys: no script, ours included, can read the
// key bytes out). One record per registered key, so old envelopes stay readable.

const DB_NAME = "courier-console";
const STORE = "keys";

function open() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB_NAME, 1);
    request.onupgradeneeded = () => {
      const store = request.result.createObjectStore(STORE, { keyPath: "id" });
      store.createIndex("owner", "owner");
    };
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

async function run(mode, work) {
  const db = await open();
  try {
    return await new Promise((resolve, reject) => {
      const tx = db.transaction(STORE, mode);
      const request = work(tx.objectStore(STORE));
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
