// The selected tracker on the map: a click on a marker selects it; the
// selection then gets its details panel, its trail, its highlighted marker
// (drawn even outside the watched cells), a flight to it when it is out of
// sight, and "Follow", which keeps the map centred on it until the map is
// dragged. Escape or the panel's close button clears the selection. While a
// replay plays (replay.js) the map neither flies to nor follows the live tracker.

import { formatAge } from "./ages.js";
import { nearestLongitude } from "./geo.js";
import { coveringSpan } from "./grid.js";
import { trackerStatus } from "./status.js";
import { DetailsPanel, formatDegrees, formatHeading, formatWhen } from "./tracker-details.js";
import { TrailLayer } from "./trail.js";
import { TripsSection } from "./trips.js";
import { formatSpeed } from "./ui.js";

/** How near a click must be to a marker to select it, in CSS pixels (a finger is less precise than a mouse). */
const CLICK_PIXELS = 14;
/** How often the selected tracker is read from the API while the hub says nothing of it (the contract's 2 s). */
const READ_EVERY_MS = 2000;
const PANEL_EVERY_MS = 1000;
const VISITS_MAX_AGE_MS = 30000;
/** A crossing of the selected tracker makes its visits read again, unless they were read this recently. */
const VISITS_AFTER_CROSSING_MS = 1000;
/** The zoom a flight lands at when the view is too far out for markers: a city. */
const CITY_ZOOM = 13;
/** A stop shown from the trips section: streets, so that one can see where it was. */
const STOP_ZOOM = 16;
const FOLLOW_PAN_SECONDS = 0.5;
/** A marker this close to the details panel counts as under it. */
const PANEL_MARGIN_PIXELS = 16;
/** Leaflet's own flights across a continent take several seconds: an operator looking for a tracker wants it sooner. */
const FLIGHT_SECONDS = 1.5;
const ZOOM_HANDLERS = ["scrollWheelZoom", "doubleClickZoom", "touchZoom"];

/**
 * @param {object} parts
 * @param {any} parts.map  the Leaflet map
 * @param {any} parts.layer  the TrackerLayer (tracker-layer.js)
 * @param {import("./selection.js").Selection} parts.selection
 * @param {import("./selected.js").SelectedTracker} parts.selected
 * @param {HTMLElement} parts.panelRoot  <section id="tracker-details">
 * @param {{onlineSeconds: number, offlineSeconds: number, labels: Record<string, string>}} parts.statusRule
 * @param {import("./memberships.js").FenceMemberships} parts.memberships
 * @param {(trackerId: string) => string} parts.fencesOf  the fences a tracker is in now, in words
 * @param {(fenceId: string) => string} parts.fenceNameOf
 * @param {(trackerId: string) => string} parts.nameOf  a name until the API's answer comes
 * @param {(trackerId: string) => {latitude: number, longitude: number, timestamp: number}|undefined} parts.positionOf
 *   where the map has the tracker now, if it has it
 * @param {(latitude: number, longitude: number) => boolean} parts.isWatched  whether the hub sends positions there now
 * @param {{grid: ReturnType<import("./grid.js").gridOf>, maxCells: number}} parts.cells
 * @param {() => void} parts.redraw  ask for a frame
 * @param {{active: boolean, buttonFor: (id: string) => "start"|"add"|"in"|"full", replayOrAdd: (id: string) => void}
 *   & EventTarget} parts.replay  the replay (replay.js): what the panel's Replay button does; "change" when it does, "open" when one opens
 * @param {string} parts.tripsUrl  GET /api/trackers/{id}/trips, with "{id}" for the tracker's id
 * @returns the test hooks
 */
export function bindSelection({
  map,
  layer,
  selection,
  selected,
  panelRoot,
  statusRule,
  memberships,
  fencesOf,
  fenceNameOf,
  nameOf,
  positionOf,
  isWatched,
  cells,
  redraw,
  replay,
  tripsUrl,
}) {
  const panel = new DetailsPanel(panelRoot, {
    onClose: () => selection.clear(),
    onFollow: (on) => selection.follow(on),
    onReplay: () => {
      if (selection.id !== null) replay.replayOrAdd(selection.id);
    },
  });
  /** The stop last shown from the trips section, ringed on the map. */
  let stopMarker = null;
  const trips = new TripsSection(panel.sections, {
    urlOf: (id) => tripsUrl.replace("{id}", encodeURIComponent(id)),
    showPlace: (latitude, longitude) => {
      selection.follow(false); // looking at where it was, not where it is
      const place = [latitude, nearestLongitude(longitude, map.getCenter().lng)];
      stopMarker?.remove();
      // SVG (the map draws on canvas by default), so that map.css styles it.
      const renderer = window.L.svg({ padding: 0.5 });
      stopMarker = window.L.circleMarker(place, { renderer, className: "trips-stop-marker", radius: 9, interactive: false });
      stopMarker.addTo(map);
      const zoom = Math.max(map.getZoom(), STOP_ZOOM);
      map.flyTo(centreFor(place, zoom), zoom, { animate: !reducedMotion.matches, duration: FLIGHT_SECONDS });
    },
  });
  // A replay opening (the trip's, say) is the map now: the ring of a stop looked at before goes.
  replay.addEventListener("open", () => {
    stopMarker?.remove();
    stopMarker = null;
  });
  const trail = new TrailLayer(map, selected.trail);
  const reducedMotion = window.matchMedia("(prefers-reduced-motion: reduce)");
  const zoomHandlerDefaults = Object.fromEntries(ZOOM_HANDLERS.map((name) => [name, map.options[name]]));
  /** A flight asked for before the tracker's position was known: made once it is. */
  let revealWanted = false;
  /** Whether a flight (ours) is under way: following waits for it to land. */
  let flying = false;
  /** The tracker object the layer draws as selected (it moves in place). */
  let onLayer = null;

  function inMarkersMode() {
    const bounds = map.getBounds();
    const view = { west: bounds.getWest(), south: bounds.getSouth(), east: bounds.getEast(), north: bounds.getNorth() };
    return coveringSpan(cells.grid, view).count <= cells.maxCells;
  }

  /** The tracker's place as drawn: its longitude shifted by whole turns to lie beside the view. */
  function placeOf(tracker) {
    return [tracker.latitude, nearestLongitude(tracker.longitude, map.getCenter().lng)];
  }

  /** How much of the map's height is not under the details panel (all of it, unless the panel is a phone's bottom sheet). */
  function uncoveredHeight() {
    const height = map.getSize().y;
    if (panelRoot.hidden) return height;
    const box = map.getContainer().getBoundingClientRect();
    const sheet = panelRoot.getBoundingClientRect();
    if (sheet.left > box.left + 1 || sheet.right < box.right - 1) return height;
    return Math.max(height / 3, Math.min(height, sheet.top - box.top));
  }

  /** The map centre that shows `latLng` in the middle of the part of the map not under the panel. */
  function centreFor(latLng, zoom) {
    const shift = (map.getSize().y - uncoveredHeight()) / 2;
    if (shift <= 0) return latLng;
    return map.unproject(map.project(latLng, zoom).add([0, shift]), zoom);
  }

  /** Whether the tracker's marker is under the details panel (or just beside it). */
  function underPanel(tracker) {
    if (panelRoot.hidden) return false;
    const box = map.getContainer().getBoundingClientRect();
    const panelBox = panelRoot.getBoundingClientRect();
    const point = map.latLngToContainerPoint(placeOf(tracker));
    const x = box.left + point.x;
    const y = box.top + point.y;
    const margin = PANEL_MARGIN_PIXELS;
    return (
      x > panelBox.left - margin && x < panelBox.right + margin && y > panelBox.top - margin && y < panelBox.bottom + margin
    );
  }

  /** Whether the tracker is in the view, at a zoom where markers show. */
  function inView(tracker) {
    return map.getBounds().contains(placeOf(tracker)) && inMarkersMode();
  }

  /** Fly to the tracker: at `zoom`, or where markers show (the current zoom if they do, else a city's). */
  function flyTo(tracker, zoom = inMarkersMode() ? map.getZoom() : Math.max(map.getZoom(), CITY_ZOOM)) {
    flying = !reducedMotion.matches;
    map.flyTo(centreFor(placeOf(tracker), zoom), zoom, { animate: !reducedMotion.matches, duration: FLIGHT_SECONDS });
  }

  /** Bring the tracker into sight if it is not (or as soon as its position is known): fly to it, or pan it from under the panel. */
  function reveal() {
    if (replay.active) return; // the replay's marker is the one in sight, not the live one
    const tracker = selected.tracker;
    revealWanted = tracker === null;
    if (!tracker) return;
    if (inView(tracker)) uncover();
    else flyTo(tracker);
  }

  /** A marker picked where its panel then opens (a phone's sheet, the right edge): bring it out from under. */
  function uncover() {
    const tracker = selected.tracker;
    if (!tracker || flying || !underPanel(tracker)) return;
    map.panTo(centreFor(placeOf(tracker), map.getZoom()), { animate: !reducedMotion.matches });
  }

  /** Keep the followed tracker in the middle, at the zoom the operator chose: a short pan, or a flight when it is out of sight. */
  function centre() {
    const tracker = selected.tracker;
    if (!tracker || flying || replay.active) return;
    if (!map.getBounds().contains(placeOf(tracker))) {
      flyTo(tracker, map.getZoom());
      return;
    }
    const animate = !reducedMotion.matches;
    map.panTo(centreFor(placeOf(tracker), map.getZoom()), { animate, duration: FOLLOW_PAN_SECONDS, easeLinearity: 1 });
  }

  /** While following, zooming keeps the middle where it is (else the next pan would undo a zoom about the pointer). */
  function zoomAboutCentre(on) {
    for (const name of ZOOM_HANDLERS) {
      if (zoomHandlerDefaults[name]) map.options[name] = on ? "center" : zoomHandlerDefaults[name];
    }
  }

  function render() {
    const id = selected.id;
    if (id === null) return;
    const now = Date.now();
    const { tracker, info, missing } = selected;
    const statusKey = tracker ? trackerStatus(tracker.timestamp, now, statusRule) : info?.status || "never";
    // Before the first answer nothing is known yet ("…"); with an answer and no position, there is none.
    const noPosition = missing ? "—" : info ? "none" : null;
    const { visits, loaded } = memberships.recentVisits(id);
    panel.show({
      id,
      name: info?.name || nameOf(id),
      status: missing ? "not found" : (statusRule.labels[statusKey] ?? statusKey),
      statusKey: missing ? "missing" : statusKey,
      latitude: tracker ? formatDegrees(tracker.latitude) : noPosition,
      longitude: tracker ? formatDegrees(tracker.longitude) : noPosition,
      speed: formatSpeed(info?.speed ?? tracker?.speed),
      heading: formatHeading(tracker?.heading ?? info?.heading),
      updated: tracker ? `${formatAge(tracker.timestamp, now)} · ${formatWhen(tracker.timestamp, now)}` : noPosition,
      fences: fencesOf(id),
      visits: loaded
        ? visits.map((visit) => ({
            fence: fenceNameOf(visit.fenceId),
            inside: visit.exitedAt === null,
            when: visitTimes(visit, now),
          }))
        : null,
      following: selection.following,
      followable: !missing && !replay.active,
      replay: missing ? "none" : replay.buttonFor(id),
      note: missing
        ? "No active tracker has this id: it was made inactive, or the link is wrong."
        : info && !tracker
          ? "It has not reported a position yet."
          : "",
    });
  }

  selection.addEventListener("change", ({ detail }) => {
    if (detail.following && detail.previous !== null && detail.id !== detail.previous) {
      // Another tracker picked while following one: look at it, follow it only if asked.
      selection.follow(false);
    }
    const picked = detail.id !== selected.id;
    if (picked) {
      selected.select(detail.id);
      trail.clear();
      stopMarker?.remove();
      stopMarker = null;
      onLayer = null;
      layer.setSelected(null);
      revealWanted = false;
      // Where the map has it already, so the panel and the halo need not wait for its next report.
      const known = detail.id === null ? undefined : positionOf(detail.id);
      if (known) selected.heard(detail.id, known.latitude, known.longitude, known.timestamp);
    }
    zoomAboutCentre(selection.following);
    if (detail.id === null) {
      // Focus in the panel (its close button, say) would be lost with it: give it to the map.
      const hadFocus = panelRoot.contains(document.activeElement);
      panel.hide();
      trips.hide();
      if (hadFocus) map.getContainer().focus();
      return;
    }
    memberships.refresh(detail.id, VISITS_MAX_AGE_MS);
    trips.show(detail.id);
    render(); // first: where the panel stands decides where the tracker is in sight
    if (selection.following) centre();
    // A link's view is part of the picture it opens: it is kept, not flown from.
    else if (detail.reveal || (picked && detail.source !== "url")) reveal();
  });

  selected.addEventListener("changed", ({ detail: { what } }) => {
    if (what === "position") {
      // The layer holds the tracker itself, which moves in place: a new frame shows it moved.
      if (onLayer !== selected.tracker) {
        onLayer = selected.tracker;
        layer.setSelected(onLayer);
      }
      trail.grew();
      if (revealWanted) reveal();
      if (selection.following) centre();
      redraw();
    } else if (what === "trail") {
      trail.redraw();
    } else if (what === "missing") {
      selection.follow(false); // nothing to follow
    }
    render();
  });

  replay.addEventListener("change", () => {
    if (replay.active) selection.follow(false); // the live tracker is not on the map meanwhile
    render();
  });

  memberships.addEventListener("changed", ({ detail: trackerId }) => {
    if (trackerId !== selected.id) return;
    // After a crossing the visit is stored already (it is published after commit): read the list again.
    memberships.refresh(trackerId, VISITS_AFTER_CROSSING_MS);
    render();
  });

  map.on("click", (event) => {
    const id = layer.nearest(event.containerPoint, CLICK_PIXELS);
    if (id) selection.select(id, { source: "map" });
  });
  // Dragging the map means looking elsewhere: stop following (the button says so).
  map.on("dragstart", () => selection.follow(false));
  map.on("moveend", () => {
    flying = false;
  });
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape" || event.defaultPrevented || selection.id === null) return;
    // A field's own Escape (clearing a search, say) is its own.
    if (event.target instanceof HTMLElement && event.target.closest("input, textarea, select")) return;
    selection.clear();
  });

  setInterval(() => {
    if (selected.id === null || document.hidden) return;
    selected.tick(isWatched);
  }, READ_EVERY_MS);
  setInterval(() => {
    if (selected.id === null || document.hidden) return;
    memberships.refresh(selected.id, VISITS_MAX_AGE_MS);
    render();
  }, PANEL_EVERY_MS);

  return {
    /** Select a tracker as the list does (a test hook: the flight and the panel follow). */
    select: (id) => selection.select(id, { reveal: true, source: "test" }),
    /** The selection as the map has it: the tracker, whether followed, its position, trail and marker. */
    selection: () => ({
      id: selected.id,
      following: selection.following,
      position: selected.tracker && {
        latitude: selected.tracker.latitude,
        longitude: selected.tracker.longitude,
        timestamp: selected.tracker.timestamp,
      },
      trail: trail.drawn(),
      // Whether its marker is drawn where it is (the layer's last drawing holds it there).
      marker:
        selected.tracker !== null &&
        layer.nearest(map.latLngToContainerPoint(placeOf(selected.tracker)), 1) === selected.id,
    }),
    /** The day the trips section shows and how many trips and stops it drew. */
    trips: () => trips.drawn(),
  };
}

/** "since 14:02:31", or "13:40:00 – 13:47:00 (7 min)". */
function visitTimes({ enteredAt, exitedAt }, now) {
  if (exitedAt === null) return `since ${formatWhen(enteredAt, now)}`;
  return `${formatWhen(enteredAt, now)} – ${formatWhen(exitedAt, now)} (${formatDuration(exitedAt - enteredAt)})`;
}

/** "42 s", "7 min", "3 h 5 min", "2 d 4 h". */
export function formatDuration(ms) {
  const seconds = Math.max(0, Math.floor(ms / 1000));
  if (seconds < 60) return `${seconds} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min`;
  const hours = Math.floor(minutes / 60);
  if (hours < 24) return minutes % 60 ? `${hours} h ${minutes % 60} min` : `${hours} h`;
  const days = Math.floor(hours / 24);
  return hours % 24 ? `${days} d ${hours % 24} h` : `${days} d`;
}
