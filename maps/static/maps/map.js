// The live tracker map: wires the map, the hub, the cell subscription, the
// tracker store and canvas layer, the details cache and the page's controls.

import { formatAge } from "./ages.js";
import { addLandOutline, addTiles } from "./basemap.js";
import { CellSubscription } from "./cells.js";
import { DetailsCache } from "./details.js";
import { wrapLongitude } from "./geo.js";
import { cellKey, cellOf, cellsCovering, gridOf } from "./grid.js";
import { LiveHub, STATUS } from "./hub.js";
import { trackerStatus } from "./status.js";
import { FLASH_MS, TrackerLayer } from "./tracker-layer.js";
import { TrackerStore } from "./trackers.js";
import { eventLog, formatClock, formatSpeed, statusBadge, toggle, tooltip } from "./ui.js";
import { bindViewHash, parseViewHash } from "./view-hash.js";

const L = window.L;

const CELLS_DEBOUNCE_MS = 250;
const HOVER_PIXELS = 10;
const STALENESS_EVERY_MS = 5000;
const DETAILS_MAX_AGE_MS = 30000;
const FRAME_MAX_GAP_MS = 250;

const config = JSON.parse(document.getElementById("map-config").textContent);
const grid = gridOf(config.gridDegrees);
/** The server's status rule: {onlineSeconds, offlineSeconds, labels: {value: label}}. */
const statusRule = config.trackerStatus;

// --- Page controls -----------------------------------------------------------

const badge = statusBadge(document.getElementById("connection"));
const zoomHint = document.getElementById("zoom-hint");
const log = eventLog(document.getElementById("event-log"));
const shell = document.getElementById("map-shell");
const tip = tooltip(document.getElementById("tracker-tooltip"), shell);

// --- Map ---------------------------------------------------------------------

const start = parseViewHash(window.location.hash) ?? {
  zoom: config.zoom,
  latitude: config.center.latitude,
  longitude: config.center.longitude,
};
const map = L.map("map", { preferCanvas: true, worldCopyJump: true, minZoom: 2, maxZoom: 19 });
map.setView([start.latitude, start.longitude], start.zoom);
addLandOutline(map, config.landUrl);
addTiles(map, {
  url: config.tileUrl,
  attribution: config.tileAttribution,
  onUnavailable: () => (shell.dataset.tiles = "unavailable"),
});
bindViewHash(map, wrapLongitude);

// --- Trackers ----------------------------------------------------------------

const store = new TrackerStore();
const details = new DetailsCache({ url: config.trackersUrl, onLoaded: () => scheduleFrame() });
const headingOf = (tracker) => tracker.heading ?? details.get(tracker.id)?.heading ?? null;
const layer = new TrackerLayer({ trackers: () => store.values(), headingOf, thresholds: statusRule }).addTo(map);

let frameRequested = false;
let lastFrameAt = -Infinity;
let frameCost = 0;

/**
 * Ask for a frame. With many trackers a redraw costs milliseconds and updates
 * trickle in all the time, so frames are spaced to keep drawing to about a
 * fifth of the main thread (at most FRAME_MAX_GAP_MS apart).
 */
function scheduleFrame() {
  if (frameRequested) return;
  frameRequested = true;
  const wait = lastFrameAt + Math.min(FRAME_MAX_GAP_MS, frameCost * 4) - performance.now();
  if (wait > 1) setTimeout(() => requestAnimationFrame(frame), wait);
  else requestAnimationFrame(frame);
}

/** Once per animation frame: apply the queued positions, redraw, refresh the count and tooltip. */
function frame() {
  frameRequested = false;
  const startedAt = performance.now();
  if (store.hasPending) {
    const added = store.applyPending();
    if (added.length) details.want(added);
  }
  const animating = layer.redraw();
  badge.setCount(layer.visibleCount());
  refreshTooltip();
  lastFrameAt = startedAt;
  frameCost = performance.now() - startedAt;
  if (animating) scheduleFrame();
}

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
  scheduleFrame();
}

function onGeofence(trackerId, geofenceId, entered) {
  if (typeof trackerId !== "string") return;
  store.flash(trackerId, FLASH_MS);
  log.add(`${nameOf(trackerId)} ${entered ? "entered" : "left"} geofence ${String(geofenceId)}`);
  scheduleFrame();
}

function nameOf(id) {
  return details.get(id)?.name || `Tracker ${id.slice(0, 8)}`;
}

/** Drop the trackers outside our cells: the server no longer tells us about them. */
function pruneToCells() {
  const kept = subscription.keptKeys();
  const removed = store.retain((tracker) => kept.has(cellKey(cellOf(grid, tracker.latitude, tracker.longitude))));
  if (removed) scheduleFrame();
}

// --- Hub and cells -----------------------------------------------------------

const subscription = new CellSubscription({
  invoke: (newCells, previousCells) => hub.invoke("updateMapGridGroups", newCells, previousCells),
  onChange: ({ error }) => {
    if (error) {
      badge.setDetail(`Could not update the map area: ${error.message}`);
    } else {
      if (hub.status === STATUS.live) badge.setDetail("");
      pruneToCells();
    }
  },
});

const hub = new LiveHub({
  url: config.hubUrl,
  handlers: {
    locationUpdated: onLocationUpdated,
    geofenceEntered: (trackerId, geofenceId) => onGeofence(trackerId, geofenceId, true),
    geofenceExited: (trackerId, geofenceId) => onGeofence(trackerId, geofenceId, false),
  },
  onStatus: (status, detail) => {
    badge.setState(status, detail);
    if (status !== STATUS.live) subscription.disconnected();
  },
  onConnected: () => subscription.connected(),
});

function updateCells() {
  const bounds = map.getBounds();
  const cells = cellsCovering(
    grid,
    { west: bounds.getWest(), south: bounds.getSouth(), east: bounds.getEast(), north: bounds.getNorth() },
    config.maxCells,
  );
  toggle(zoomHint, cells === null);
  subscription.want(cells ?? []);
}

let cellsTimer = null;
map.on("moveend zoomend", () => {
  clearTimeout(cellsTimer);
  cellsTimer = setTimeout(updateCells, CELLS_DEBOUNCE_MS);
  scheduleFrame();
});

updateCells();
hub.start();

// Staleness changes with time alone: re-evaluate every few seconds.
setInterval(() => {
  if (document.hidden) return;
  pruneToCells();
  details.want(Array.from(store.values(), (tracker) => tracker.id));
  scheduleFrame();
}, STALENESS_EVERY_MS);

// --- Tooltip -----------------------------------------------------------------

let hoveredId = null;
let pointer = null;

function hoverAt(containerPoint) {
  pointer = containerPoint;
  const id = layer.nearest(containerPoint, HOVER_PIXELS);
  if (id !== hoveredId) {
    hoveredId = id;
    layer.setHovered(id);
    if (id) details.refresh(id, DETAILS_MAX_AGE_MS);
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

function refreshTooltip() {
  const tracker = hoveredId && store.get(hoveredId);
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
  ]);
}

map.on("mousemove click", (event) => hoverAt(event.containerPoint));
map.on("mouseout movestart zoomstart", endHover);
setInterval(() => {
  if (tip.visible) refreshTooltip();
}, 1000);

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
});
