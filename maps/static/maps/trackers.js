// Tracker state: the latest position of every tracker on the map, updated from
// the hub. Updates are queued as they arrive and applied together once per
// animation frame, so 5,000 trackers reporting every second cost one redraw.

import { bearingDegrees, distanceMetres } from "./geo.js";

/** Below this many metres between two positions the heading is kept, not recomputed (GPS jitter). */
const HEADING_MIN_METRES = 5;

/**
 * @typedef {object} Tracker
 * @property {string} id
 * @property {number} latitude
 * @property {number} longitude
 * @property {number} timestamp   Unix ms of the position
 * @property {number} orderedAt   Unix ms where the position stands among the tracker's (see standsLater)
 * @property {number|null} heading   degrees clockwise from north, from movement
 * @property {number|null} speed     km/h, from the last two positions
 * @property {number} flashUntil     performance.now() until which a geofence flash shows
 */

export class TrackerStore {
  /** @type {Map<string, Tracker>} */
  #trackers = new Map();
  /** @type {Map<string, {id: string, latitude: number, longitude: number, timestamp: number, orderedAt: number, flashUntil?: number}>} */
  #pending = new Map();

  get size() {
    return this.#trackers.size;
  }

  get hasPending() {
    return this.#pending.size > 0;
  }

  get(id) {
    return this.#trackers.get(id);
  }

  values() {
    return this.#trackers.values();
  }

  /**
   * Queue a position received at `receivedAt` (Unix ms); only the latest
   * queued position per tracker is kept.
   */
  enqueue(update, receivedAt = Date.now()) {
    const ordered = { ...update, orderedAt: Math.min(update.timestamp, receivedAt) };
    const queued = this.#pending.get(update.id);
    if (queued && !standsLater(ordered, queued)) return;
    if (queued?.flashUntil) ordered.flashUntil = queued.flashUntil;
    this.#pending.set(update.id, ordered);
  }

  /**
   * Apply the queued positions. A position that does not stand later than the
   * one shown is ignored. Returns the ids seen for the first time.
   */
  applyPending() {
    const added = [];
    for (const update of this.#pending.values()) {
      const tracker = this.#trackers.get(update.id);
      if (!tracker) {
        this.#trackers.set(update.id, { ...update, heading: null, speed: null, flashUntil: update.flashUntil ?? 0 });
        added.push(update.id);
      } else {
        if (standsLater(update, tracker)) moveTracker(tracker, update);
        if (update.flashUntil > tracker.flashUntil) tracker.flashUntil = update.flashUntil;
      }
    }
    this.#pending.clear();
    return added;
  }

  /** Remove the trackers for which `keep(tracker)` is false; returns how many went. */
  retain(keep) {
    let removed = 0;
    for (const [id, tracker] of this.#trackers) {
      if (!keep(tracker)) {
        this.#trackers.delete(id);
        removed += 1;
      }
    }
    for (const [id, update] of this.#pending) {
      if (!keep(update)) this.#pending.delete(id);
    }
    return removed;
  }

  /**
   * Where a tracker is: its queued position if one is waiting (a hub message
   * carries a crossing right after its position), else the one shown; undefined if neither.
   */
  position(id) {
    return this.#pending.get(id) ?? this.#trackers.get(id);
  }

  /** Mark a tracker to flash (a geofence event) for `ms`; false if it is not on the map nor queued for it. */
  flash(id, ms, now = performance.now()) {
    const tracker = this.#pending.get(id) ?? this.#trackers.get(id);
    if (!tracker) return false;
    tracker.flashUntil = now + ms;
    return true;
  }
}

/**
 * Whether position `a` stands after `b`: by the earlier of its timestamp and
 * its arrival, then by timestamp. The server's rule (docs/protocol.md §1.3),
 * so a device clock running ahead cannot hold a marker while the device's
 * real reports arrive behind it; held to tests/cases/order.json.
 */
function standsLater(a, b) {
  return a.orderedAt > b.orderedAt || (a.orderedAt === b.orderedAt && a.timestamp > b.timestamp);
}

function moveTracker(tracker, update) {
  const metres = distanceMetres(tracker.latitude, tracker.longitude, update.latitude, update.longitude);
  const seconds = (update.timestamp - tracker.timestamp) / 1000;
  if (metres > HEADING_MIN_METRES) {
    tracker.heading = bearingDegrees(tracker.latitude, tracker.longitude, update.latitude, update.longitude);
  }
  if (seconds > 0) tracker.speed = (metres / seconds) * 3.6;
  tracker.latitude = update.latitude;
  tracker.longitude = update.longitude;
  tracker.timestamp = update.timestamp;
  tracker.orderedAt = update.orderedAt;
}
