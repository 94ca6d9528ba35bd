// The map view and the selected tracker in the URL hash, so a link opens the same picture:
//
//   #zoom/latitude/longitude                       the view (links made before selection still work)
//   #zoom/latitude/longitude/t=<tracker id>        the view, that tracker selected (details and trail shown)
//   #zoom/latitude/longitude/t=<tracker id>/follow  ... and the map following it
//   #.../t=<id>/replay=<sinceMs>-<untilMs>@<atMs>x<speed>   a replay of that tracker, paused at `at`
//   #.../replay=<sinceMs>-<untilMs>@<atMs>x<speed>,<id>,<id>  a replay of the trackers listed
//
// The tracker id is the device's UUID, lower case. Parts this page does not know are
// ignored, so a later page can add its own without breaking these links here; a replay
// part that does not hold a replayable range is ignored the same way.

import { MAX_REPLAY_TRACKERS, SPEEDS, isReplayRange } from "./replay-clock.js";

const TRACKER_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/**
 * @typedef {object} MapHash
 * @property {number} zoom
 * @property {number} latitude
 * @property {number} longitude
 * @property {string|null} tracker   the selected tracker's id
 * @property {boolean} follow        whether the map follows it (never without a tracker)
 */

/** Parse "#13/60.1699/24.9384" (and the forms above); null when the hash holds no valid view. */
export function parseViewHash(hash) {
  const parts = hash.replace(/^#/, "").split("/");
  if (parts.length < 3 || parts.slice(0, 3).some((part) => part.trim() === "")) return null;
  const [zoom, latitude, longitude] = parts.slice(0, 3).map(Number);
  if (![zoom, latitude, longitude].every(Number.isFinite)) return null;
  if (zoom < 0 || zoom > 30 || Math.abs(latitude) > 90 || Math.abs(longitude) > 180) return null;
  let tracker = null;
  let follow = false;
  for (const part of parts.slice(3)) {
    if (part.startsWith("t=")) {
      const id = safeDecode(part.slice(2)).toLowerCase();
      if (TRACKER_ID.test(id)) tracker = id;
    } else if (part === "follow") {
      follow = true;
    }
  }
  return { zoom: Math.round(zoom), latitude, longitude, tracker, follow: follow && tracker !== null };
}

/**
 * @typedef {object} ReplayHash
 * @property {string[]} trackers  the replayed trackers' ids, at least one
 * @property {number} since   Unix ms
 * @property {number} until
 * @property {number} at      where the replay stands, in [since, until]
 * @property {number} speed   one of SPEEDS
 */

const REPLAY_PART = /^replay=(\d{1,16})-(\d{1,16})@(\d{1,16})x(\d{1,3})((?:,[^,/]*)*)$/;

/** The replay a hash holds (see the top of this file), null when none or not a replayable one. @returns {ReplayHash|null} */
export function parseReplayHash(hash) {
  const parts = hash.replace(/^#/, "").split("/");
  let selected = null;
  let found = null;
  for (const part of parts) {
    if (part.startsWith("t=")) {
      const id = safeDecode(part.slice(2)).toLowerCase();
      if (TRACKER_ID.test(id)) selected = id;
    } else if (part.startsWith("replay=")) {
      found = REPLAY_PART.exec(part);
    }
  }
  if (!found) return null;
  const [since, until, at, speed] = found.slice(1, 5).map(Number);
  if (!isReplayRange(since, until) || !SPEEDS.includes(speed)) return null;
  const listed = found[5]
    .split(",")
    .slice(1)
    .map((id) => safeDecode(id).toLowerCase())
    .filter((id) => TRACKER_ID.test(id));
  const trackers = [...new Set(listed.length ? listed : selected ? [selected] : [])].slice(0, MAX_REPLAY_TRACKERS);
  if (trackers.length === 0) return null;
  return { trackers, since, until, at: Math.min(until, Math.max(since, at)), speed };
}

/**
 * "#zoom/lat/lng[/t=id[/follow]][/replay=...]" with as many decimals as the zoom level makes meaningful.
 * The replay lists its trackers unless it replays the selected one alone.
 * @param {{zoom: number, latitude: number, longitude: number, tracker?: string|null, follow?: boolean,
 *   replay?: ReplayHash|null}} view
 */
export function formatViewHash({ zoom, latitude, longitude, tracker = null, follow = false, replay = null }) {
  const digits = Math.max(2, Math.ceil((zoom * Math.LN2) / Math.LN10));
  let hash = `#${Math.round(zoom)}/${latitude.toFixed(digits)}/${longitude.toFixed(digits)}`;
  if (tracker) hash += `/t=${tracker}${follow ? "/follow" : ""}`;
  if (replay && replay.trackers.length > 0) {
    const at = Math.round(replay.at);
    hash += `/replay=${replay.since}-${replay.until}@${at}x${replay.speed}`;
    if (!(replay.trackers.length === 1 && replay.trackers[0] === tracker)) hash += `,${replay.trackers.join(",")}`;
  }
  return hash;
}

function safeDecode(text) {
  try {
    return decodeURIComponent(text);
  } catch {
    return "";
  }
}

/**
 * What the URL needs of the replay: its state (null when closed), a "change" event
 * when that changes, and a way to open what an edited hash holds.
 * @typedef {EventTarget & {hashState: () => ReplayHash|null, applyHash: (replay: ReplayHash|null) => void}} ReplayBinding
 */

/**
 * Keep the URL hash in step with the map, the selection and the replay (replaceState: no
 * history entry per pan or pick), and follow edits to it.
 * @param {any} map  the Leaflet map
 * @param {(longitude: number) => number} wrapLongitude
 * @param {import("./selection.js").Selection} [selection]
 * @param {ReplayBinding} [replay]
 */
export function bindViewHash(map, wrapLongitude, selection, replay) {
  const write = () => {
    const center = map.getCenter();
    const hash = formatViewHash({
      zoom: map.getZoom(),
      latitude: center.lat,
      longitude: wrapLongitude(center.lng),
      tracker: selection?.id ?? null,
      follow: selection?.following ?? false,
      replay: replay?.hashState() ?? null,
    });
    if (hash !== window.location.hash) window.history.replaceState(null, "", hash);
  };
  map.on("moveend", write);
  selection?.addEventListener("change", write);
  replay?.addEventListener("change", write);
  window.addEventListener("hashchange", () => {
    const view = parseViewHash(window.location.hash);
    if (!view) return;
    const replayed = parseReplayHash(window.location.hash); // before the writes below replace the hash
    map.setView([view.latitude, view.longitude], view.zoom);
    if (selection) applySelection(selection, view);
    replay?.applyHash(replayed);
  });
}

/** Select what a hash names, in the view the hash has, and follow it if it says so. */
export function applySelection(selection, { tracker, follow }) {
  if (tracker === null) {
    selection.clear();
    return;
  }
  selection.select(tracker, { source: "url" });
  selection.follow(follow);
}
