// The replay's pure parts, with no map and no DOM: the replay clock (time
// moves at `speed` times the wall clock between frames, and stops at the end),
// a tracker's track (where it was at any instant, interpolated in time between
// the two kept positions around it), the track answer read, the range presets
// and the clock's wording.

import { bearingDegrees, distanceMetres, nearestLongitude, wrapLongitude } from "./geo.js";

/** The speeds offered, times real time. */
export const SPEEDS = [1, 2, 5, 10, 25, 50, 100];
/** The most trackers one replay plays, each with a trail colour of its own (TRAIL_COLOURS). */
export const MAX_REPLAY_TRACKERS = 6;
/** The replayed trackers' trail colours, in the order they join; apart from the live trail's blue and each other. */
export const TRAIL_COLOURS = ["#d6336c", "#e8590c", "#2f9e44", "#7048e8", "#0c8599", "#a61e4d"];
/** The longest range the track endpoint answers (docs/protocol.md §4.8). */
export const MAX_RANGE_MS = 7 * 24 * 3600 * 1000;
/**
 * A silence longer than this is a gap in the data (the track endpoint names each one): the tracker
 * waits there, faded, instead of gliding along a straight line nobody saw. Past its last position
 * it waits faded once this long has gone by.
 */
export const GAP_MS = 5 * 60 * 1000;
/** Below this many metres between two positions the heading is kept (GPS jitter). */
const HEADING_MIN_METRES = 5;
/** The most wall-clock time one frame may move the replay on (a tab in the background does not jump ahead). */
const MAX_FRAME_MS = 1000;

/**
 * The replay's time: `at` in [since, until], Unix ms, moving by `speed` × the wall clock while playing.
 */
export class ReplayClock {
  since;
  until;
  at;
  speed;
  playing = false;
  /** What the last advance did (for tests): wall ms, replay ms. */
  lastStep = { wallMs: 0, replayMs: 0 };

  /** @param {{since: number, until: number, at?: number, speed?: number}} range */
  constructor({ since, until, at = since, speed = 1 }) {
    this.since = since;
    this.until = until;
    this.at = clamp(at, since, until);
    this.speed = SPEEDS.includes(speed) ? speed : 1;
  }

  /** Another range: the clock stays where it is if it can, else at the nearest end; paused. */
  setRange(since, until) {
    this.since = since;
    this.until = until;
    this.at = clamp(this.at, since, until);
    this.playing = false;
  }

  /** Play; at the end, from the start again. */
  play() {
    if (this.at >= this.until) this.at = this.since;
    this.playing = true;
  }

  pause() {
    this.playing = false;
  }

  seek(ms) {
    if (Number.isFinite(ms)) this.at = clamp(ms, this.since, this.until);
  }

  setSpeed(speed) {
    if (SPEEDS.includes(speed)) this.speed = speed;
  }

  /** Move on by `wallMs` of wall-clock time (a frame); reaching the end pauses. Whether it is still playing. */
  advance(wallMs) {
    if (!this.playing) return false;
    const wall = clamp(wallMs, 0, MAX_FRAME_MS);
    const before = this.at;
    this.at = Math.min(this.until, this.at + wall * this.speed);
    this.lastStep = { wallMs: wall, replayMs: this.at - before };
    if (this.at >= this.until) this.playing = false;
    return this.playing;
  }
}

/**
 * @typedef {object} TrackPoint
 * @property {number} timestamp   Unix ms
 * @property {number} latitude
 * @property {number} longitude   unwrapped: each within 180° of the one before, so steps go the short way round
 * @property {number|null} speed  km/h as reported
 * @property {number|null} heading  degrees as reported
 */

/**
 * @typedef {object} TrackPlace  where a tracker was at an instant
 * @property {number} latitude
 * @property {number} longitude   in [-180, 180)
 * @property {number} unwrapped   the longitude on the track's unwrapped line (for drawing its trail)
 * @property {number|null} heading   degrees, from its motion (else as reported)
 * @property {boolean} waiting    before its first position, or in a gap of the data: drawn faded
 * @property {number} index       the last kept position at or before the instant (-1: none)
 */

/** A tracker's kept positions over the range, oldest first, and where it was at any instant between them. */
export class ReplayTrack {
  /** @type {TrackPoint[]} */
  points;
  /** Headings from the motion into each point (null until it has moved). */
  #headings;
  /** The timestamps of the positions a gap follows. */
  #gapStarts;

  /**
   * @param {TrackPoint[]} points  oldest first (longitudes as reported; they are unwrapped here)
   * @param {Array<[number, number]>} [gaps]  the silences in the data: [last position before, first after], Unix ms
   */
  constructor(points, gaps = []) {
    this.#gapStarts = new Set(gaps.map(([before]) => before));
    const sorted = [...points].sort((a, b) => a.timestamp - b.timestamp);
    this.points = [];
    for (const point of sorted) {
      const previous = this.points.at(-1);
      if (previous && previous.timestamp === point.timestamp) continue;
      const longitude = previous ? nearestLongitude(point.longitude, previous.longitude) : point.longitude;
      this.points.push({ ...point, longitude });
    }
    this.#headings = [];
    let heading = null;
    for (let i = 0; i < this.points.length; i += 1) {
      const here = this.points[i];
      const next = this.points[i + 1];
      if (next && distanceMetres(here.latitude, here.longitude, next.latitude, next.longitude) > HEADING_MIN_METRES) {
        heading = bearingDegrees(here.latitude, here.longitude, next.latitude, next.longitude);
      } else if (heading === null) {
        heading = here.heading;
      }
      this.#headings.push(heading);
    }
  }

  get length() {
    return this.points.length;
  }

  /** The index of the last point at or before `ms` (-1 when every point is later). */
  indexAt(ms) {
    let low = 0;
    let high = this.points.length - 1;
    let found = -1;
    while (low <= high) {
      const middle = (low + high) >> 1;
      if (this.points[middle].timestamp <= ms) {
        found = middle;
        low = middle + 1;
      } else {
        high = middle - 1;
      }
    }
    return found;
  }

  /** Where the tracker was at `ms`; null when the track is empty. @returns {TrackPlace|null} */
  at(ms) {
    if (this.points.length === 0) return null;
    const index = this.indexAt(ms);
    if (index < 0) return this.#still(0, -1, true);
    const here = this.points[index];
    const next = this.points[index + 1];
    if (!next) return this.#still(index, index, ms - here.timestamp > GAP_MS);
    if (this.#gapStarts.has(here.timestamp)) return this.#still(index, index, true);
    const fraction = (ms - here.timestamp) / (next.timestamp - here.timestamp);
    const unwrapped = here.longitude + (next.longitude - here.longitude) * fraction;
    return {
      latitude: here.latitude + (next.latitude - here.latitude) * fraction,
      longitude: wrapLongitude(unwrapped),
      unwrapped,
      heading: this.#headings[index],
      waiting: false,
      index,
    };
  }

  #still(pointIndex, index, waiting) {
    const point = this.points[pointIndex];
    // Standing at a point, it faces the way it came (or, at the start, the way it goes).
    const heading = pointIndex > 0 ? this.#headings[pointIndex - 1] : this.#headings[pointIndex];
    return {
      latitude: point.latitude,
      longitude: wrapLongitude(point.longitude),
      unwrapped: point.longitude,
      heading,
      waiting,
      index,
    };
  }
}

/**
 * @typedef {object} TrackAnswer  what GET /api/trackers/{id}/track says (docs/protocol.md §4.8), checked
 * @property {ReplayTrack} track
 * @property {number} stored    positions stored in the range
 * @property {boolean} thinned
 * @property {number} zoom
 */

/**
 * Read the track endpoint's answer; positions that are not [ms, lat, lng, speed|null, heading|null]
 * and gaps that are not [ms, ms] are left out. @returns {TrackAnswer|null}
 */
export function readTrackAnswer(body) {
  if (!body || !Array.isArray(body.positions)) return null;
  const points = [];
  for (const item of body.positions) {
    if (!Array.isArray(item)) continue;
    const [timestamp, latitude, longitude, speed, heading] = item;
    if (![timestamp, latitude, longitude].every(Number.isFinite)) continue;
    if (Math.abs(latitude) > 90 || Math.abs(longitude) > 180) continue;
    points.push({
      timestamp,
      latitude,
      longitude,
      speed: Number.isFinite(speed) ? speed : null,
      heading: Number.isFinite(heading) ? heading : null,
    });
  }
  const gaps = Array.isArray(body.gaps)
    ? body.gaps.filter((gap) => Array.isArray(gap) && gap.length === 2 && gap.every(Number.isFinite))
    : [];
  return {
    track: new ReplayTrack(points, gaps),
    stored: Number.isInteger(body.stored) ? body.stored : points.length,
    thinned: body.thinned === true,
    zoom: Number.isFinite(body.zoom) ? body.zoom : 0,
  };
}

/** The range a preset names, in the browser's local time: "hour" (the last hour), "today" or "yesterday"; whole seconds. */
export function presetRange(name, now = Date.now()) {
  const nowMs = Math.floor(now / 1000) * 1000;
  if (name === "hour") return { since: nowMs - 3600 * 1000, until: nowMs };
  const midnight = new Date(nowMs);
  midnight.setHours(0, 0, 0, 0);
  if (name === "today") return { since: midnight.getTime(), until: nowMs };
  const before = new Date(midnight);
  before.setDate(before.getDate() - 1);
  return { since: before.getTime(), until: midnight.getTime() };
}

/** Whether a range can be replayed: whole ms, since before until, no longer than the endpoint allows. */
export function isReplayRange(since, until) {
  return Number.isSafeInteger(since) && Number.isSafeInteger(until) && since >= 0 && since < until && until - since <= MAX_RANGE_MS;
}

/** The replay clock's words: "14:02:31", with the date when not today ("28 Nov 2026, 14:02:31" in the browser's words). */
export function formatReplayClock(ms, nowMs = Date.now()) {
  const then = new Date(ms);
  const time = then.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  if (then.toDateString() === new Date(nowMs).toDateString()) return time;
  const sameYear = then.getFullYear() === new Date(nowMs).getFullYear();
  const date = then.toLocaleDateString([], { day: "numeric", month: "short", ...(sameYear ? {} : { year: "numeric" }) });
  return `${date}, ${time}`;
}

/** The value of a datetime-local input for `ms` (the browser's local time, to the minute). */
export function toLocalInput(ms) {
  const when = new Date(ms);
  const pad = (n) => String(n).padStart(2, "0");
  return `${when.getFullYear()}-${pad(when.getMonth() + 1)}-${pad(when.getDate())}T${pad(when.getHours())}:${pad(when.getMinutes())}`;
}

/** A datetime-local input's value as Unix ms (local time); null when it holds none. */
export function fromLocalInput(value) {
  if (typeof value !== "string" || !/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,3})?)?$/.test(value)) return null;
  const ms = new Date(value).getTime();
  return Number.isFinite(ms) ? ms : null;
}

function clamp(value, low, high) {
  return Math.min(high, Math.max(low, value));
}
