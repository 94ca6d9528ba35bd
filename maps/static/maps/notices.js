// Short notices of geofence crossings: "Tram 4 entered Kamppi". They stack in
// a corner, fade after a few seconds, let clicks through to the map, and are
// read out politely (the list is an aria-live region). A burst costs no more
// than a few: notices are gathered for a moment, only the newest few are
// shown, and the rest are counted in one line.

import { formatClock } from "./ui.js";

export const NOTICE_MS = 6000;
const FADE_MS = 400;
const GATHER_MS = 150;
/** The most notices on screen at once (a summary line aside). */
export const MAX_NOTICES = 4;

/**
 * @typedef {object} Notice
 * @property {string} trackerId
 * @property {string} fenceId
 * @property {boolean} entered
 * @property {number} at  Date.now() when it arrived
 */

export class NoticeBoard {
  #list;
  #describe;
  /** @type {Notice[]} at most MAX_NOTICES, newest last */
  #gathered = [];
  #overflow = 0;
  #timer = null;
  /** @type {Map<HTMLElement, Notice>} the notices on screen */
  #shown = new Map();

  /**
   * @param {HTMLOListElement} list  the aria-live list the notices go in
   * @param {(notice: Notice) => {tracker: string, fence: string}} describe  names for a notice, asked again by renamed()
   */
  constructor(list, describe) {
    this.#list = list;
    this.#describe = describe;
  }

  /** Say that a tracker entered (or left) a fence. O(1): a burst of thousands only counts. */
  add(notice) {
    this.#gathered.push(notice);
    if (this.#gathered.length > MAX_NOTICES) {
      this.#gathered.shift();
      this.#overflow += 1;
    }
    if (this.#timer === null) this.#timer = setTimeout(() => this.#flush(), GATHER_MS);
  }

  /** Names may have become known (tracker details, fence names): write the shown notices again. */
  renamed() {
    for (const [item, notice] of this.#shown) fill(item, notice, this.#describe(notice));
  }

  #flush() {
    this.#timer = null;
    const items = [];
    if (this.#overflow > 0) {
      const more = this.#overflow;
      items.push(summary(`${more.toLocaleString()} earlier geofence ${more === 1 ? "crossing" : "crossings"} not shown`));
    }
    for (const notice of this.#gathered) {
      const item = document.createElement("li");
      item.className = `notice ${notice.entered ? "notice-entered" : "notice-left"}`;
      fill(item, notice, this.#describe(notice));
      this.#shown.set(item, notice);
      items.push(item);
    }
    this.#gathered = [];
    this.#overflow = 0;
    this.#list.append(...items);
    this.#list.hidden = false;
    // Beyond the limit, the oldest go at once.
    while (this.#list.children.length > MAX_NOTICES + 1) this.#remove(this.#list.firstElementChild);
    for (const item of items) setTimeout(() => this.#fade(item), NOTICE_MS);
  }

  #fade(item) {
    if (!item.isConnected) return;
    item.classList.add("notice-leaving");
    setTimeout(() => this.#remove(item), FADE_MS);
  }

  #remove(item) {
    item.remove();
    this.#shown.delete(item);
    if (this.#list.children.length === 0) this.#list.hidden = true;
  }
}

function fill(item, notice, { tracker, fence }) {
  const time = document.createElement("time");
  time.dateTime = new Date(notice.at).toISOString();
  time.textContent = formatClock(notice.at);
  const who = document.createElement("strong");
  who.textContent = tracker;
  const where = document.createElement("strong");
  where.textContent = fence;
  const verb = document.createTextNode(notice.entered ? " entered " : " left ");
  item.replaceChildren(time, " ", who, verb, where);
}

function summary(text) {
  const item = document.createElement("li");
  item.className = "notice notice-summary";
  item.textContent = text;
  return item;
}
