// A tiny IndexedDB key-value store. CryptoKey objects are stored as they are (structured
// clone), so non-extractable keys stay non-extractable across reloads.

const DB_NAME = "dialtone";
const STORE = "kv";
let opening = null;

function database() {
  if (!opening) {
    opening = new Promise((resolve, reject) => {
      const request = indexedDB.open(DB_NAME, 1);
      request.onupgradeneeded = () => request.result.createObjectStore(STORE);
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    });
  }
  return opening;
}

async function run(mode, action) {
  const db = await database();
  return new Promise((resolve, reject) => {
    const tx = db.transaction(STORE, mode);
    const request = action(tx.objectStore(STORE));
    tx.oncomplete = () => resolve(request.result);
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error);
  });
}

export const store = {
  get: (key) => run("readonly", (s) => s.get(key)),
  put: (key, value) => run("readwrite", (s) => s.put(value, key)),
  delete: (key) => run("readwrite", (s) => s.delete(key)),
};
