// Autosaves in this browser, for Kiln's worker: one stored .zip per run (the core's
// `snapshot`) and a small JSON of what it is, in the origin private file system (OPFS), or in
// IndexedDB where OPFS is missing. Nothing leaves the browser. The newest KEEP runs are kept.
const FOLDER = 'kiln-autosave';
const KEEP = 3;

/**
 * A failed autosave worded for the person, whatever the browser said: it names the size and
 * what to do, never only the browser's own text. Its `code` is 'storage' (kiln.d.ts).
 * Chromium reports a full quota as QuotaExceededError, or sometimes only as a failed write
 * ("Failed to write data to data pipe"), and its estimate may lag; so the estimate is read
 * after the failed write's file is removed, and compared with this write's size.
 */
export async function storageError(error, bytes) {
  const mib = (bytes / 2 ** 20).toFixed(1);
  const { usage = 0, quota = Infinity } = await navigator.storage?.estimate?.().catch(() => ({})) ?? {};
  const full = error?.name === 'QuotaExceededError' || usage + bytes > quota;
  const message = full
    ? `the browser has no room for this autosave (${mib} MiB): delete old autosaves, or free space for this site in the browser's settings`
    : `the autosave (${mib} MiB) could not be written (the browser said: ${error?.message ?? error}): `
      + 'free space on this device or for this site in the browser\'s settings, or delete old autosaves';
  return Object.assign(new Error(message), { code: 'storage', full });
}

// ---------------------------------------------------------------- OPFS

async function opfsFolder() {
  const root = await navigator.storage.getDirectory();
  return root.getDirectoryHandle(FOLDER, { create: true });
}

async function opfsWrite(folder, name, bytes) {
  // a writable stream writes to a swap file that replaces the old one only on close(), so
  // a failed or crashed write leaves the previous autosave whole; a failed write's swap
  // file is dropped, and the file it created (where there was none) removed
  const existed = await folder.getFileHandle(name).then(() => true, () => false);
  const handle = await folder.getFileHandle(name, { create: true });
  let writable = null;
  try {
    writable = await handle.createWritable();
    await writable.write(bytes);
    await writable.close();
  } catch (error) {
    await writable?.abort().catch(() => {});
    if (!existed) await folder.removeEntry(name).catch(() => {});
    throw error;
  }
}

const opfs = {
  async put(id, zip, meta) {
    const folder = await opfsFolder();
    await opfsWrite(folder, `${id}.zip`, zip);
    await opfsWrite(folder, `${id}.json`, new TextEncoder().encode(JSON.stringify(meta)));
  },
  async list() {
    const folder = await opfsFolder();
    const metas = [];
    for await (const [name, handle] of folder.entries()) {
      if (!name.endsWith('.json') || handle.kind !== 'file') continue;
      try {
        metas.push(JSON.parse(await (await handle.getFile()).text()));
      } catch {
        // a half-written or foreign file: not an autosave
      }
    }
    return metas;
  },
  async get(id) {
    const folder = await opfsFolder();
    const file = await (await folder.getFileHandle(`${id}.zip`)).getFile();
    return new Uint8Array(await file.arrayBuffer());
  },
  async remove(id) {
    const folder = await opfsFolder();
    for (const name of [`${id}.zip`, `${id}.json`]) {
      await folder.removeEntry(name).catch(() => {});
    }
  },
};

// ---------------------------------------------------------------- IndexedDB

function idbOpen() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(FOLDER, 1);
    request.onupgradeneeded = () => {
      request.result.createObjectStore('zips');
      request.result.createObjectStore('metas');
    };
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

async function idbDo(mode, fn) {
  const db = await idbOpen();
  try {
    return await new Promise((resolve, reject) => {
      const tx = db.transaction(['zips', 'metas'], mode);
      const result = fn(tx.objectStore('zips'), tx.objectStore('metas'));
      tx.oncomplete = () => resolve(result?.result ?? result);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error);
    });
  } finally {
    db.close();
  }
}

const idb = {
  put: (id, zip, meta) => idbDo('readwrite', (zips, metas) => { zips.put(zip, id); metas.put(meta, id); }),
  list: () => idbDo('readonly', (_, metas) => metas.getAll()),
  async get(id) {
    const zip = await idbDo('readonly', (zips) => zips.get(id));
    if (!zip) throw new Error(`no autosave ${id}`);
    return zip;
  },
  remove: (id) => idbDo('readwrite', (zips, metas) => { zips.delete(id); metas.delete(id); }),
};

// ---------------------------------------------------------------- the store

let store = null;
async function pick() {
  if (store) return store;
  try {
    await opfsFolder();
    store = opfs;
  } catch {
    store = idb;
  }
  return store;
}

/** Saves run `id`'s snapshot with its meta ({id, savedAt, stage, step, …}); prunes old runs.
 * A failed save leaves the run's previous autosave as it was (IndexedDB's transaction is
 * undone whole; OPFS's write goes to a swap file). */
export async function save(id, zip, meta) {
  const s = await pick();
  try {
    await s.put(id, zip, { ...meta, id, bytes: zip.byteLength, savedAt: new Date().toISOString() });
  } catch (error) {
    throw await storageError(error, zip.byteLength);
  }
  // the save stands even if pruning fails: the old runs go at the next save
  try {
    for (const old of (await list()).slice(KEEP)) await s.remove(old.id);
  } catch {
    // nothing lost
  }
}

/** Every autosave's meta, newest first. */
export async function list() {
  const metas = await (await pick()).list();
  return metas.filter((m) => m && typeof m.id === 'string').sort((a, b) => String(b.savedAt).localeCompare(String(a.savedAt)));
}

export async function load(id) { return (await pick()).get(id); }
export async function remove(id) { return (await pick()).remove(id); }
