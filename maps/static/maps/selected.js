// What the page knows of the selected tracker, and only of it: its latest
// position (from the hub while it is in a watched cell, else read from
// GET /api/trackers/{id} every few seconds), what the API says of it (name,
// reported speed and heading), and its recent positions for the trail
// (GET /api/trackers/{id}/positions once, then every newer position heard).
// No map and no DOM here: the page's glue (selection-map.js) asks it to read
// when due and draws what it dispatches.

import { TrackerStore } from "./trackers.js";
import { TrailPoints } from "./trail.js";

/**
 * In a watched cell the hub brings its positions, and the tracker is read only this often:
 * for its reported speed and heading, and in case it left through the edge of the watched cells.
 */
const WATCHED_READ_EVERY_MS = 10000;
/** A read that has not answered after this long is given up, so the next one can start. */
const READ_TIMEOUT_MS = 8000;
/** The most positions the trail keeps (the positions endpoint's own limit). */
const TRAIL_MAX_POINTS = 10000;

/**
 * @typedef {object} TrackerInfo  what GET /api/trackers/{id} says (docs/protocol.md §4.1)
 * @property {string} name
 * @property {number|null} speed     km/h as reported
 * @property {number|null} heading   degrees as reported
 * @property {string} status
 * @property {number} readAt         Date.now() of the answer
 */

/**
 * Dispatches "changed" (detail: {id, what}) where `what` is "position" (a newer
 * position: `tracker` moved and the trail grew), "info" (the API answered),
 * "trail" (the history arrived) or "missing" (no such active tracker).
 */
export class SelectedTracker extends EventTarget {
  /** The selected tracker's id, or null. */
  id = null;
  /** @type {import("./trackers.js").Tracker|null} its latest position, with heading and speed from movement */
  tracker = null;
  /** @type {TrackerInfo|null} */
  info = null;
  /** Whether the API says there is no such active tracker (unknown, or made inactive). */
  missing = false;
  /** Its recent positions, oldest first. */
  trail;

  #store = new TrackerStore();
  #urlOf;
  #positionsUrlOf;
  #reading = null;
  #readStartedAt = 0;
  #lastReadAt = 0;
  #warned = false;

  /**
   * @param {object} options
   * @param {(id: string) => string} options.urlOf  GET /api/trackers/{id}
   * @param {(id: string) => string|null} options.positionsUrlOf  GET /api/trackers/{id}/positions (null: no trail)
   * @param {number} options.trailMinutes  how far back the trail reaches
   */
  constructor({ urlOf, positionsUrlOf, trailMinutes }) {
    super();
    this.#urlOf = urlOf;
    this.#positionsUrlOf = positionsUrlOf;
    this.trail = new TrailPoints({ maxAgeMs: trailMinutes * 60000, maxPoints: TRAIL_MAX_POINTS });
  }

  /** Forget the previous tracker and start reading `id` (null: none). */
  select(id) {
    if (id === this.id) return;
    this.id = id;
    this.#store = new TrackerStore();
    this.tracker = null;
    this.info = null;
    this.missing = false;
    this.trail.clear();
    this.#reading = null;
    this.#lastReadAt = 0;
    if (id === null) return;
    this.#read(id);
    this.#readTrail(id);
  }

  /** A position from the hub; ignored unless it is the selected tracker's. */
  heard(trackerId, latitude, longitude, timestamp) {
    if (trackerId !== this.id) return;
    this.#place(latitude, longitude, timestamp);
  }

  /**
   * Read the tracker from the API if due: at every call while it is outside the watched
   * cells (the hub says nothing of it there), else every WATCHED_READ_EVERY_MS.
   * @param {(latitude: number, longitude: number) => boolean} isWatched  whether the hub sends a position there
   */
  tick(isWatched) {
    const id = this.id;
    if (id === null || this.missing) return;
    const now = Date.now();
    if (this.#reading && now - this.#readStartedAt < READ_TIMEOUT_MS) return;
    const where = this.tracker;
    const watched = where !== null && isWatched(where.latitude, where.longitude);
    if (!watched || now - this.#lastReadAt >= WATCHED_READ_EVERY_MS) this.#read(id);
  }

  #place(latitude, longitude, timestamp) {
    const before = this.tracker?.timestamp;
    this.#store.enqueue({ id: this.id, latitude, longitude, timestamp });
    this.#store.applyPending();
    const tracker = this.#store.get(this.id) ?? null;
    const moved = tracker !== this.tracker || tracker.timestamp !== before;
    this.tracker = tracker;
    const grew = this.trail.extend({ latitude, longitude, timestamp });
    if (moved || grew) this.#changed("position");
  }

  async #read(id) {
    const reading = {};
    this.#reading = reading;
    this.#readStartedAt = Date.now();
    const answer = await getJson(this.#urlOf(id));
    if (this.#reading !== reading || this.id !== id) return; // deselected or given up meanwhile
    this.#reading = null;
    this.#lastReadAt = Date.now();
    if (answer.status === 404) {
      this.missing = true;
      this.#changed("missing");
      return;
    }
    const body = answer.body;
    if (!body || body.id !== id) {
      this.#warn(answer.error ?? `HTTP ${answer.status}`);
      return;
    }
    this.info = {
      name: typeof body.name === "string" ? body.name : "",
      speed: finiteOrNull(body.speed),
      heading: finiteOrNull(body.heading),
      status: typeof body.status === "string" ? body.status : "",
      readAt: Date.now(),
    };
    if (isPosition(body)) this.#place(body.latitude, body.longitude, body.timestamp);
    // Until it has moved far enough for a heading of its own, its marker points where the device says.
    if (this.tracker && this.tracker.heading === null) this.tracker.heading = this.info.heading;
    this.#changed("info");
  }

  async #readTrail(id) {
    const url = this.#positionsUrlOf(id);
    if (!url) return;
    // The server's default range is the trail's (MAP_TRAIL_MINUTES up to now); as many positions as it gives.
    const answer = await getJson(`${url}?${new URLSearchParams({ limit: String(TRAIL_MAX_POINTS) })}`);
    if (this.id !== id) return;
    const positions = Array.isArray(answer.body?.positions) ? answer.body.positions.filter(isPosition) : null;
    if (!positions) {
      if (answer.status !== 404) this.#warn(answer.error ?? `HTTP ${answer.status}`);
      return;
    }
    this.trail.addHistory(positions);
    // The newest stored position may be newer than what the hub or a read has said so far.
    const newest = positions.at(-1);
    if (newest && (!this.tracker || newest.timestamp > this.tracker.timestamp)) {
      this.#place(newest.latitude, newest.longitude, newest.timestamp);
    }
    this.#changed("trail");
  }

  #changed(what) {
    this.dispatchEvent(new CustomEvent("changed", { detail: { id: this.id, what } }));
  }

  #warn(message) {
    if (this.#warned) return;
    this.#warned = true;
    console.warn(`The selected tracker could not be read (${message}); its panel shows what the hub says.`);
  }
}

/** GET a JSON answer: {status, body} (status 0 and an error when the request failed). */
export async function getJson(url, timeoutMs = READ_TIMEOUT_MS) {
  try {
    const response = await fetch(url, {
      headers: { Accept: "application/json" },
      credentials: "same-origin",
      signal: AbortSignal.timeout(timeoutMs),
    });
    const body = response.ok ? await response.json() : null;
    return { status: response.status, body, error: null };
  } catch (error) {
    return { status: 0, body: null, error: error.message };
  }
}

function finiteOrNull(value) {
  return Number.isFinite(value) ? value : null;
}

/** A position as the API answers it: latitude and longitude in range, a timestamp in Unix ms. */
export function isPosition(item) {
  return (
    Number.isFinite(item?.latitude) &&
    Number.isFinite(item?.longitude) &&
    Number.isFinite(item?.timestamp) &&
    Math.abs(item.latitude) <= 90 &&
    Math.abs(item.longitude) <= 180
  );
}
