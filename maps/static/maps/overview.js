// The overview (docs/protocol.md §3.11): where the view needs more cells than a
// connection may join, the map shows the trackers counted by area instead of
// the trackers. `overviewRequest` picks the areas' size for a view,
// `OverviewSubscription` keeps the server's idea of what we watch in step
// (one updateOverview in flight, the latest wish wins, sent again after a
// reconnect), and `OverviewLayer` draws each area as a circle with its count,
// updated in place, which zooms to the area's trackers when clicked.

import { nearestLongitude, wrapLongitude } from "./geo.js";
import { coveringSpan, gridOf } from "./grid.js";

const L = window.L;

const RETRY_MS = 5000;
const FIT_PADDING = [48, 48];
const FIT_MAX_ZOOM = 14;
const compact = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 });

/**
 * What to ask the server for a view: `{level, view}` with the finest level
 * whose areas covering the view number at most `maxAreas` (the coarsest
 * otherwise), and the view as the server reads it: [west, south, east, north],
 * longitudes folded into [-180, 180] (west > east across the antimeridian).
 * @param {{west: number, south: number, east: number, north: number}} bounds
 * @param {{levels: number[], maxAreas: number}} options  levels coarsest first
 */
export function overviewRequest(bounds, { levels, maxAreas }) {
  const south = Math.max(-90, Math.min(90, bounds.south));
  const north = Math.max(south, Math.min(90, bounds.north));
  let west = -180;
  let east = 180;
  if (bounds.east - bounds.west < 360) {
    west = wrapLongitude(bounds.west);
    east = wrapLongitude(bounds.east);
    if (east === -180 && bounds.east > bounds.west) east = 180;
  }
  // As the server counts them: across the antimeridian, east goes on past 180.
  const span = { west, south, east: west > east ? east + 360 : east, north };
  const level =
    [...levels].reverse().find((size) => coveringSpan(gridOf(size), span).count <= maxAreas) ?? levels[0];
  return { level, view: [west, south, east, north] };
}

function sameRequest(a, b) {
  if (a === null || b === null) return a === b;
  return a.level === b.level && a.view.every((edge, n) => edge === b.view[n]);
}

/** Keeps the overview the server sends us in step with what the map wants (null: none). */
export class OverviewSubscription {
  #invoke = null;
  #wanted = null;
  #sent = null;
  #connected = false;
  #busy = false;
  #epoch = 0;
  #retryTimer = null;
  #onError;

  /** @param {{onError: (error: Error|null) => void}} options  after each answer */
  constructor({ onError }) {
    this.#onError = onError;
  }

  /** The level asked for (null: none): an overview of another level is an old one. */
  get level() {
    return this.#wanted?.level ?? null;
  }

  /** @param {{level: number, view: number[]} | null} request */
  want(request) {
    this.#wanted = request;
    this.#sync();
  }

  /** A fresh connection watches no overview: ask again through `invoke`. */
  connected(invoke) {
    this.#epoch += 1;
    this.#invoke = invoke;
    this.#connected = true;
    this.#busy = false;
    this.#sent = null;
    this.#sync();
  }

  disconnected() {
    this.#connected = false;
  }

  async #sync() {
    clearTimeout(this.#retryTimer);
    if (!this.#connected || this.#busy || sameRequest(this.#wanted, this.#sent)) return;
    const epoch = this.#epoch;
    const request = this.#wanted;
    this.#busy = true;
    let error = null;
    try {
      await (request === null ? this.#invoke(null, null) : this.#invoke(request.level, request.view));
      if (epoch !== this.#epoch) return;
      this.#sent = request;
    } catch (failure) {
      if (epoch !== this.#epoch) return;
      error = failure instanceof Error ? failure : new Error(String(failure));
      this.#retryTimer = setTimeout(() => this.#sync(), RETRY_MS);
    } finally {
      if (epoch === this.#epoch) this.#busy = false;
    }
    this.#onError(error);
    if (!error) this.#sync();
  }
}

function isArea(area) {
  return (
    area !== null &&
    typeof area === "object" &&
    Array.isArray(area.area) &&
    area.area.length === 2 &&
    area.area.every(Number.isInteger) &&
    Number.isInteger(area.count) &&
    area.count > 0 &&
    Number.isFinite(area.latitude) &&
    Number.isFinite(area.longitude) &&
    Math.abs(area.latitude) <= 90 &&
    Math.abs(area.longitude) <= 180 &&
    Array.isArray(area.bounds) &&
    area.bounds.length === 4 &&
    area.bounds.every(Number.isFinite)
  );
}

/** A circle's diameter in pixels for a count: grows with its logarithm, so 1 and 100,000 both read. */
function diameter(count) {
  return Math.round(30 + 12 * Math.log10(count));
}

/** Merge two summaries of areas: counts add up, the mean is weighted, the boxes joined. */
function merged(a, b) {
  const count = a.count + b.count;
  return {
    key: a.key,
    count,
    latitude: (a.latitude * a.count + b.latitude * b.count) / count,
    longitude: (a.longitude * a.count + b.longitude * b.count) / count,
    bounds: [
      Math.min(a.bounds[0], b.bounds[0]),
      Math.min(a.bounds[1], b.bounds[1]),
      Math.max(a.bounds[2], b.bounds[2]),
      Math.max(a.bounds[3], b.bounds[3]),
    ],
  };
}

/**
 * The areas of the last overview as circles, kept and updated in place between
 * overviews. Areas whose circles would overlap on screen (trackers on both
 * sides of an area's edge) are drawn as one circle holding both counts.
 */
export class OverviewLayer {
  #map;
  #areas = [];
  #circles = new Map();
  #total = null;

  /** @param {{map: any}} options */
  constructor({ map }) {
    this.#map = map;
    map.on("moveend", () => this.#render());
  }

  /** Every counted tracker in the world, by the last overview (null: none yet). */
  get total() {
    return this.#total;
  }

  /** What is drawn: each circle's key, count and bounds (for tests). */
  drawn() {
    return Array.from(this.#circles, ([key, circle]) => ({ key, count: circle.count, bounds: circle.bounds }));
  }

  /** Draw an `overviewUpdated` argument; anything malformed in it is left out. */
  update(overview) {
    if (overview === null || typeof overview !== "object" || !Array.isArray(overview.areas)) return;
    if (Number.isInteger(overview.total) && overview.total >= 0) this.#total = overview.total;
    this.#areas = overview.areas.filter(isArea).map((area) => ({
      key: `${overview.areaDegrees}:${area.area[0]},${area.area[1]}`,
      count: area.count,
      latitude: area.latitude,
      longitude: area.longitude,
      bounds: area.bounds.slice(),
    }));
    this.#render();
  }

  /** Remove every circle (back to markers). */
  clear() {
    for (const circle of this.#circles.values()) circle.marker.remove();
    this.#circles.clear();
    this.#areas = [];
    this.#total = null;
  }

  /** Group the areas whose circles would overlap, largest first, then update the circles in place. */
  #render() {
    const centre = this.#map.getCenter().lng;
    const groups = [];
    for (const area of [...this.#areas].sort((a, b) => b.count - a.count)) {
      // On the copy of the world nearest the view's centre, as the trackers are, box and all.
      const shift = nearestLongitude(area.longitude, centre) - area.longitude;
      const [west, south, east, north] = area.bounds;
      const near = { ...area, longitude: area.longitude + shift, bounds: [west + shift, south, east + shift, north] };
      const point = this.#map.latLngToContainerPoint([near.latitude, near.longitude]);
      const group = groups.find(
        (other) => other.point.distanceTo(point) < (diameter(other.summary.count) + diameter(area.count)) / 2,
      );
      if (group) group.summary = merged(group.summary, near);
      else groups.push({ point, summary: near });
    }
    const seen = new Set();
    for (const { summary } of groups) {
      seen.add(summary.key);
      const circle = this.#circles.get(summary.key) ?? this.#add(summary.key);
      circle.update(summary);
      circle.marker.setLatLng([summary.latitude, summary.longitude]);
    }
    for (const [key, circle] of this.#circles) {
      if (!seen.has(key)) {
        circle.marker.remove();
        this.#circles.delete(key);
      }
    }
  }

  #add(key) {
    const circle = new AreaCircle((bounds) => this.#zoomTo(bounds));
    this.#circles.set(key, circle);
    circle.marker.addTo(this.#map);
    return circle;
  }

  /** Bounds in the view's copy of the world (west may be below -180, east past 180). */
  #zoomTo([west, south, east, north]) {
    this.#map.fitBounds(
      [
        [south, west],
        [north, east],
      ],
      { padding: FIT_PADDING, maxZoom: FIT_MAX_ZOOM },
    );
  }
}

/** One area's circle: a button (reachable by keyboard) with its count, resized and relabelled in place. */
class AreaCircle {
  count = 0;
  latitude = 0;
  longitude = 0;
  bounds = [0, 0, 0, 0];
  #button;
  #label;
  #size = 0;

  constructor(onPick) {
    this.#button = document.createElement("button");
    this.#button.type = "button";
    this.#button.className = "overview-area";
    this.#label = document.createElement("span");
    this.#button.append(this.#label);
    // A press on a circle is not the start of a drag of the map, nor a click on it.
    L.DomEvent.disableClickPropagation(this.#button);
    this.#button.addEventListener("click", () => onPick(this.bounds));
    this.marker = L.marker([0, 0], {
      icon: L.divIcon({ className: "overview-area-anchor", html: this.#button, iconSize: null }),
      keyboard: false,
      interactive: false,
    });
  }

  update({ count, latitude, longitude, bounds }) {
    this.latitude = latitude;
    this.longitude = longitude;
    this.bounds = bounds;
    if (count === this.count) return;
    this.count = count;
    this.#label.textContent = count < 10000 ? count.toLocaleString() : compact.format(count);
    const words = `${count.toLocaleString()} ${count === 1 ? "tracker" : "trackers"}`;
    this.#button.setAttribute("aria-label", `${words}; zoom in`);
    this.#button.title = words;
    const size = diameter(count);
    if (size !== this.#size) {
      this.#size = size;
      this.#button.style.width = `${size}px`;
      this.#button.style.height = `${size}px`;
      this.#button.style.fontSize = `${Math.round(11 + size / 10)}px`;
    }
  }
}
