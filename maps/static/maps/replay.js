// Replay: one or more trackers' history played on the map. Each replayed
// tracker's track comes from GET /api/trackers/{id}/track (thinned by the
// server to what the zoom can show); the replay clock (replay-clock.js) moves
// at the chosen speed with every frame the page draws, each marker stands
// where its tracker was at that instant (interpolated in time between the kept
// positions around it) and its trail is drawn up to there. While a replay is
// open the live markers are hidden (the hub's updates are still kept, so the
// live map is current the moment it closes) and the bar says so. The URL holds
// the replay (view-hash.js); the trips panel asks for one with the window
// event "tracker-replay" {trackerIds, since, until}.

import { nearestLongitude } from "./geo.js";
import { getJson } from "./selected.js";
import { ReplayBar } from "./replay-bar.js";
import {
  MAX_REPLAY_TRACKERS,
  ReplayClock,
  TRAIL_COLOURS,
  formatReplayClock,
  isReplayRange,
  presetRange,
  readTrackAnswer,
} from "./replay-clock.js";

const L = window.L;

/** While playing, the URL is brought up to date this often at most. */
const HASH_EVERY_MS = 1000;
/** The track is read again, finer, once the map is zoomed in this many levels past the zoom it was read for. */
const REFETCH_ZOOM_STEPS = 2;
const READ_TIMEOUT_MS = 30000;
/** Margin around the tracks when the map is fitted to them, in CSS pixels. */
const REVEAL_MARGIN = 36;
/** A replay opened on a short track does not zoom in further than this. */
const REVEAL_MAX_ZOOM = 17;
/** How long before a replay's first position its range may start with nothing said about it. */
const FIRST_POSITION_HINT_MS = 5 * 60_000;
const EXPORT_FORMATS = [
  ["CSV", "csv"],
  ["GeoJSON", "geojson"],
  ["GPX", "gpx"],
];
const TRACKER_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** One replayed tracker: its track as read, where it is at the replay's time, and its trail. */
class Replayed {
  /** @type {import("./replay-clock.js").ReplayTrack|null} */
  track = null;
  stored = 0;
  thinned = false;
  /** The zoom the track was read for (-Infinity before the first answer). */
  zoom = -Infinity;
  /** The read under way (an object compared by identity), or null. */
  reading = null;
  error = "";
  /** @type {import("./replay-clock.js").TrackPlace|null} */
  place = null;

  constructor(id, colour, trail) {
    this.id = id;
    this.colour = colour;
    this.trail = trail;
  }
}

/**
 * Dispatches "change" when the replay opens, closes, changes trackers, range, speed or playing, is
 * scrubbed, and now and then while it plays (what the URL and the details panel's button show), and
 * "redraw" when the map needs a frame (the page's frame loop then calls `frame()`).
 */
export class Replay extends EventTarget {
  /** Whether a replay is open. */
  active = false;
  /** @type {ReplayClock|null} */
  clock = null;

  /** @type {Map<string, Replayed>} in the order they joined */
  #replayed = new Map();
  #map;
  #bar;
  #shell;
  #selection;
  #trackUrlOf;
  #exportUrlOf;
  #nameOf;
  #staleAgeMs;
  #renderer;
  #lastFrameAt = null;
  #lastHashAt = 0;
  #note = "";
  /** Said when the replay went to its first position, long after the range's start ("" when not). */
  #hint = "";
  /** Whether the replay is to start at the first position in the range once the tracks are read (opened with no `at`). */
  #toFirst = false;
  /** Whether the map is to be fitted to the tracks once they are read (a replay opened here, not by a link). */
  #revealWanted = false;
  #panel;

  /**
   * @param {object} parts
   * @param {any} parts.map  the Leaflet map
   * @param {HTMLElement} parts.root  <section id="replay-bar">
   * @param {HTMLElement} parts.panel  the details panel, kept clear of when the map is fitted to the tracks
   * @param {HTMLElement} parts.shell  the map's shell (data-replay="on" while open: the live layers hide)
   * @param {import("./selection.js").Selection} parts.selection
   * @param {(id: string) => string} parts.trackUrlOf  GET /api/trackers/{id}/track
   * @param {((id: string) => string)|null} parts.exportUrlOf  GET /api/trackers/{id}/export (null: no links)
   * @param {(id: string) => string} parts.nameOf
   * @param {number} parts.staleAgeMs  an age at which a marker is drawn stale (faded): a waiting tracker's look
   */
  constructor({ map, root, panel, shell, selection, trackUrlOf, exportUrlOf, nameOf, staleAgeMs }) {
    super();
    this.#panel = panel;
    this.#map = map;
    this.#shell = shell;
    this.#selection = selection;
    this.#trackUrlOf = trackUrlOf;
    this.#exportUrlOf = exportUrlOf;
    this.#nameOf = nameOf;
    this.#staleAgeMs = staleAgeMs;
    const pane = map.createPane("replay");
    pane.style.zIndex = "445"; // over the live trail's pane (440), under the markers (610)
    pane.style.pointerEvents = "none";
    this.#renderer = L.svg({ pane: "replay", padding: 0.5 });
    this.#bar = new ReplayBar(root, {
      onToggle: () => this.toggle(),
      onSeek: (ms) => this.seek(ms),
      onSpeed: (speed) => this.setSpeed(speed),
      onRange: (since, until) => this.setRange(since, until),
      onPreset: (name) => {
        const { since, until } = presetRange(name);
        this.setRange(since, until, { toFirst: true });
      },
      onRemove: (id) => this.remove(id),
      onClose: () => this.close(),
    });
    map.on("zoomend", () => this.#readFinerIfZoomed());
    map.on("moveend", () => this.#drawTrails(true));
    window.addEventListener("tracker-replay", (event) => this.#asked(event));
  }

  /** The ids replayed, in the order they joined. */
  get trackerIds() {
    return Array.from(this.#replayed.keys());
  }

  /** What the details panel's Replay button does for tracker `id`. */
  buttonFor(id) {
    if (!this.active) return "start";
    if (this.#replayed.has(id)) return "in";
    return this.#replayed.size >= MAX_REPLAY_TRACKERS ? "full" : "add";
  }

  /** The details panel's Replay button: a replay of the last hour, or the tracker added to the open one. */
  replayOrAdd(id) {
    if (this.active) this.add(id);
    else this.open({ trackerIds: [id], ...presetRange("hour"), reveal: true });
  }

  /**
   * Open a replay (in place of any open one), paused at `at` unless `play`; with `reveal`, the map is
   * fitted to the tracks once they are read (a link keeps the view it has). With no `at`, it starts at
   * the first position in the range once the tracks are read (not minutes of nothing before it).
   * @param {{trackerIds: string[], since: number, until: number, at?: number, speed?: number, play?: boolean,
   *   reveal?: boolean}} what
   * @returns {boolean} false (and nothing changes) when it is not a replay that can be played
   */
  open({ trackerIds, since, until, at, speed = this.clock?.speed ?? 1, play = false, reveal = false }) {
    const ids = [...new Set(trackerIds)].filter((id) => TRACKER_ID.test(id)).slice(0, MAX_REPLAY_TRACKERS);
    if (ids.length === 0 || !isReplayRange(since, until)) return false;
    for (const replayed of this.#replayed.values()) replayed.trail.remove();
    this.#replayed.clear();
    this.clock = new ReplayClock({ since, until, at: at ?? since, speed });
    this.active = true;
    this.#shell.dataset.replay = "on";
    this.#note = "";
    this.#hint = "";
    this.#toFirst = at === undefined;
    this.#revealWanted = reveal;
    for (const id of ids) this.#join(id);
    if (play) this.play();
    this.dispatchEvent(new Event("open"));
    this.#changed();
    return true;
  }

  /** Add a tracker to the open replay. */
  add(id) {
    if (!this.active || this.#replayed.has(id) || this.#replayed.size >= MAX_REPLAY_TRACKERS) return;
    this.#join(id);
    this.#changed();
  }

  /** Take a tracker out of the replay (the last one closes it). */
  remove(id) {
    const replayed = this.#replayed.get(id);
    if (!replayed) return;
    if (this.#replayed.size === 1) {
      this.close();
      return;
    }
    replayed.trail.remove();
    this.#replayed.delete(id);
    this.#changed();
  }

  /** Close the replay: the live map again, as current as the hub has kept it. */
  close() {
    if (!this.active) return;
    for (const replayed of this.#replayed.values()) replayed.trail.remove();
    this.#replayed.clear();
    this.active = false;
    this.clock = null;
    this.#lastFrameAt = null;
    delete this.#shell.dataset.replay;
    this.#bar.hide();
    this.#changed();
  }

  toggle() {
    if (this.clock?.playing) this.pause();
    else this.play();
  }

  play() {
    if (!this.clock) return;
    this.clock.play();
    this.#lastFrameAt = null;
    this.#changed();
  }

  pause() {
    if (!this.clock) return;
    this.clock.pause();
    this.#changed();
  }

  /** Jump to `ms`: every marker and trail at once. */
  seek(ms) {
    if (!this.clock) return;
    this.clock.seek(ms);
    this.#changed();
  }

  setSpeed(speed) {
    if (!this.clock) return;
    this.clock.setSpeed(speed);
    this.#changed();
  }

  /** Another range (paused): the tracks are read again; with `toFirst` (a preset), from its first position. */
  setRange(since, until, { toFirst = false } = {}) {
    if (!this.clock) return;
    if (!isReplayRange(since, until)) {
      this.#note = "The range must start before it ends and last at most 7 days.";
      this.#redraw();
      this.#showBar();
      return;
    }
    this.#note = "";
    this.#hint = "";
    this.clock.setRange(since, until);
    this.#toFirst = toFirst;
    if (toFirst) this.clock.seek(since);
    for (const replayed of this.#replayed.values()) this.#read(replayed);
    this.#changed();
  }

  /**
   * One frame (the map's frame loop calls it before drawing the markers): the clock moves on by the
   * wall-clock time since the last frame, times the speed. Whether another frame is wanted (playing).
   */
  frame(nowFrame = performance.now()) {
    const clock = this.clock;
    if (!this.active || !clock) return false;
    const wasPlaying = clock.playing;
    if (wasPlaying) {
      clock.advance(this.#lastFrameAt === null ? 0 : nowFrame - this.#lastFrameAt);
      this.#lastFrameAt = clock.playing ? nowFrame : null;
    }
    for (const replayed of this.#replayed.values()) replayed.place = replayed.track?.at(clock.at) ?? null;
    this.#drawTrails(false);
    this.#showBar();
    if (wasPlaying && !clock.playing) {
      this.#changed(); // the end: paused there
    } else if (clock.playing && Date.now() - this.#lastHashAt >= HASH_EVERY_MS) {
      this.#lastHashAt = Date.now();
      this.dispatchEvent(new CustomEvent("change"));
    }
    return clock.playing;
  }

  /** For the marker layer: each replayed tracker where it is at the replay's time, and the selected one. */
  markers() {
    const now = Date.now();
    const trackers = [];
    let selected = null;
    for (const replayed of this.#replayed.values()) {
      const place = replayed.place;
      if (!place) continue;
      const marker = {
        id: replayed.id,
        latitude: place.latitude,
        longitude: place.longitude,
        // Its look: an online tracker's, faded as a stale one's while it waits in a gap of the data.
        timestamp: place.waiting ? now - this.#staleAgeMs : now,
        orderedAt: now,
        heading: place.heading,
        speed: null,
        flashUntil: 0,
        ring: replayed.colour,
      };
      trackers.push(marker);
      if (replayed.id === this.#selection.id) selected = marker;
    }
    return { trackers, selected };
  }

  /** @returns {import("./view-hash.js").ReplayHash|null} */
  hashState() {
    if (!this.active || !this.clock) return null;
    const { since, until, at, speed } = this.clock;
    return { trackers: this.trackerIds, since, until, at: Math.round(at), speed };
  }

  /** Open (paused) what an edited URL holds, or close when it holds no replay. */
  applyHash(replay) {
    if (replay === null) {
      this.close();
      return;
    }
    const current = this.hashState();
    if (current && JSON.stringify(current) === JSON.stringify(replay)) return; // our own write
    if (
      current &&
      current.since === replay.since &&
      current.until === replay.until &&
      current.trackers.join() === replay.trackers.join()
    ) {
      this.clock?.pause();
      this.clock?.setSpeed(replay.speed);
      this.seek(replay.at);
      return;
    }
    const { trackers: trackerIds, since, until, at, speed } = replay;
    this.open({ trackerIds, since, until, at, speed, play: false });
  }

  /** The replay as the page has it (a test hook). */
  state() {
    const clock = this.clock;
    return {
      active: this.active,
      playing: clock?.playing ?? false,
      since: clock?.since ?? null,
      until: clock?.until ?? null,
      at: clock?.at ?? null,
      speed: clock?.speed ?? null,
      lastStep: clock ? { ...clock.lastStep } : null,
      trackers: Array.from(this.#replayed.values(), (replayed) => ({
        id: replayed.id,
        colour: replayed.colour,
        loaded: replayed.track !== null && replayed.reading === null,
        points: replayed.track?.length ?? 0,
        stored: replayed.stored,
        thinned: replayed.thinned,
        zoom: replayed.zoom,
        place: replayed.place && {
          latitude: replayed.place.latitude,
          longitude: replayed.place.longitude,
          waiting: replayed.place.waiting,
          heading: replayed.place.heading,
        },
        trail: replayed.trail.drawn(),
      })),
    };
  }

  #join(id) {
    const used = new Set(Array.from(this.#replayed.values(), (replayed) => replayed.colour));
    const colour = TRAIL_COLOURS.find((candidate) => !used.has(candidate)) ?? TRAIL_COLOURS[0];
    const replayed = new Replayed(id, colour, new ReplayTrail(this.#map, this.#renderer, colour));
    this.#replayed.set(id, replayed);
    this.#read(replayed);
  }

  /** Read (again) a tracker's track for the range, thinned for the map's zoom. */
  async #read(replayed) {
    const clock = this.clock;
    if (!clock) return;
    const reading = {};
    replayed.reading = reading;
    replayed.error = "";
    const zoom = Math.round(this.#map.getZoom());
    const query = new URLSearchParams({ since: String(clock.since), until: String(clock.until), zoom: String(zoom) });
    const answer = await getJson(`${this.#trackUrlOf(replayed.id)}?${query}`, READ_TIMEOUT_MS);
    if (replayed.reading !== reading || this.#replayed.get(replayed.id) !== replayed) return; // outdated
    replayed.reading = null;
    const read = answer.body && readTrackAnswer(answer.body);
    if (!read) {
      replayed.error =
        answer.status === 404
          ? "no such active tracker"
          : `could not be read (${answer.error ?? `HTTP ${answer.status}`})`;
      this.#redraw();
      return;
    }
    replayed.track = read.track;
    replayed.stored = read.stored;
    replayed.thinned = read.thinned;
    replayed.zoom = zoom;
    replayed.trail.reset();
    if (this.#toFirst && Array.from(this.#replayed.values()).every((each) => each.reading === null)) {
      this.#toFirst = false;
      this.#startAtFirstPosition();
    }
    if (this.#revealWanted && Array.from(this.#replayed.values()).every((each) => each.reading === null)) {
      this.#revealWanted = false;
      this.#reveal();
    }
    this.#redraw();
  }

  /** To the first position in the range (when it is ahead); the bar says so when the range starts long before it. */
  #startAtFirstPosition() {
    const clock = this.clock;
    if (!clock) return;
    let first = Infinity;
    for (const { track } of this.#replayed.values()) {
      const point = track?.points.find((each) => each.timestamp >= clock.since && each.timestamp <= clock.until);
      if (point) first = Math.min(first, point.timestamp);
    }
    if (!Number.isFinite(first) || first <= clock.at) return;
    clock.seek(first);
    if (first - clock.since >= FIRST_POSITION_HINT_MS) {
      const minutes = Math.round((first - clock.since) / 60_000);
      this.#hint = `Started at the first position, ${formatReplayClock(first)}: nothing in the range's first ${minutes.toLocaleString()} min.`;
    }
    this.#changed();
  }

  /** Fit the map to the tracks, in the part of it that the bar and the details panel leave in sight. */
  #reveal() {
    const latLngs = [];
    for (const { track } of this.#replayed.values()) {
      for (const point of track?.points ?? []) latLngs.push([point.latitude, point.longitude]);
    }
    if (latLngs.length === 0) return;
    const box = this.#map.getContainer().getBoundingClientRect();
    const bar = this.#bar.box();
    let right = 0;
    if (!this.#panel.hidden) {
      const panel = this.#panel.getBoundingClientRect();
      // A panel at the right of the map covers its side; a phone's sheet is below the bar already.
      if (panel.left > box.left + box.width / 2) right = Math.max(0, box.right - panel.left);
    }
    const bottom = bar ? Math.max(0, box.bottom - bar.top) : 0;
    this.#map.fitBounds(L.latLngBounds(latLngs), {
      paddingTopLeft: [REVEAL_MARGIN, REVEAL_MARGIN + 40],
      paddingBottomRight: [right + REVEAL_MARGIN, bottom + REVEAL_MARGIN],
      maxZoom: Math.max(REVEAL_MAX_ZOOM, this.#map.getZoom()),
    });
  }

  #readFinerIfZoomed() {
    if (!this.active) return;
    const zoom = this.#map.getZoom();
    for (const replayed of this.#replayed.values()) {
      if (replayed.reading === null && zoom >= replayed.zoom + REFETCH_ZOOM_STEPS) this.#read(replayed);
    }
  }

  #drawTrails(moved) {
    if (!this.active || !this.clock) return;
    const centreLng = this.#map.getCenter().lng;
    for (const replayed of this.#replayed.values()) {
      if (moved) replayed.trail.reset();
      replayed.trail.draw(replayed.track, replayed.place, centreLng);
    }
  }

  #showBar() {
    const clock = this.clock;
    if (!clock) return;
    const replayedNow = Array.from(this.#replayed.values());
    const empty = (replayed) => replayed.track !== null && (replayed.stored === 0 || replayed.track.length === 0);
    const trackers = replayedNow.map((replayed) => ({
      id: replayed.id,
      name: this.#nameOf(replayed.id),
      colour: replayed.colour,
      note: noteOf(replayed),
      // Nothing to download from a range it has no positions in.
      exports: empty(replayed) ? [] : this.#exportsOf(replayed.id, clock),
    }));
    this.#bar.show({
      playing: clock.playing,
      since: clock.since,
      until: clock.until,
      at: clock.at,
      speed: clock.speed,
      clock: formatReplayClock(clock.at),
      trackers,
      note: this.#note,
      hint: this.#hint,
      // Nothing to play while every track read is empty (one still being read may have some).
      playable: !replayedNow.every(empty),
    });
  }

  #exportsOf(id, { since, until }) {
    if (!this.#exportUrlOf) return [];
    const url = this.#exportUrlOf(id);
    return EXPORT_FORMATS.map(([label, format]) => ({
      label,
      href: `${url}?${new URLSearchParams({ format, since: String(since), until: String(until) })}`,
    }));
  }

  /** The trips panel's "play this trip". */
  #asked(event) {
    const detail = event instanceof CustomEvent ? event.detail : null;
    const ids = Array.isArray(detail?.trackerIds) ? detail.trackerIds.filter((id) => typeof id === "string") : [];
    const opened = this.open({
      trackerIds: ids.map((id) => id.toLowerCase()),
      since: Math.round(detail?.since),
      until: Math.round(detail?.until),
      play: true,
      reveal: true,
    });
    if (!opened) console.warn("A replay was asked for with no tracker or no range that can be replayed; ignored.");
  }

  #redraw() {
    this.dispatchEvent(new Event("redraw"));
  }

  #changed() {
    this.#lastHashAt = Date.now();
    this.#showBar();
    this.#redraw();
    this.dispatchEvent(new CustomEvent("change"));
  }
}

/** "Reading…", "thinned: 1,200 of 86,400 positions", "412 positions", "no positions in this range". */
function noteOf(replayed) {
  if (replayed.error) return replayed.error;
  if (replayed.track === null) return "Reading…";
  if (replayed.stored === 0 || replayed.track.length === 0) return "no positions in this range";
  if (replayed.thinned) {
    return `thinned: ${replayed.track.length.toLocaleString()} of ${replayed.stored.toLocaleString()} positions`;
  }
  return `${replayed.stored.toLocaleString()} ${replayed.stored === 1 ? "position" : "positions"}`;
}

/**
 * A replayed tracker's trail: its kept positions up to the replay's time and the step to where it is
 * now, as one line in its colour (cased in white), drawn near the view's copy of the world.
 */
class ReplayTrail {
  #map;
  #casing;
  #line;
  #group;
  /** @type {number[][]} the [lat, lng] drawn, the last one where the tracker is now */
  #latLngs = [];
  /** How many kept positions #latLngs holds before the moving end (-1: nothing drawn). */
  #kept = -1;
  #shift = 0;

  constructor(map, renderer, colour) {
    this.#map = map;
    const common = { renderer, pane: "replay", interactive: false, lineCap: "round", lineJoin: "round" };
    this.#casing = L.polyline([], { ...common, color: "#ffffff", weight: 7, opacity: 0.8 });
    this.#line = L.polyline([], { ...common, color: colour, weight: 4, opacity: 0.95 });
    this.#group = L.layerGroup([this.#casing, this.#line]).addTo(map);
  }

  /** Forget what is drawn (a new track, or the view moved round the world): the next draw starts over. */
  reset() {
    this.#kept = -1;
  }

  /**
   * @param {import("./replay-clock.js").ReplayTrack|null} track
   * @param {import("./replay-clock.js").TrackPlace|null} place  where the tracker is at the replay's time
   * @param {number} centreLng  the view's centre
   */
  draw(track, place, centreLng) {
    if (!track || !place || place.index < 0) {
      if (this.#kept !== 0) this.#set([]);
      this.#latLngs = [];
      this.#kept = 0;
      return;
    }
    const shift = nearestLongitude(place.unwrapped, centreLng) - place.unwrapped;
    const points = track.points;
    const here = [place.latitude, place.unwrapped + shift];
    const end = this.#latLngs.at(-1);
    if (this.#kept === place.index + 1 && shift === this.#shift && end && end[0] === here[0] && end[1] === here[1]) {
      return; // nothing moved (paused, another part of the page asked for the frame)
    }
    if (this.#kept < 0 || shift !== this.#shift || place.index + 1 < this.#kept) {
      this.#latLngs = points.slice(0, place.index + 1).map((point) => [point.latitude, point.longitude + shift]);
    } else {
      this.#latLngs.pop(); // the moving end
      for (let i = this.#kept; i <= place.index; i += 1) this.#latLngs.push([points[i].latitude, points[i].longitude + shift]);
    }
    this.#kept = place.index + 1;
    this.#shift = shift;
    this.#latLngs.push(here);
    this.#set(this.#latLngs);
  }

  remove() {
    this.#group.remove();
  }

  /** The points drawn, [latitude, longitude] (for tests). */
  drawn() {
    return this.#line.getLatLngs().map((point) => [point.lat, point.lng]);
  }

  #set(latLngs) {
    this.#casing.setLatLngs(latLngs);
    this.#line.setLatLngs(latLngs);
  }
}
