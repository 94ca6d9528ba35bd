// The tracker list's state, without the page: every tracker the viewer may
// see (from GET /api/trackers), the search and the status filter, the counts
// per status and the trackers shown. Statuses change with time alone, so
// `update(now)` works them out again; for a tracker on the live map the
// newest position the map has wins over the list's.

import { STATUS, trackerStatus } from "./status.js";
import { found, searchKey, searchWords } from "./tracker-search.js";

/** The status filter that lets every tracker through. */
export const ALL = "all";

/**
 * @typedef {object} RosterEntry
 * @property {string} id
 * @property {string} name
 * @property {{name: string, id: string}} key  what the search compares (tracker-search.js)
 * @property {number|null} timestamp   Unix ms of the latest position the list was told of
 * @property {number|null} speed       km/h as last reported
 * @property {number|null} seenAt      the newest timestamp known: the list's or the live map's
 * @property {number|null} shownSpeed  the speed that goes with seenAt
 * @property {string} status           by seenAt, as of the last update()
 */

/** A number from the API, or null. */
function numberOrNull(value) {
  return Number.isFinite(value) ? value : null;
}

export class Roster {
  /** @type {RosterEntry[]} every tracker, in the server's order (by name, then id) */
  entries = [];
  /** @type {RosterEntry[]} the trackers the search and the filter let through, in order */
  shown = [];
  /** How many trackers the search finds, by status (the filter aside). */
  counts = { [STATUS.online]: 0, [STATUS.stale]: 0, [STATUS.offline]: 0, [STATUS.never]: 0 };
  /** How many trackers the search finds. */
  matchCount = 0;
  /** The status shown (a STATUS value), or ALL. */
  filter = ALL;

  /** @type {Map<string, RosterEntry>} */
  #byId = new Map();
  /** @type {RosterEntry[]} the trackers the search finds */
  #matching = [];
  #words = [];
  #thresholds;
  #live;

  /**
   * @param {object} options
   * @param {{onlineSeconds: number, offlineSeconds: number}} options.thresholds  the status rule
   * @param {(id: string) => ({timestamp: number, speed: number|null}|undefined)} [options.live]
   *   the live map's tracker of that id, if the map holds it
   */
  constructor({ thresholds, live = () => undefined }) {
    this.#thresholds = thresholds;
    this.#live = live;
  }

  get size() {
    return this.entries.length;
  }

  get(id) {
    return this.#byId.get(id);
  }

  /** Every tracker anew, from the API's tracker objects (§4.1); anything that is not one is left out. */
  replace(trackers) {
    const byId = new Map();
    for (const item of trackers) {
      if (typeof item?.id !== "string" || byId.has(item.id)) continue;
      const name = typeof item.name === "string" ? item.name : "";
      byId.set(item.id, {
        id: item.id,
        name,
        key: searchKey(name, item.id),
        timestamp: numberOrNull(item.timestamp),
        speed: numberOrNull(item.speed),
        seenAt: null,
        shownSpeed: null,
        status: STATUS.never,
      });
    }
    this.#byId = byId;
    this.entries = Array.from(byId.values());
    this.#search();
  }

  /** Search by name or id start as the server does (tracker-search.js). */
  setQuery(text) {
    this.#words = searchWords(text);
    this.#search();
  }

  /** Show one status (a STATUS value) or ALL. */
  setFilter(status) {
    this.filter = status === ALL || Object.values(STATUS).includes(status) ? status : ALL;
  }

  /** Work out every found tracker's newest position and status as of `now`, then the counts and what is shown. */
  update(now = Date.now()) {
    const counts = { [STATUS.online]: 0, [STATUS.stale]: 0, [STATUS.offline]: 0, [STATUS.never]: 0 };
    const shown = [];
    for (const entry of this.#matching) {
      const live = this.#live(entry.id);
      if (live && (entry.timestamp === null || live.timestamp > entry.timestamp)) {
        entry.seenAt = live.timestamp;
        // The reported speed first, then the one from the map's movement: the tooltip's rule.
        entry.shownSpeed = entry.speed ?? numberOrNull(live.speed);
      } else {
        entry.seenAt = entry.timestamp;
        entry.shownSpeed = entry.speed;
      }
      entry.status = trackerStatus(entry.seenAt, now, this.#thresholds);
      counts[entry.status] += 1;
      if (this.filter === ALL || entry.status === this.filter) shown.push(entry);
    }
    this.counts = counts;
    this.matchCount = this.#matching.length;
    this.shown = shown;
  }

  #search() {
    const words = this.#words;
    this.#matching = words.length === 0 ? this.entries : this.entries.filter((entry) => found(entry.key, words));
  }
}
