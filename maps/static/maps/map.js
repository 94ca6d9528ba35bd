// The live tracker map: wires the map, the hub, the cell subscription, the
// tracker store and canvas layer, the details cache, the geofence layer, the
// trackers' fences, the crossing notices, the selected tracker, the replay and the page's controls.
// Each section uses only what the sections above it declared, callbacks
// included; the event handlers and timers start at the end, once all exist.

import { formatAge } from "./ages.js";
import { addLandOutline, addTiles } from "./basemap.js";
import { CellSubscription } from "./cells.js";
import { DetailsCache } from "./details.js";
import { FenceLayer, fenceToggle } from "./fences.js";
import { FrameLoop } from "./frames.js";
import { nearestLongitude, wrapLongitude } from "./geo.js";
import { cellKey, cellOf, cellsCovering, gridOf } from "./grid.js";
import { LiveHub, STATUS as CONNECTION } from "./hub.js";
import { FenceMemberships } from "./memberships.js";
import { NoticeBoard } from "./notices.js";
import { OverviewLayer, OverviewSubscription, overviewRequest } from "./overview.js";
import { Replay } from "./replay.js";
import { SelectedTracker } from "./selected.js";
import { Selection } from "./selection.js";
import { bindSelection } from "./selection-map.js";
import { trackerStatus } from "./status.js";
import { FLASH_MS, TrackerLayer } from "./tracker-layer.js";
import { TrackerList } from "./tracker-list.js";
import { TrackerStore } from "./trackers.js";
import { formatClock, formatSpeed, statusBadge, toggle, tooltip } from "./ui.js";
import { applySelection, bindViewHash, parseReplayHash, parseViewHash } from "./view-hash.js";

const L = window.L;

const CELLS_DEBOUNCE_MS = 250;
const HOVER_PIXELS = 10;
const STALENESS_EVERY_MS = 5000;
const DETAILS_MAX_AGE_MS = 30000;
const FRAME_MAX_GAP_MS = 250;
const TOOLTIP_EVERY_MS = 1000;
const VISITS_MAX_AGE_MS = 60000;
const TOOLTIP_MAX_FENCES = 5;

// Every URL and every shared rule comes from the server (maps/views.py).
const config = JSON.parse(document.getElementById("map-config").textContent);
const grid = gridOf(config.gridDegrees);
/** @type {{onlineSeconds: number, offlineSeconds: number, labels: Record<string, string>}} */
const statusRule = config.trackerStatus;

// --- Page controls -----------------------------------------------------------

const badge = statusBadge(document.getElementById("connection"));
const zoomHint = document.getElementById("zoom-hint");
const shell = document.getElementById("map-shell");
const tip = tooltip(document.getElementById("tracker-tooltip"), shell);

// --- Map ---------------------------------------------------------------------

const start = parseViewHash(window.location.hash) ?? {
  zoom: config.zoom,
  latitude: config.center.latitude,
  longitude: config.center.longitude,
  tracker: null,
  follow: false,
};
// Read now: the first writes of the hash (the selection's) would drop it.
const startReplay = parseReplayHash(window.location.hash);
const map = L.map("map", { preferCanvas: true, worldCopyJump: true, minZoom: 2, maxZoom: 19 });
map.setView([start.latitude, start.longitude], start.zoom);
addLandOutline(map, config.landUrls);
addTiles(map, {
  url: config.tileUrl,
  attribution: config.tileAttribution,
  onUnavailable: () => (shell.dataset.tiles = "unavailable"),
});

// --- Selection: the tracker the operator picked (list, marker or link) -------

const selection = new Selection();
const selected = new SelectedTracker({
  urlOf: (id) => config.trackerUrl.replace("{id}", encodeURIComponent(id)),
  positionsUrlOf: (id) => config.trackerPositionsUrl.replace("{id}", encodeURIComponent(id)),
  trailMinutes: config.trailMinutes,
});

// --- Trackers ----------------------------------------------------------------

const store = new TrackerStore();
const details = new DetailsCache({ url: config.trackersUrl });
const headingOf = (tracker) => tracker.heading ?? details.get(tracker.id)?.heading ?? null;
const layer = new TrackerLayer({ trackers: () => store.values(), headingOf, thresholds: statusRule }).addTo(map);

function nameOf(id) {
  return details.get(id)?.name || `Tracker ${id.slice(0, 8)}`;
}

// --- Replay: trackers' history played on the map, the live markers hidden meanwhile --

const replay = new Replay({
  map,
  root: document.getElementById("replay-bar"),
  panel: document.getElementById("tracker-details"),
  shell,
  selection,
  trackUrlOf: (id) => config.trackUrl.replace("{id}", encodeURIComponent(id)),
  // The export endpoint's URL, where the server has one (the links are left out without it).
  exportUrlOf: typeof config.exportUrl === "string" ? (id) => config.exportUrl.replace("{id}", encodeURIComponent(id)) : null,
  nameOf: (id) => {
    details.want([id]);
    return nameOf(id);
  },
  staleAgeMs: (statusRule.onlineSeconds + 1) * 1000,
});
layer.setReplay(() => (replay.active ? replay.markers() : null));
bindViewHash(map, wrapLongitude, selection, replay);

// --- Tracker list (tracker-list.js), on the shared selection (above) ----------

const trackerList = new TrackerList({
  panel: document.getElementById("side-panel"),
  url: config.trackersUrl,
  statusRule,
  selection,
  // The live map's position of a tracker is often newer than the list's; the selected
  // tracker's is kept fresh wherever it is (hub or API).
  live: (id) => {
    const onMap = store.get(id);
    const picked = id === selected.id ? selected.tracker : null;
    return picked && (!onMap || picked.timestamp > onMap.timestamp) ? picked : onMap;
  },
});
// The panel opening or closing (or the window) changes the map's size.
new ResizeObserver(() => map.invalidateSize()).observe(map.getContainer());
// --- Overview: past the cell limit, the trackers counted by area -------------

const overviewLayer = new OverviewLayer({ map });
const overviewSubscription = new OverviewSubscription({
  onError: (error) => {
    if (error) badge.setDetail(`Could not update the counts: ${error.message}`);
  },
});

/** Show the overview of `edges` (the view), or, with null, the markers again. */
function showOverview(edges) {
  toggle(zoomHint, edges !== null);
  if (edges === null) {
    overviewSubscription.want(null);
    overviewLayer.clear();
  } else {
    overviewSubscription.want(overviewRequest(edges, config.overview));
  }
}

// --- Geofences ---------------------------------------------------------------

const fences = new FenceLayer({ map, url: config.geofencesUrl });
fenceToggle(fences).addTo(map);
const memberships = new FenceMemberships({
  urlOf: (trackerId) => config.trackerVisitsUrl.replace("{id}", encodeURIComponent(trackerId)),
  onName: (fenceId, name) => fences.learnName(fenceId, name),
});

function fenceNameOf(id) {
  return fences.nameOf(id) ?? `geofence ${id}`;
}

const notices = new NoticeBoard(document.getElementById("notices"), (notice) => ({
  tracker: nameOf(notice.trackerId),
  fence: fenceNameOf(notice.fenceId),
}));
fences.addEventListener("loaded", () => notices.renamed());
details.addEventListener("loaded", () => notices.renamed());

/** The fences a tracker is in, for its tooltip: names, at most a few. */
function fencesRow(trackerId) {
  const { fences: ids, loaded } = memberships.of(trackerId);
  if (ids.length === 0) return loaded ? "none" : "…";
  const names = ids.map(fenceNameOf).sort((a, b) => a.localeCompare(b));
  const shown = names.slice(0, TOOLTIP_MAX_FENCES).join(", ");
  return names.length > TOOLTIP_MAX_FENCES ? `${shown} and ${names.length - TOOLTIP_MAX_FENCES} more` : shown;
}

// --- Tooltip -----------------------------------------------------------------

let hoveredId = null;
let pointer = null;

function refreshTooltip() {
  // The selected tracker's details are in its panel already; a replayed marker is not where the live one is.
  const tracker = !replay.active && hoveredId && hoveredId !== selection.id && store.get(hoveredId);
  if (!tracker || !pointer) {
    if (tip.visible) tip.hide();
    return;
  }
  const known = details.get(tracker.id);
  const now = Date.now();
  tip.show(pointer, nameOf(tracker.id), [
    ["Speed", formatSpeed(known?.speed ?? tracker.speed)],
    ["Updated", `${formatAge(tracker.timestamp, now)} · ${formatClock(tracker.timestamp)}`],
    ["Status", statusRule.labels[trackerStatus(tracker.timestamp, now, statusRule)]],
    ["Geofences", fencesRow(tracker.id)],
  ]);
}

function hoverAt(containerPoint) {
  pointer = containerPoint;
  const id = layer.nearest(containerPoint, HOVER_PIXELS);
  if (id !== hoveredId) {
    hoveredId = id;
    layer.setHovered(id);
    if (id) {
      details.refresh(id, DETAILS_MAX_AGE_MS);
      memberships.refresh(id, VISITS_MAX_AGE_MS);
    }
  }
  shell.classList.toggle("over-tracker", id !== null);
  refreshTooltip();
}

function endHover() {
  hoveredId = null;
  layer.setHovered(null);
  shell.classList.remove("over-tracker");
  tip.hide();
}

// --- Frames ------------------------------------------------------------------

/** One frame: apply the queued positions, redraw, refresh the count and tooltip. */
function drawFrame() {
  if (store.hasPending) {
    const added = store.applyPending();
    if (added.length) details.want(added);
  }
  const replaying = replay.frame();
  const animating = layer.redraw();
  badge.setCount(overviewLayer.total ?? layer.visibleCount());
  refreshTooltip();
  return animating || replaying;
}

const frames = new FrameLoop(drawFrame, { maxGapMs: FRAME_MAX_GAP_MS });
replay.addEventListener("redraw", () => frames.request());
replay.addEventListener("change", () => badge.setReplay(replay.active));
details.addEventListener("loaded", () => frames.request());
memberships.addEventListener("changed", (event) => {
  if (event.detail === hoveredId) refreshTooltip();
  notices.renamed();
});

// --- Hub messages ------------------------------------------------------------

function onLocationUpdated(trackerId, latitude, longitude, timestamp) {
  if (
    typeof trackerId !== "string" ||
    !Number.isFinite(latitude) ||
    !Number.isFinite(longitude) ||
    !Number.isFinite(timestamp) ||
    Math.abs(latitude) > 90 ||
    Math.abs(longitude) > 180
  ) {
    return;
  }
  store.enqueue({ id: trackerId, latitude, longitude, timestamp });
  selected.heard(trackerId, latitude, longitude, timestamp);
  frames.request();
}

/** Whether a tracker is on the map and inside the view (a hub message may hold its position still queued). */
function inView(trackerId) {
  const where = store.position(trackerId);
  if (!where) return false;
  const bounds = map.getBounds();
  return bounds.contains([where.latitude, nearestLongitude(where.longitude, bounds.getCenter().lng)]);
}

function onGeofence(trackerId, geofenceId, entered) {
  if (typeof trackerId !== "string" || (typeof geofenceId !== "string" && !Number.isInteger(geofenceId))) return;
  const fenceId = String(geofenceId);
  memberships.crossed(trackerId, fenceId, entered);
  if (!inView(trackerId)) return;
  store.flash(trackerId, FLASH_MS);
  notices.add({ trackerId, fenceId, entered, at: Date.now() });
  // A fence not drawn here (its layer off, or not fetched yet): its name comes with the tracker's visits.
  if (fences.nameOf(fenceId) === null) memberships.refresh(trackerId, 0);
  frames.request();
}

/** Counts of another level than the one asked for (or after leaving the overview) are out of date. */
function onOverviewUpdated(overview) {
  if (overviewSubscription.level === null || overview?.areaDegrees !== overviewSubscription.level) return;
  overviewLayer.update(overview);
  frames.request();
}

function onGeofencesChanged(geofenceIds) {
  if (!Array.isArray(geofenceIds)) return;
  fences.refresh();
}

// --- Cells -------------------------------------------------------------------

/** Drop the trackers outside the cells we keep (keys from cellKey): the server no longer tells us about them. */
function pruneTo(keptKeys) {
  const removed = store.retain((tracker) => keptKeys.has(cellKey(cellOf(grid, tracker.latitude, tracker.longitude))));
  if (removed) frames.request();
}

const subscription = new CellSubscription({
  onChange: ({ kept, error }) => {
    if (error) {
      badge.setDetail(`Could not update the map area: ${error.message}`);
    } else {
      // An answer came, so the connection is live: a detail left from an earlier failure is out of date.
      badge.setDetail("");
      pruneTo(kept);
    }
  },
});

function updateCells() {
  const bounds = map.getBounds();
  const edges = { west: bounds.getWest(), south: bounds.getSouth(), east: bounds.getEast(), north: bounds.getNorth() };
  const cells = cellsCovering(grid, edges, config.maxCells);
  showOverview(cells === null ? edges : null);
  subscription.want(cells ?? []);
}

// --- Hub ---------------------------------------------------------------------

let hubWasLive = false;

const hub = new LiveHub({
  url: config.hubUrl,
  handlers: {
    locationUpdated: onLocationUpdated,
    geofenceEntered: (trackerId, geofenceId) => onGeofence(trackerId, geofenceId, true),
    geofenceExited: (trackerId, geofenceId) => onGeofence(trackerId, geofenceId, false),
    geofencesChanged: onGeofencesChanged,
    overviewUpdated: (overview) => onOverviewUpdated(overview),
  },
  onStatus: (status, detail) => {
    badge.setState(status, detail);
    if (status !== CONNECTION.live) {
      subscription.disconnected();
      overviewSubscription.disconnected();
    }
  },
  onConnected: (connection) => {
    subscription.connected((newCells, previousCells) =>
      connection.invoke("updateMapGridGroups", newCells, previousCells),
    );
    overviewSubscription.connected((level, view) => connection.invoke("updateOverview", level, view));
    // Whatever changed while the hub was away was not said: read it again.
    if (hubWasLive) {
      fences.refresh();
      memberships.missedSome();
    }
    hubWasLive = true;
  },
});

// --- Selection on the map: click, details panel, trail, fly-to, follow -------

const selectionHooks = bindSelection({
  map,
  layer,
  selection,
  selected,
  panelRoot: document.getElementById("tracker-details"),
  statusRule,
  memberships,
  fencesOf: fencesRow,
  fenceNameOf,
  nameOf,
  positionOf: (id) => store.position(id),
  isWatched: (latitude, longitude) =>
    hub.status === CONNECTION.live && subscription.keptKeys().has(cellKey(cellOf(grid, latitude, longitude))),
  cells: { grid, maxCells: config.maxCells },
  redraw: () => frames.request(),
  replay,
  tripsUrl: config.tripsUrl,
});

// --- Events and timers: everything they call exists now -----------------------

let cellsTimer = null;
map.on("moveend zoomend", () => {
  clearTimeout(cellsTimer);
  cellsTimer = setTimeout(updateCells, CELLS_DEBOUNCE_MS);
  frames.request();
});
map.on("mousemove click", (event) => hoverAt(event.containerPoint));
map.on("mouseout movestart zoomstart", endHover);

// Status changes with time alone: re-evaluate every few seconds.
setInterval(() => {
  if (document.hidden) return;
  pruneTo(subscription.keptKeys());
  details.want(Array.from(store.values(), (tracker) => tracker.id));
  frames.request();
}, STALENESS_EVERY_MS);

// The tooltip's age moves on every second.
setInterval(() => {
  if (tip.visible) refreshTooltip();
}, TOOLTIP_EVERY_MS);

updateCells();
fences.refresh();
hub.start();
trackerList.start();
applySelection(selection, start);
if (startReplay) replay.applyHash(startReplay);

// --- Test hooks (read-only) --------------------------------------------------

window.trackerMap = Object.freeze({
  map,
  trackers: () =>
    Array.from(store.values(), (tracker) => ({
      id: tracker.id,
      latitude: tracker.latitude,
      longitude: tracker.longitude,
      timestamp: tracker.timestamp,
      heading: headingOf(tracker),
    })),
  cells: () => subscription.confirmed,
  status: () => hub.status,
  fences: () => fences.drawn(),
  selected: () => selection.id,
  list: () => trackerList.state(),
  overview: () => ({ level: overviewSubscription.level, total: overviewLayer.total, areas: overviewLayer.drawn() }),
  /** The ids of the markers drawn (the replayed ones while a replay is open). */
  drawn: () => layer.drawnIds(),
  replay: () => replay.state(),
  ...selectionHooks,
});
