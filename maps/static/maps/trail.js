// The selected tracker's trail: its positions over the last minutes, from
// history first, then extended by every newer position, drawn as one line
// under the markers. `TrailPoints` keeps the positions (pure); `TrailLayer`
// draws them on the map, each step the short way round the globe, so a
// tracker crossing the antimeridian leaves a short line, not one round the world.

import { nearestLongitude } from "./geo.js";
import { SELECTED_COLOUR } from "./tracker-layer.js";

const L = window.L;

/**
 * @typedef {{latitude: number, longitude: number, timestamp: number}} TrailPoint  timestamp in Unix ms
 */

/** A tracker's recent positions, oldest first, one per timestamp, never older than the newest minus `maxAgeMs`. */
export class TrailPoints {
  /** @type {TrailPoint[]} */
  #points = [];
  #maxAgeMs;
  #maxPoints;

  /** @param {{maxAgeMs: number, maxPoints: number}} limits */
  constructor({ maxAgeMs, maxPoints }) {
    this.#maxAgeMs = maxAgeMs;
    this.#maxPoints = maxPoints;
  }

  get length() {
    return this.#points.length;
  }

  /** The positions, oldest first (do not change them). */
  get points() {
    return this.#points;
  }

  get newest() {
    return this.#points.at(-1);
  }

  clear() {
    this.#points = [];
  }

  /** Merge stored positions (any order) with those already held, e.g. heard while the history was read. */
  addHistory(positions) {
    const byTime = new Map();
    for (const { latitude, longitude, timestamp } of [...positions, ...this.#points]) {
      if (!byTime.has(timestamp)) byTime.set(timestamp, { latitude, longitude, timestamp });
    }
    this.#points = Array.from(byTime.values()).sort((a, b) => a.timestamp - b.timestamp);
    this.#prune();
  }

  /** Add a position newer than every one held; false (and nothing changes) for an older one or a repeat. */
  extend({ latitude, longitude, timestamp }) {
    const newest = this.newest;
    if (newest && timestamp <= newest.timestamp) return false;
    this.#points.push({ latitude, longitude, timestamp });
    this.#prune();
    return true;
  }

  #prune() {
    const newest = this.newest;
    if (!newest) return;
    const oldestKept = newest.timestamp - this.#maxAgeMs;
    let drop = 0;
    while (drop < this.#points.length && this.#points[drop].timestamp < oldestKept) drop += 1;
    drop = Math.max(drop, this.#points.length - this.#maxPoints);
    if (drop > 0) this.#points.splice(0, drop);
  }
}

/** The trail on the map: a line with a light casing, in a pane between the fences (410) and the markers (610). */
export class TrailLayer {
  #map;
  #trail;
  #casing;
  #line;
  #group;
  /** The longitude the newest point is drawn at (shifted by whole turns to be near the view), null when none is. */
  #newestDrawnLng = null;

  /**
   * @param {any} map  the Leaflet map
   * @param {TrailPoints} trail  the points to draw
   */
  constructor(map, trail) {
    this.#map = map;
    this.#trail = trail;
    const pane = map.createPane("trail");
    pane.style.zIndex = "440";
    pane.style.pointerEvents = "none";
    const renderer = L.svg({ pane: "trail", padding: 0.5 });
    const common = { renderer, pane: "trail", interactive: false, lineCap: "round", lineJoin: "round" };
    this.#casing = L.polyline([], { ...common, color: "#ffffff", weight: 7, opacity: 0.75 });
    this.#line = L.polyline([], { ...common, color: SELECTED_COLOUR, weight: 3.5, opacity: 0.9 });
    this.#group = L.layerGroup([this.#casing, this.#line]);
    map.on("moveend", () => this.#recentre());
  }

  /** Draw every point, in place of what is drawn. */
  redraw() {
    const points = this.#trail.points;
    if (points.length === 0) {
      this.clear();
      return;
    }
    const newest = points.at(-1);
    let lng = nearestLongitude(newest.longitude, this.#map.getCenter().lng);
    this.#newestDrawnLng = lng;
    const latLngs = new Array(points.length);
    latLngs[points.length - 1] = [newest.latitude, lng];
    for (let i = points.length - 2; i >= 0; i -= 1) {
      lng = nearestLongitude(points[i].longitude, lng);
      latLngs[i] = [points[i].latitude, lng];
    }
    this.#casing.setLatLngs(latLngs);
    this.#line.setLatLngs(latLngs);
    if (!this.#map.hasLayer(this.#group)) this.#group.addTo(this.#map);
  }

  /** The trail grew by its newest point: draw that step only (the rest is drawn). */
  grew() {
    const newest = this.#trail.newest;
    if (this.#newestDrawnLng === null || !newest || this.#line.getLatLngs().length + 1 !== this.#trail.length) {
      this.redraw(); // nothing drawn yet, or old points were dropped meanwhile
      return;
    }
    const lng = nearestLongitude(newest.longitude, this.#newestDrawnLng);
    this.#casing.addLatLng([newest.latitude, lng]);
    this.#line.addLatLng([newest.latitude, lng]);
    this.#newestDrawnLng = lng;
  }

  clear() {
    this.#casing.setLatLngs([]);
    this.#line.setLatLngs([]);
    this.#newestDrawnLng = null;
    this.#group.remove();
  }

  /** The points drawn now, as [latitude, longitude] with longitudes as drawn (for tests). */
  drawn() {
    return this.#line.getLatLngs().map((point) => [point.lat, point.lng]);
  }

  /** After a pan across the antimeridian, draw the copy of the trail beside the view. */
  #recentre() {
    const newest = this.#trail.newest;
    if (this.#newestDrawnLng === null || !newest) return;
    if (nearestLongitude(newest.longitude, this.#map.getCenter().lng) !== this.#newestDrawnLng) this.redraw();
  }
}
