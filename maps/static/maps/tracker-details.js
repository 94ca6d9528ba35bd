// The selected tracker's details panel (<section id="tracker-details">): name,
// id (copyable), status, position, speed, heading, last update, the geofences
// it is in and its latest visits, a Follow toggle, a Replay button and a close button. Built
// once with createElement and textContent; each update changes only the texts
// that changed, so nothing flickers while the tracker reports every second.

import { formatClock } from "./ui.js";

/**
 * What the panel shows; strings are ready to read, null where nothing is known yet.
 * @typedef {object} DetailsView
 * @property {string} id
 * @property {string} name
 * @property {string} status          the status word (config.trackerStatus.labels)
 * @property {string} statusKey       online, stale, offline or never (for its colour)
 * @property {string|null} latitude
 * @property {string|null} longitude
 * @property {string} speed
 * @property {string} heading
 * @property {string|null} updated   age and clock time of the latest position
 * @property {string} fences          the geofences it is in now
 * @property {Array<{fence: string, when: string, inside: boolean}>|null} visits  latest first; null until read
 * @property {boolean} following
 * @property {boolean} followable     false when there is nothing to follow (no such tracker)
 * @property {"start"|"add"|"in"|"full"|"none"} replay  what its Replay button does: open a replay of it, add
 *   it to the open replay, or nothing (it is in it, the replay has all the trackers it can take, or there
 *   is no such tracker)
 * @property {string} note            a sentence about the panel's data ("" when none)
 */

const ROWS = [
  ["status", "Status"],
  ["latitude", "Latitude"],
  ["longitude", "Longitude"],
  ["speed", "Speed"],
  ["heading", "Heading"],
  ["updated", "Last update"],
  ["fences", "Geofences"],
];

const REPLAY_BUTTON = {
  start: { text: "Replay", title: "Play its history on the map (live updates pause meanwhile)", disabled: false },
  add: { text: "Add to replay", title: "Play its history beside the trackers being replayed", disabled: false },
  in: { text: "In the replay", title: "It is being replayed", disabled: true },
  full: { text: "Replay is full", title: "The replay has all the trackers it can take", disabled: true },
  none: { text: "Replay", title: "No active tracker has this id", disabled: true },
};

export class DetailsPanel {
  #root;
  #title;
  #idText;
  #copy;
  #follow;
  #replay;
  #note;
  #visits;
  #visitsEmpty;
  /** @type {Record<string, HTMLElement>} */
  #values = {};
  #statusDot;
  /** @type {string} the last visits list drawn, to redraw only on change */
  #visitsKey = "";
  #copyTimer = null;

  /**
   * @param {HTMLElement} root  the <section id="tracker-details">
   * @param {object} actions
   * @param {() => void} actions.onClose
   * @param {(on: boolean) => void} actions.onFollow
   * @param {() => void} actions.onReplay  open a replay of it, or add it to the open one
   */
  constructor(root, { onClose, onFollow, onReplay }) {
    this.#root = root;
    root.classList.add("tracker-details");
    root.setAttribute("aria-labelledby", "tracker-details-title");

    const header = element("header", "details-header");
    this.#title = element("h2", "details-title");
    this.#title.id = "tracker-details-title";
    const close = element("button", "details-close");
    close.type = "button";
    close.setAttribute("aria-label", "Close the details");
    close.title = "Close (Esc)";
    close.textContent = "×";
    close.addEventListener("click", () => onClose());
    header.append(this.#title, close);

    const idLine = element("p", "details-id");
    this.#idText = element("code", "details-id-text");
    this.#copy = element("button", "details-copy");
    this.#copy.type = "button";
    this.#copy.textContent = "Copy id";
    this.#copy.addEventListener("click", () => this.#copyId());
    idLine.append(this.#idText, this.#copy);

    this.#follow = element("button", "details-follow");
    this.#follow.type = "button";
    this.#follow.addEventListener("click", () => onFollow(this.#follow.getAttribute("aria-pressed") !== "true"));

    this.#replay = element("button", "details-replay");
    this.#replay.type = "button";
    this.#replay.addEventListener("click", () => onReplay());
    const actions = element("div", "details-actions");
    actions.append(this.#follow, this.#replay);

    this.#note = element("p", "details-note");
    this.#note.setAttribute("role", "status");

    const list = element("dl", "details-rows");
    for (const [key, label] of ROWS) {
      const term = element("dt");
      term.textContent = label;
      const value = element("dd");
      value.dataset.field = key;
      if (key === "status") {
        this.#statusDot = element("span", "details-status-dot");
        this.#statusDot.setAttribute("aria-hidden", "true");
        value.append(this.#statusDot, element("span"));
        this.#values[key] = /** @type {HTMLElement} */ (value.lastChild);
      } else {
        this.#values[key] = value;
      }
      list.append(term, value);
    }

    const visitsTitle = element("h3", "details-subtitle");
    visitsTitle.textContent = "Latest visits";
    this.#visits = element("ol", "details-visits");
    this.#visitsEmpty = element("p", "details-empty");

    // Sections other modules add below the panel's own (trips.js).
    this.sections = element("div", "details-sections");

    root.replaceChildren(
      header,
      idLine,
      actions,
      this.#note,
      list,
      visitsTitle,
      this.#visits,
      this.#visitsEmpty,
      this.sections,
    );
  }

  get visible() {
    return !this.#root.hidden;
  }

  /** @param {DetailsView} view */
  show(view) {
    if (this.#idText.textContent !== view.id) {
      this.#visitsKey = "";
      this.#copy.textContent = "Copy id";
    }
    setText(this.#title, view.name);
    setText(this.#idText, view.id);
    setText(this.#values.status, view.status);
    this.#statusDot.dataset.status = view.statusKey;
    setText(this.#values.latitude, view.latitude ?? "…");
    setText(this.#values.longitude, view.longitude ?? "…");
    setText(this.#values.speed, view.speed);
    setText(this.#values.heading, view.heading);
    setText(this.#values.updated, view.updated ?? "…");
    setText(this.#values.fences, view.fences);
    this.#follow.setAttribute("aria-pressed", String(view.following));
    this.#follow.disabled = !view.followable;
    setText(this.#follow, view.following ? "Following" : "Follow");
    this.#follow.title = view.following ? "Stop keeping the map centred on it" : "Keep the map centred on it";
    const replay = REPLAY_BUTTON[view.replay] ?? REPLAY_BUTTON.start;
    setText(this.#replay, replay.text);
    this.#replay.title = replay.title;
    this.#replay.disabled = replay.disabled;
    setText(this.#note, view.note);
    this.#note.hidden = view.note === "";
    this.#showVisits(view.visits);
    this.#root.hidden = false;
  }

  hide() {
    this.#root.hidden = true;
  }

  #showVisits(visits) {
    const key = JSON.stringify(visits);
    if (key === this.#visitsKey) return;
    this.#visitsKey = key;
    const items = (visits ?? []).map(({ fence, when, inside }) => {
      const item = element("li", inside ? "details-visit details-visit-inside" : "details-visit");
      const name = element("span", "details-visit-fence");
      name.textContent = fence;
      const time = element("span", "details-visit-when");
      time.textContent = when;
      item.append(name, time);
      return item;
    });
    this.#visits.replaceChildren(...items);
    this.#visits.hidden = items.length === 0;
    this.#visitsEmpty.textContent = visits === null ? "Reading…" : "None yet";
    this.#visitsEmpty.hidden = items.length > 0;
  }

  async #copyId() {
    const id = this.#idText.textContent;
    clearTimeout(this.#copyTimer);
    try {
      await navigator.clipboard.writeText(id);
      this.#copy.textContent = "Copied";
    } catch {
      // No clipboard here (a page over plain HTTP, say): select the id for the user to copy.
      window.getSelection()?.selectAllChildren(this.#idText);
      this.#copy.textContent = "Selected: press Ctrl+C";
    }
    this.#copyTimer = setTimeout(() => (this.#copy.textContent = "Copy id"), 2500);
  }
}

/** A new element of `tag` with a class name, for the panels built here and in the replay bar. */
export function element(tag, className = "") {
  const node = document.createElement(tag);
  if (className) node.className = className;
  return node;
}

/** Set a node's text only when it changes (no flicker, no needless layout). */
export function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

/** "60.17022°": five decimals, about a metre. */
export function formatDegrees(value) {
  return `${value.toFixed(5)}°`;
}

const COMPASS = ["N", "NE", "E", "SE", "S", "SW", "W", "NW"];

/** "245° SW", or "unknown". */
export function formatHeading(degrees) {
  if (degrees === null || degrees === undefined || !Number.isFinite(degrees)) return "unknown";
  const folded = ((Math.round(degrees) % 360) + 360) % 360;
  return `${folded}° ${COMPASS[Math.round(folded / 45) % 8]}`;
}

/** A clock time, with the date when not today. */
export function formatWhen(ms, nowMs = Date.now()) {
  const then = new Date(ms);
  if (then.toDateString() === new Date(nowMs).toDateString()) return formatClock(ms);
  return then.toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
}
