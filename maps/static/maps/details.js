// Tracker details (name, reported speed and heading) from the REST API,
// fetched in debounced batches of at most 100 ids and cached. A failed fetch
// only delays the details: the map keeps working without them. The cache is
// bounded: the trackers the map has not asked about for longest go first.

/**
 * The most trackers whose details are kept. The map asks again every few
 * seconds for every tracker it holds, so this must stay well above the
 * trackers one view can hold (5,000 in the browser benchmark) or they would
 * push each other out and be fetched over and over; at a few hundred bytes an
 * entry it keeps the cache to a few megabytes over a long session.
 */
export const MAX_DETAILS = 10000;
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
  /** @type {Map<string, TrackerDetails>} in order of use, least recent first */
  #details = new Map();
  #queued = new Set();
  #inFlight = new Set();
  /** @type {Map<string, number>} id -> Date.now() before which not to ask again */
  #failedUntil = new Map();
  #timer = null;
  #running = 0;
  #url;
  #maxEntries;
  #warned = false;

  /**
   * @param {object} options
   * @param {string} options.url   the tracker list of the API (the page's config says where)
   * @param {number} [options.maxEntries]  how many trackers' details to keep
   */
  constructor({ url, maxEntries = MAX_DETAILS }) {
    super();
    this.#url = url;
    this.#maxEntries = maxEntries;
  }

  get size() {
    return this.#details.size;
  }

  /** The details of a tracker, if known. Cheap: the map calls it for every marker in every frame. */
  get(id) {
    return this.#details.get(id);
  }

  /** Ask for the details of trackers not known yet; those known count as just used. */
  want(ids) {
    const now = Date.now();
    for (const id of ids) {
      const known = this.#details.get(id);
      if (known) {
        this.#details.delete(id);
        this.#details.set(id, known);
        continue;
      }
      if (this.#inFlight.has(id)) continue;
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
        this.#details.delete(item.id);
        this.#details.set(item.id, {
          name: typeof item.name === "string" ? item.name : "",
          speed: Number.isFinite(item.speed) ? item.speed : null,
          heading: Number.isFinite(item.heading) ? item.heading : null,
          status: typeof item.status === "string" ? item.status : "",
          fetchedAt: now,
        });
        loaded.push(item.id);
      }
      // Ids the server did not return (and we do not know) are not asked for again for a while.
      const returned = new Set(loaded);
      this.#forgetExpiredFailures(now);
      for (const id of ids) {
        if (!returned.has(id) && !this.#details.has(id)) this.#failedUntil.set(id, now + RETRY_MS);
      }
      this.#evictBeyondLimit();
      if (loaded.length) this.dispatchEvent(new CustomEvent("loaded", { detail: loaded }));
    } catch (error) {
      const now = Date.now();
      this.#forgetExpiredFailures(now);
      for (const id of ids) this.#failedUntil.set(id, now + RETRY_MS);
      if (!this.#warned) {
        this.#warned = true;
        console.warn(`Tracker details unavailable (${error.message}); the map goes on without names.`);
      }
    }
  }

  /** Drop the least recently used details beyond the limit (a Map iterates oldest first). */
  #evictBeyondLimit() {
    for (const id of this.#details.keys()) {
      if (this.#details.size <= this.#maxEntries) return;
      this.#details.delete(id);
    }
  }

  /** Failures are remembered only until their retry time, so that list stays small too. */
  #forgetExpiredFailures(now) {
    for (const [id, until] of this.#failedUntil) if (until <= now) this.#failedUntil.delete(id);
  }
}
