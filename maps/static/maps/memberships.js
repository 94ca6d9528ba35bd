// Which fences each tracker is in: read from the tracker's open visits
// (docs/protocol.md, GET /api/trackers/<id>/visits, exitedAt null) when the
// page asks, and kept current by the hub's geofenceEntered/geofenceExited. A
// crossing that arrives while a read is under way is applied again on top of
// its answer, so a read that started before the crossing cannot undo it.
// The latest few visits of the read are kept too, for the details panel.
// Bounded: a few reads at a time, a short queue, and the trackers the page has
// not asked about for longest forgotten first.

export const MAX_TRACKERS = 10000;
const MAX_QUEUED = 50;
const MAX_PARALLEL = 2;
const VISITS_LIMIT = 100;
const RETRY_MS = 30000;
/** How many of a tracker's latest visits are kept for its details panel. */
const RECENT_VISITS = 5;

/**
 * @typedef {object} Membership
 * @property {Set<string>} inside  fence ids
 * @property {boolean} loaded      whether a read of the tracker's visits has answered
 * @property {number} readAt       Date.now() of that answer (0 before)
 * @property {number} retryAt      Date.now() before which not to read again (after a failure)
 * @property {Array<[string, boolean]>|null} replay  crossings seen while a read is under way
 * @property {Array<{fenceId: string, enteredAt: number, exitedAt: number|null}>} recent  its latest visits as last read, newest entry first
 */

/** Dispatches "changed" (detail: the tracker id) whenever a tracker's fences may have changed. */
export class FenceMemberships extends EventTarget {
  /** @type {Map<string, Membership>} in order of use, least recent first */
  #trackers = new Map();
  #queued = new Set();
  #running = 0;
  #urlOf;
  #onName;
  #maxTrackers;
  #warned = false;

  /**
   * @param {object} options
   * @param {(trackerId: string) => string} options.urlOf  a tracker's visits URL (from the page's config)
   * @param {(fenceId: string, name: string) => void} options.onName  a fence name read with the visits
   * @param {number} [options.maxTrackers]
   */
  constructor({ urlOf, onName, maxTrackers = MAX_TRACKERS }) {
    super();
    this.#urlOf = urlOf;
    this.#onName = onName;
    this.#maxTrackers = maxTrackers;
  }

  /** The tracker's fences, sorted, and whether they are read from the server (else only what the hub said). */
  of(trackerId) {
    const entry = this.#trackers.get(trackerId);
    if (!entry) return { fences: [], loaded: false };
    return { fences: Array.from(entry.inside).sort(), loaded: entry.loaded };
  }

  /** The tracker's latest visits as last read (newest entry first), and whether they were read. */
  recentVisits(trackerId) {
    const entry = this.#trackers.get(trackerId);
    return { visits: entry?.recent ?? [], loaded: entry?.loaded ?? false, readAt: entry?.readAt ?? 0 };
  }

  /** A crossing from the hub. */
  crossed(trackerId, fenceId, entered) {
    const entry = this.#entry(trackerId);
    apply(entry, fenceId, entered);
    entry.replay?.push([fenceId, entered]);
    this.dispatchEvent(new CustomEvent("changed", { detail: trackerId }));
  }

  /** Crossings may have been missed (the hub was away): read every tracker's visits again when next asked. */
  missedSome() {
    for (const entry of this.#trackers.values()) entry.readAt = 0;
  }

  /** Read the tracker's visits unless read less than `maxAgeMs` ago (or queued, or under way). */
  refresh(trackerId, maxAgeMs) {
    const entry = this.#entry(trackerId);
    if (entry.replay !== null || this.#queued.has(trackerId)) return;
    const now = Date.now();
    if (now - entry.readAt <= maxAgeMs || now < entry.retryAt) return;
    if (this.#queued.size >= MAX_QUEUED) return; // a burst: the rest are asked for when shown again
    this.#queued.add(trackerId);
    this.#pump();
  }

  #entry(trackerId) {
    let entry = this.#trackers.get(trackerId);
    if (entry) {
      this.#trackers.delete(trackerId);
    } else {
      entry = { inside: new Set(), loaded: false, readAt: 0, retryAt: 0, replay: null, recent: [] };
      for (const id of this.#trackers.keys()) {
        if (this.#trackers.size < this.#maxTrackers) break;
        this.#trackers.delete(id);
      }
    }
    this.#trackers.set(trackerId, entry);
    return entry;
  }

  #pump() {
    while (this.#running < MAX_PARALLEL && this.#queued.size > 0) {
      const [trackerId] = this.#queued;
      this.#queued.delete(trackerId);
      this.#running += 1;
      this.#read(trackerId).finally(() => {
        this.#running -= 1;
        this.#pump();
      });
    }
  }

  async #read(trackerId) {
    const started = this.#entry(trackerId);
    started.replay = [];
    let visits = null;
    try {
      const query = new URLSearchParams({ limit: String(VISITS_LIMIT) });
      const response = await fetch(`${this.#urlOf(trackerId)}?${query}`, {
        headers: { Accept: "application/json" },
        credentials: "same-origin",
      });
      // An unknown tracker is in no fence; any other failure is tried again later.
      if (response.status === 404) visits = [];
      else if (!response.ok) throw new Error(`HTTP ${response.status}`);
      else visits = (await response.json())?.visits;
    } catch (error) {
      if (!this.#warned) {
        this.#warned = true;
        console.warn(`Tracker visits unavailable (${error.message}); fences in tooltips follow the live updates only.`);
      }
    }
    const entry = this.#trackers.get(trackerId);
    if (entry !== started) return; // forgotten meanwhile
    const replay = entry.replay;
    entry.replay = null;
    if (!Array.isArray(visits)) {
      entry.retryAt = Date.now() + RETRY_MS;
      return;
    }
    entry.inside = new Set();
    entry.recent = [];
    for (const visit of visits) {
      if (typeof visit?.geofenceId !== "string") continue;
      if (typeof visit.geofenceName === "string") this.#onName(visit.geofenceId, visit.geofenceName);
      if (visit.exitedAt === null) entry.inside.add(visit.geofenceId);
      if (entry.recent.length < RECENT_VISITS && Number.isFinite(visit.enteredAt)) {
        const exitedAt = Number.isFinite(visit.exitedAt) ? visit.exitedAt : null;
        entry.recent.push({ fenceId: visit.geofenceId, enteredAt: visit.enteredAt, exitedAt });
      }
    }
    for (const [fenceId, entered] of replay) apply(entry, fenceId, entered);
    entry.loaded = true;
    entry.readAt = Date.now();
    this.dispatchEvent(new CustomEvent("changed", { detail: trackerId }));
  }
}

function apply(entry, fenceId, entered) {
  if (entered) entry.inside.add(fenceId);
  else entry.inside.delete(fenceId);
}
