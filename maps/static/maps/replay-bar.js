// The replay bar (<section id="replay-bar">) at the bottom of the map: what is
// replayed (each tracker in its trail's colour, with links to download its positions), play
// and pause, the clock, the scrub slider, the speed, the range (from, to and
// presets) and close. Built once with createElement and textContent; each
// update changes only what changed, so it can be drawn every frame.

import { SPEEDS, fromLocalInput, toLocalInput } from "./replay-clock.js";
import { element, setText } from "./tracker-details.js";

/**
 * What the bar shows.
 * @typedef {object} ReplayBarView
 * @property {boolean} playing
 * @property {number} since   Unix ms
 * @property {number} until
 * @property {number} at
 * @property {number} speed
 * @property {string} clock    the replay time in words
 * @property {Array<{id: string, name: string, colour: string, note: string,
 *   exports: Array<{label: string, href: string}>}>} trackers
 * @property {string} note     a sentence about the range ("" when none)
 * @property {string} hint     where the replay started, when not at the range's start ("" when none)
 * @property {boolean} playable  whether there is anything to play (not while every track read is empty)
 */

const PRESETS = [
  ["hour", "Last hour"],
  ["today", "Today"],
  ["yesterday", "Yesterday"],
];

export class ReplayBar {
  #root;
  #play;
  #clock;
  #scrub;
  #speed;
  #from;
  #to;
  #list;
  #note;
  #hint;
  #range = "";
  #trackersKey = "";

  /**
   * @param {HTMLElement} root  the <section id="replay-bar">
   * @param {object} actions
   * @param {() => void} actions.onToggle   play or pause
   * @param {(ms: number) => void} actions.onSeek
   * @param {(speed: number) => void} actions.onSpeed
   * @param {(since: number, until: number) => void} actions.onRange
   * @param {(name: string) => void} actions.onPreset  "hour", "today" or "yesterday"
   * @param {(id: string) => void} actions.onRemove
   * @param {() => void} actions.onClose
   */
  constructor(root, { onToggle, onSeek, onSpeed, onRange, onPreset, onRemove, onClose }) {
    this.#root = root;
    root.classList.add("replay-bar");
    root.setAttribute("aria-labelledby", "replay-title");

    const head = element("div", "replay-head");
    const title = element("h2", "replay-title");
    title.id = "replay-title";
    title.textContent = "Replay";
    const paused = element("span", "replay-paused");
    paused.setAttribute("role", "status");
    paused.textContent = "live updates paused";
    this.#list = element("ul", "replay-trackers");
    this.#list.setAttribute("aria-label", "Trackers replayed");
    const close = element("button", "replay-close");
    close.type = "button";
    close.textContent = "×";
    close.title = "Close the replay: back to the live map";
    close.setAttribute("aria-label", "Close the replay");
    close.addEventListener("click", () => onClose());
    head.append(title, paused, this.#list, close);

    const controls = element("div", "replay-controls");
    this.#play = element("button", "replay-play");
    this.#play.type = "button";
    this.#play.addEventListener("click", () => onToggle());
    this.#clock = element("time", "replay-clock");
    this.#clock.setAttribute("aria-live", "off");
    this.#scrub = element("input", "replay-scrub");
    this.#scrub.type = "range";
    this.#scrub.setAttribute("aria-label", "Replay time");
    this.#scrub.addEventListener("input", () => onSeek(Number(this.#scrub.value)));
    this.#speed = element("select", "replay-speed");
    this.#speed.setAttribute("aria-label", "Replay speed");
    this.#speed.title = "Speed, times real time";
    for (const speed of SPEEDS) {
      const option = element("option");
      option.value = String(speed);
      option.textContent = `${speed}×`;
      this.#speed.append(option);
    }
    this.#speed.addEventListener("change", () => onSpeed(Number(this.#speed.value)));
    // On a phone the range folds away behind this (the map needs the room); wider screens always show it.
    const rangeToggle = element("button", "replay-range-toggle");
    rangeToggle.type = "button";
    rangeToggle.textContent = "Range";
    rangeToggle.setAttribute("aria-expanded", "false");
    rangeToggle.setAttribute("aria-controls", "replay-range");
    rangeToggle.addEventListener("click", () => {
      const open = rangeToggle.getAttribute("aria-expanded") !== "true";
      rangeToggle.setAttribute("aria-expanded", String(open));
      root.dataset.range = open ? "open" : "closed";
    });
    controls.append(this.#play, this.#clock, this.#scrub, this.#speed, rangeToggle);

    const range = element("div", "replay-range");
    range.id = "replay-range";
    this.#from = dateInput("From");
    this.#to = dateInput("To");
    const changed = () => {
      const since = fromLocalInput(this.#from.input.value);
      const until = fromLocalInput(this.#to.input.value);
      if (since !== null && until !== null) onRange(since, until);
    };
    this.#from.input.addEventListener("change", changed);
    this.#to.input.addEventListener("change", changed);
    const presets = element("span", "replay-presets");
    for (const [name, label] of PRESETS) {
      const button = element("button", "replay-preset");
      button.type = "button";
      button.dataset.preset = name;
      button.textContent = label;
      button.addEventListener("click", () => onPreset(name));
      presets.append(button);
    }
    range.append(this.#from.label, this.#to.label, presets);

    this.#note = element("p", "replay-note");
    this.#note.setAttribute("role", "status");
    this.#note.hidden = true;

    this.#hint = element("p", "replay-hint");
    this.#hint.hidden = true;

    this.onRemove = onRemove;
    root.replaceChildren(head, controls, this.#hint, range, this.#note);
    // The bar's height, for the details panel to end above it where the bar goes under the panel (map.css).
    const keepHeight = () => {
      const height = root.hidden ? 0 : Math.ceil(root.getBoundingClientRect().height);
      document.documentElement.style.setProperty("--replay-bar-height", `${height}px`);
    };
    new ResizeObserver(keepHeight).observe(root);
  }

  get visible() {
    return !this.#root.hidden;
  }

  /** @param {ReplayBarView} view */
  show(view) {
    setText(this.#play, view.playing ? "❚❚ Pause" : "▶ Play");
    this.#play.setAttribute("aria-label", view.playing ? "Pause the replay" : "Play the replay");
    this.#play.dataset.playing = String(view.playing);
    this.#play.disabled = !view.playable;
    this.#play.title = view.playable ? "" : "No positions in this range to play";
    setText(this.#clock, view.clock);
    this.#clock.dateTime = new Date(view.at).toISOString();
    const range = `${view.since}-${view.until}`;
    if (range !== this.#range) {
      this.#range = range;
      this.#scrub.min = String(view.since);
      this.#scrub.max = String(view.until);
      this.#scrub.step = "1000";
      this.#from.input.value = toLocalInput(view.since);
      this.#to.input.value = toLocalInput(view.until);
    }
    if (Number(this.#scrub.value) !== Math.round(view.at)) this.#scrub.value = String(Math.round(view.at));
    this.#scrub.setAttribute("aria-valuetext", view.clock);
    if (this.#speed.value !== String(view.speed)) this.#speed.value = String(view.speed);
    setText(this.#note, view.note);
    this.#note.hidden = view.note === "";
    setText(this.#hint, view.hint ?? "");
    this.#hint.hidden = !view.hint;
    this.#showTrackers(view.trackers);
    this.#root.hidden = false;
  }

  /** Where the bar is on the screen (null while hidden). */
  box() {
    return this.#root.hidden ? null : this.#root.getBoundingClientRect();
  }

  hide() {
    this.#root.hidden = true;
    this.#range = "";
    this.#trackersKey = "";
  }

  #showTrackers(trackers) {
    const key = JSON.stringify(trackers);
    if (key === this.#trackersKey) return;
    this.#trackersKey = key;
    const items = trackers.map(({ id, name, colour, note, exports }) => {
      const item = element("li", "replay-tracker");
      item.dataset.id = id;
      const swatch = element("span", "replay-swatch");
      swatch.style.background = colour;
      swatch.setAttribute("aria-hidden", "true");
      const label = element("span", "replay-tracker-name");
      label.textContent = name;
      const detail = element("span", "replay-tracker-note");
      detail.textContent = note;
      item.append(swatch, label, detail);
      const actions = element("span", "replay-tracker-actions");
      if (exports.length) {
        const links = element("span", "replay-exports");
        links.setAttribute("aria-label", `Download ${name}'s positions of the range`);
        for (const { label: format, href } of exports) {
          const link = element("a", "replay-export");
          link.href = href;
          link.download = "";
          link.textContent = format;
          link.title = `Download ${name}'s positions of the range as ${format}`;
          links.append(link);
        }
        actions.append(links);
      }
      if (trackers.length > 1) {
        const remove = element("button", "replay-remove");
        remove.type = "button";
        remove.textContent = "×";
        remove.setAttribute("aria-label", `Take ${name} out of the replay`);
        remove.title = "Take it out of the replay";
        remove.addEventListener("click", () => this.onRemove(id));
        actions.append(remove);
      }
      if (actions.childElementCount) item.append(actions);
      return item;
    });
    this.#list.replaceChildren(...items);
  }
}

function dateInput(text) {
  const label = element("label", "replay-date");
  const words = element("span");
  words.textContent = text;
  const input = element("input");
  input.type = "datetime-local";
  input.required = true;
  label.append(words, input);
  return { label, input };
}
