// Tracker details (name, reported speed and heading) from the REST API,
// fetched in debounced batches of at most 100 ids and cached. A failed fetch
// only delays the details: the map keeps working without them.

const BATCH_SIZE = 100;
const DEBOUNCE_MS = 300;
const RETRY_MS = 30000;
const MAX_PARALLEL = 2;

/**
 * @typedef {object} TrackerDetails
 * @property {string} name
 * @property {number|null} speed    km/h as reported
 * @property {number|null} heading  degrees as reported
 * @property {string} status
 * @property {number} fetchedAt     Date.now() of the answer
 */

/**
 * Dispatches "loaded" (a CustomEvent whose `detail` is the ids loaded) after each answer.
 */
export class DetailsCache extends EventTarget {
  /** @type {Map<string, TrackerDetails>} */
  #details = new Map();
  #queued = new Set();
  #inFlight = new Set();
  /** @type {Map<string, number>} id -> Date.now() before which not to ask again */
  #failedUntil = new Map();
  #timer = null;
  #running = 0;
  #url;
  #warned = false;

  /**
   * @param {object} options
   * @param {string} options.url   the tracker list of the API (the page's config says where)
   */
  constructor({ url }) {
    super();
    this.#url = url;
  }

  get(id) {
    return this.#details.get(id);
  }

  /** Ask for the details of trackers not known yet. */
  want(ids) {
    const now = Date.now();
    for (const id of ids) {
      if (this.#details.has(id) || this.#inFlight.has(id)) continue;
      if ((this.#failedUntil.get(id) ?? 0) > now) continue;
      this.#queued.add(id);
    }
    this.#schedule();
  }

  /** Ask again for a tracker whose details are older than `maxAgeMs` (its reported speed moves on). */
  refresh(id, maxAgeMs) {
    const known = this.#details.get(id);
    if (known && Date.now() - known.fetchedAt <= maxAgeMs) return;
    if (this.#inFlight.has(id) || (this.#failedUntil.get(id) ?? 0) > Date.now()) return;
    this.#queued.add(id);
    this.#schedule();
  }

  #schedule() {
    if (this.#queued.size === 0 || this.#timer !== null) return;
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.#pump();
    }, DEBOUNCE_MS);
  }

  #pump() {
    while (this.#running < MAX_PARALLEL && this.#queued.size > 0) {
      const batch = [];
      for (const id of this.#queued) {
        batch.push(id);
        if (batch.length === BATCH_SIZE) break;
      }
      for (const id of batch) {
        this.#queued.delete(id);
        this.#inFlight.add(id);
      }
      this.#running += 1;
      this.#fetchBatch(batch).finally(() => {
        this.#running -= 1;
        for (const id of batch) this.#inFlight.delete(id);
        this.#pump();
      });
    }
  }

  async #fetchBatch(ids) {
    const query = new URLSearchParams(ids.map((id) => ["id", id]));
    try {
      const response = await fetch(`${this.#url}?${query}`, {
        headers: { Accept: "application/json" },
        credentials: "same-origin",
      });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const body = await response.json();
      const now = Date.now();
      const loaded = [];
      for (const item of Array.isArray(body?.trackers) ? body.trackers : []) {
        if (typeof item?.id !== "string") continue;
        this.#details.set(item.id, {
          name: typeof item.name === "string" ? item.name : "",
          speed: Number.isFinite(item.speed) ? item.speed : null,
          heading: Number.isFinite(item.heading) ? item.heading : null,
          status: typeof item.status === "string" ? item.status : "",
          fetchedAt: now,
        });
        loaded.push(item.id);
      }
      // Ids the server did not return are not asked for again for a while.
      for (const id of ids) if (!this.#details.has(id)) this.#failedUntil.set(id, now + RETRY_MS);
      if (loaded.length) this.dispatchEvent(new CustomEvent("loaded", { detail: loaded }));
    } catch (error) {
      const retryAt = Date.now() + RETRY_MS;
      for (const id of ids) this.#failedUntil.set(id, retryAt);
      if (!this.#warned) {
        this.#warned = true;
        console.warn(`Tracker details unavailable (${error.message}); the map goes on without names.`);
      }
    }
  }
}
