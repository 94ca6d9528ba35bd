// The details panel's "Trips and stops" section: the selected tracker's trips
// and stops of one day (the browser's local day, today first), read from
// GET /api/trackers/{id}/trips (docs/protocol.md §4.9), with a day picker.
// A trip is a button that asks the replay to play it (the window event
// "tracker-replay"); a stop's place is a button that shows it on the map.
// Built with createElement and textContent only. Clock times are the map's
// own (formatClock, to the second), so a trip's listed start and end agree
// with its duration and with the replay it opens.

import { formatClock } from "./ui.js";

/** Today's list is read again this often while it is shown (a trip may be under way). */
const TODAY_EVERY_MS = 60000;
const DAY_MS = 86400000;

/**
 * @typedef {object} Trip
 * @property {{timestamp: number, latitude: number, longitude: number}} start
 * @property {{timestamp: number, latitude: number, longitude: number}} end
 * @property {number} distanceMetres
 * @property {number} durationSeconds
 * @property {number} averageSpeed
 * @property {number|null} topSpeed
 *
 * @typedef {object} Stop
 * @property {number} latitude
 * @property {number} longitude
 * @property {number} from
 * @property {number} until
 * @property {number} durationSeconds
 */

export class TripsSection {
  #root;
  #date;
  #previous;
  #next;
  #summary;
  #items;
  #empty;
  #urlOf;
  #showPlace;
  #fetch;
  /** @type {string|null} */
  #trackerId = null;
  /** Local midnight of the day shown. */
  #day = startOfDay(Date.now());
  #timer = null;
  /** Answers to an older request are dropped. */
  #asked = 0;
  /** @type {{trips: Trip[], stops: Stop[]}|null} */
  #answer = null;

  /**
   * @param {HTMLElement} parent  where the section goes (the details panel's slot)
   * @param {object} options
   * @param {(trackerId: string) => string} options.urlOf  the trips URL of a tracker
   * @param {(latitude: number, longitude: number) => void} options.showPlace  show a stop on the map
   * @param {typeof window.fetch} [options.fetch]
   */
  constructor(parent, { urlOf, showPlace, fetch = (...args) => window.fetch(...args) }) {
    this.#urlOf = urlOf;
    this.#showPlace = showPlace;
    this.#fetch = fetch;
    this.#root = element("section", "trips");
    this.#root.setAttribute("aria-labelledby", "trips-title");
    const title = element("h3", "details-subtitle trips-title");
    title.id = "trips-title";
    title.textContent = "Trips and stops";

    const picker = element("div", "trips-day");
    this.#previous = dayButton("‹", "Previous day", () => this.#move(-1));
    this.#next = dayButton("›", "Next day", () => this.#move(1));
    this.#date = element("span", "trips-date");
    this.#date.setAttribute("aria-live", "polite");
    picker.append(this.#previous, this.#date, this.#next);

    this.#summary = element("p", "trips-summary");
    this.#items = element("ol", "trips-items");
    this.#empty = element("p", "details-empty trips-empty");
    this.#root.append(title, picker, this.#summary, this.#items, this.#empty);
    parent.append(this.#root);
  }

  /** Show the trips of `trackerId`: today's when it is another tracker than before. */
  show(trackerId) {
    if (trackerId === this.#trackerId) return;
    this.#trackerId = trackerId;
    this.#day = startOfDay(Date.now());
    this.#answer = null;
    this.#root.hidden = false;
    this.#read();
  }

  hide() {
    this.#trackerId = null;
    this.#asked += 1;
    clearTimeout(this.#timer);
    this.#root.hidden = true;
  }

  /** What the section shows (a test hook). */
  drawn() {
    return {
      trackerId: this.#trackerId,
      since: this.#day,
      until: endOfDay(this.#day),
      trips: this.#answer?.trips.length ?? null,
      stops: this.#answer?.stops.length ?? null,
    };
  }

  #move(days) {
    // Noon of the day, plus or minus whole days, then its midnight: right across daylight saving.
    const next = startOfDay(this.#day + DAY_MS / 2 + days * DAY_MS);
    if (next > startOfDay(Date.now())) return;
    this.#day = next;
    this.#answer = null;
    this.#read();
  }

  async #read() {
    clearTimeout(this.#timer);
    const trackerId = this.#trackerId;
    if (trackerId === null) return;
    const day = this.#day;
    const today = day === startOfDay(Date.now());
    if (document.hidden && this.#answer !== null) {
      // Nobody looks: ask again later rather than now.
      this.#timer = setTimeout(() => this.#read(), TODAY_EVERY_MS);
      return;
    }
    const asked = ++this.#asked;
    this.#drawDay(today);
    if (this.#answer === null) this.#say("Reading…");
    const query = new URLSearchParams({ since: String(day), until: String(endOfDay(day)) });
    let answer = null;
    let problem = "";
    try {
      const response = await this.#fetch(`${this.#urlOf(trackerId)}?${query}`, {
        headers: { Accept: "application/json" },
        credentials: "same-origin",
      });
      const body = await response.json();
      if (response.ok) answer = body;
      else problem = body.error ?? `The server answered ${response.status}.`;
    } catch {
      problem = "Could not read the trips; trying again shortly.";
    }
    if (asked !== this.#asked) return; // another day or tracker since
    if (answer) {
      this.#answer = answer;
      this.#draw(answer, trackerId);
    } else {
      this.#say(problem);
    }
    if (today || !answer) this.#timer = setTimeout(() => this.#read(), TODAY_EVERY_MS);
  }

  #drawDay(today) {
    this.#date.textContent = dayName(this.#day);
    this.#next.disabled = today;
  }

  #say(sentence) {
    this.#items.replaceChildren();
    this.#summary.hidden = true;
    this.#empty.textContent = sentence;
    this.#empty.hidden = false;
  }

  /** @param {{trips: Trip[], stops: Stop[]}} answer */
  #draw({ trips, stops }, trackerId) {
    const entries = [
      ...trips.map((trip) => ({ at: trip.start.timestamp, item: this.#tripItem(trip, trackerId) })),
      ...stops.map((stop) => ({ at: stop.from, item: this.#stopItem(stop) })),
    ].sort((a, b) => a.at - b.at);
    this.#items.replaceChildren(...entries.map(({ item }) => item));
    if (entries.length === 0) {
      this.#say("No trips or stops on this day.");
      return;
    }
    const metres = trips.reduce((sum, trip) => sum + trip.distanceMetres, 0);
    const seconds = trips.reduce((sum, trip) => sum + trip.durationSeconds, 0);
    this.#summary.textContent =
      trips.length === 0
        ? `No trips · ${plural(stops.length, "stop")}`
        : `${plural(trips.length, "trip")} · ${formatDistance(metres)} in ${formatSpan(seconds)}`;
    this.#summary.hidden = false;
    this.#empty.hidden = true;
  }

  /** @param {Trip} trip */
  #tripItem(trip, trackerId) {
    const item = element("li", "trips-trip");
    const button = element("button", "trips-trip-button");
    button.type = "button";
    button.title = "Replay this trip on the map";
    const when = element("span", "trips-when");
    when.textContent = `${formatClock(trip.start.timestamp)} – ${formatClock(trip.end.timestamp)}`;
    const what = element("span", "trips-what");
    what.textContent = `${formatDistance(trip.distanceMetres)} · ${formatSpan(trip.durationSeconds)}`;
    // The times and the distance share a line when it is wide enough; the times never break.
    const head = element("span", "trips-head");
    head.append(when, what);
    const speeds = element("span", "trips-speeds");
    const top = trip.topSpeed === null ? "" : ` · top ${Math.round(trip.topSpeed)} km/h`;
    speeds.textContent = `average ${Math.round(trip.averageSpeed)} km/h${top}`;
    const play = element("span", "trips-play");
    play.setAttribute("aria-hidden", "true");
    play.textContent = "▶";
    button.append(play, head, speeds);
    button.addEventListener("click", () => {
      window.dispatchEvent(
        new CustomEvent("tracker-replay", {
          detail: { trackerIds: [trackerId], since: trip.start.timestamp, until: trip.end.timestamp },
        }),
      );
    });
    item.append(button);
    return item;
  }

  /** @param {Stop} stop */
  #stopItem(stop) {
    const item = element("li", "trips-stop");
    const when = element("span", "trips-when");
    when.textContent = `${formatClock(stop.from)} – ${formatClock(stop.until)}`;
    const what = element("span", "trips-what");
    what.textContent = `Stopped ${formatSpan(stop.durationSeconds)}`;
    const place = element("button", "trips-place");
    place.type = "button";
    place.title = "Show this stop on the map";
    place.textContent = `${stop.latitude.toFixed(5)}, ${stop.longitude.toFixed(5)}`;
    place.addEventListener("click", () => this.#showPlace(stop.latitude, stop.longitude));
    item.append(when, what, place);
    return item;
  }
}

function element(tag, className = "") {
  const node = document.createElement(tag);
  if (className) node.className = className;
  return node;
}

function dayButton(text, label, onClick) {
  const button = element("button", "trips-day-button");
  button.type = "button";
  button.textContent = text;
  button.setAttribute("aria-label", label);
  button.title = label;
  button.addEventListener("click", onClick);
  return button;
}

/** Local midnight of the day of `ms`. */
export function startOfDay(ms) {
  const day = new Date(ms);
  return new Date(day.getFullYear(), day.getMonth(), day.getDate()).getTime();
}

/** The last millisecond of the local day starting at `midnight` (23 or 25 hours on a change of clocks). */
export function endOfDay(midnight) {
  const day = new Date(midnight);
  return new Date(day.getFullYear(), day.getMonth(), day.getDate() + 1).getTime() - 1;
}

/** "Today", "Yesterday" or "Sat 28 Nov". */
export function dayName(midnight, nowMs = Date.now()) {
  const today = startOfDay(nowMs);
  if (midnight === today) return "Today";
  if (midnight === startOfDay(today - DAY_MS / 2)) return "Yesterday";
  return new Date(midnight).toLocaleDateString([], { weekday: "short", day: "numeric", month: "short" });
}

/** "850 m", "6.6 km", "123 km". */
export function formatDistance(metres) {
  if (metres < 1000) return `${Math.round(metres)} m`;
  const km = metres / 1000;
  return `${km < 100 ? km.toFixed(1) : Math.round(km)} km`;
}

/** "45 s", "10 min", "1 h 5 min". */
export function formatSpan(seconds) {
  const whole = Math.max(0, Math.round(seconds));
  if (whole < 60) return `${whole} s`;
  const minutes = Math.round(whole / 60);
  if (minutes < 60) return `${minutes} min`;
  return minutes % 60 ? `${Math.floor(minutes / 60)} h ${minutes % 60} min` : `${minutes / 60} h`;
}

function plural(count, word) {
  return `${count} ${word}${count === 1 ? "" : "s"}`;
}
