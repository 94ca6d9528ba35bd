// The geofence layer: the active fences of the view, from the REST API
// (docs/protocol.md, GET /api/geofences?bbox=), drawn under the trackers with
// their names. Fetched again after the view settles and whenever the hub says
// fences changed; an answer that a newer request has overtaken is dropped.

import { destinationPoint, nearestLongitude, wrapLongitude } from "./geo.js";

const L = window.L;

const FETCH_DEBOUNCE_MS = 300;
/** How much of the view's size is fetched around it, so a short pan already shows the fences there. */
const VIEW_PADDING = 0.25;
/** A fence is named on the map once it is at least this many pixels across... */
const LABEL_MIN_PIXELS = 56;
/** ...and one smaller than this is drawn as a dot, so that it still shows where it is. */
const SPECK_PIXELS = 8;
/** ...and at most this many names are shown, the largest fences first. */
const MAX_LABELS = 150;
/** Vertices of a drawn circle. */
const CIRCLE_STEPS = 72;

const FENCE_STYLE = {
  color: "#6a3fb5",
  weight: 1.6,
  opacity: 0.8,
  fillColor: "#7a52c7",
  fillOpacity: 0.1,
  dashArray: "5 4",
  lineJoin: "round",
};

/**
 * @typedef {object} Fence
 * @property {string} id
 * @property {string} name
 * @property {{latitude: number, longitude: number}} centre
 * @property {number[][][][]} polygons  [polygon][ring][vertex] = [latitude, longitude], longitudes continuous
 * @property {{west: number, south: number, east: number, north: number}} extent  of `polygons` (east may pass 180)
 */

export class FenceLayer extends EventTarget {
  #map;
  #url;
  #group;
  #shapes;
  #labels;
  #renderer;
  /** @type {Map<string, Fence>} */
  #fences = new Map();
  /** @type {Map<string, string>} every fence name met, by id; also fed from elsewhere (learnName) */
  #names = new Map();
  #visible = true;
  #timer = null;
  #sequence = 0;
  #controller = null;
  #truncated = false;
  #warned = false;

  /**
   * Dispatches "loaded" after each answer that was drawn.
   * @param {object} options
   * @param {any} options.map  the Leaflet map
   * @param {string} options.url  the geofence list of the API (the page's config says where)
   */
  constructor({ map, url }) {
    super();
    this.#map = map;
    this.#url = url;
    // Under the trackers (their pane is 610): fences are context, markers the news.
    map.createPane("fences").style.zIndex = "410";
    const labelPane = map.createPane("fenceLabels");
    labelPane.style.zIndex = "420";
    labelPane.style.pointerEvents = "none";
    this.#renderer = L.canvas({ pane: "fences", padding: 0.25 });
    this.#shapes = L.layerGroup();
    this.#labels = L.layerGroup();
    this.#group = L.layerGroup([this.#shapes, this.#labels]).addTo(map);
    map.on("moveend", () => {
      this.#draw();
      this.#schedule(FETCH_DEBOUNCE_MS);
    });
  }

  get visible() {
    return this.#visible;
  }

  /** Whether the last answer held only the first fences of the view (the server's limit). */
  get truncated() {
    return this.#truncated;
  }

  /** The fences drawn now, for tests and the page: id, name. */
  drawn() {
    return Array.from(this.#fences.values(), ({ id, name }) => ({ id, name }));
  }

  /** A fence's name, if ever met; null otherwise. */
  nameOf(id) {
    return this.#names.get(String(id)) ?? null;
  }

  /** Remember a fence's name learnt elsewhere (a tracker's visits). */
  learnName(id, name) {
    if (typeof name === "string" && name !== "" && !this.#fences.has(id)) this.#names.set(id, name);
  }

  /** Show or hide the fences; hidden, nothing is fetched. */
  setVisible(visible) {
    if (visible === this.#visible) return;
    this.#visible = visible;
    if (visible) {
      this.#group.addTo(this.#map);
      this.#schedule(0);
    } else {
      this.#group.remove();
      this.#abort();
      clearTimeout(this.#timer);
    }
  }

  /** Fetch the view's fences again soon (the hub said some changed). */
  refresh() {
    this.#schedule(50);
  }

  #schedule(delay) {
    if (!this.#visible) return;
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.#fetch(), delay);
  }

  #abort() {
    this.#sequence += 1;
    this.#controller?.abort();
    this.#controller = null;
  }

  async #fetch() {
    this.#abort();
    const sequence = this.#sequence;
    const controller = new AbortController();
    this.#controller = controller;
    const query = new URLSearchParams({ bbox: bboxOf(this.#map.getBounds().pad(VIEW_PADDING)) });
    let body;
    try {
      const response = await fetch(`${this.#url}?${query}`, {
        headers: { Accept: "application/geo+json, application/json" },
        credentials: "same-origin",
        signal: controller.signal,
      });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      body = await response.json();
    } catch (error) {
      if (sequence !== this.#sequence || error.name === "AbortError") return;
      if (!this.#warned) {
        this.#warned = true;
        console.warn(`Geofences unavailable (${error.message}); the map goes on without them.`);
      }
      return;
    }
    if (sequence !== this.#sequence) return; // a newer view or change overtook this answer
    this.#controller = null;
    const fences = new Map();
    for (const feature of Array.isArray(body?.features) ? body.features : []) {
      const fence = fenceOf(feature);
      if (fence) fences.set(fence.id, fence);
    }
    for (const fence of fences.values()) this.#names.set(fence.id, fence.name);
    this.#fences = fences;
    this.#truncated = body?.truncated === true;
    this.#draw();
    this.dispatchEvent(new CustomEvent("loaded", { detail: { count: fences.size, truncated: this.#truncated } }));
  }

  /** Draw every fence in each world copy the view shows, and name those large enough on screen. */
  #draw() {
    this.#shapes.clearLayers();
    this.#labels.clearLayers();
    if (!this.#visible) return;
    const map = this.#map;
    const bounds = map.getBounds();
    const candidates = [];
    const drawing = { ...FENCE_STYLE, renderer: this.#renderer, pane: "fences", interactive: false };
    for (const fence of this.#fences.values()) {
      for (const shift of shiftsInView(fence.extent, bounds.getWest(), bounds.getEast())) {
        const corner = map.latLngToContainerPoint([fence.extent.south, fence.extent.west + shift]);
        const opposite = map.latLngToContainerPoint([fence.extent.north, fence.extent.east + shift]);
        const pixels = Math.max(Math.abs(opposite.x - corner.x), Math.abs(opposite.y - corner.y));
        if (pixels < SPECK_PIXELS) {
          const centre = [fence.centre.latitude, fence.centre.longitude + shift];
          L.circleMarker(centre, { ...drawing, radius: 3, dashArray: null }).addTo(this.#shapes);
          continue;
        }
        const latLngs = fence.polygons.map((rings) => rings.map((ring) => ring.map(([lat, lng]) => [lat, lng + shift])));
        L.polygon(latLngs, drawing).addTo(this.#shapes);
        if (pixels >= LABEL_MIN_PIXELS) candidates.push({ fence, shift, pixels });
      }
    }
    candidates.sort((a, b) => b.pixels - a.pixels);
    for (const { fence, shift } of candidates.slice(0, MAX_LABELS)) {
      const text = document.createElement("span");
      text.className = "fence-label-text";
      text.textContent = fence.name;
      // Along the fence's top edge, inside it: clear of the trackers that gather in its middle.
      L.marker([fence.extent.north, fence.centre.longitude + shift], {
        icon: L.divIcon({ className: "fence-label", html: text, iconSize: null }),
        pane: "fenceLabels",
        interactive: false,
        keyboard: false,
      }).addTo(this.#labels);
    }
  }
}

/** "west,south,east,north" for the API: longitudes folded into the world; west > east across the antimeridian. */
export function bboxOf(bounds) {
  const south = Math.max(-90, bounds.getSouth());
  const north = Math.min(90, bounds.getNorth());
  let west = -180;
  let east = 180;
  if (bounds.getEast() - bounds.getWest() < 360) {
    west = wrapLongitude(bounds.getWest());
    east = -wrapLongitude(-bounds.getEast()); // folded into (-180, 180], so an east edge at 180 stays 180
  }
  return [west, south, east, north].map((value) => Number(value.toFixed(6))).join(",");
}

/** The multiples of 360° by which a fence's copy lands in the view's longitudes. */
function shiftsInView(extent, west, east) {
  const shifts = [];
  const first = Math.ceil((west - extent.east) / 360);
  const last = Math.floor((east - extent.west) / 360);
  for (let k = first; k <= last && shifts.length < 3; k += 1) shifts.push(k * 360);
  return shifts;
}

/** A fence from one GeoJSON feature of the answer, or null when it is not one the map can draw. */
export function fenceOf(feature) {
  const properties = feature?.properties;
  const geometry = feature?.geometry;
  const id = feature?.id ?? properties?.id;
  if ((typeof id !== "string" && typeof id !== "number") || !properties || !geometry) return null;
  let polygons;
  if (geometry.type === "Point" && Number.isFinite(properties.radius) && properties.radius > 0) {
    const [lng, lat] = Array.isArray(geometry.coordinates) ? geometry.coordinates : [];
    if (!isLongitude(lng) || !isLatitude(lat)) return null;
    polygons = [[circleRing(lat, lng, properties.radius)]];
  } else if (geometry.type === "Polygon" || geometry.type === "MultiPolygon") {
    polygons = polygonsOf(geometry.type === "Polygon" ? [geometry.coordinates] : geometry.coordinates);
  }
  if (!polygons || polygons.length === 0) return null;
  const extent = extentOf(polygons);
  // The whole fence in the main world: its middle longitude folded into [-180, 180).
  const middle = (extent.west + extent.east) / 2;
  const shift = wrapLongitude(middle) - middle;
  if (shift !== 0) {
    for (const rings of polygons) for (const ring of rings) for (const vertex of ring) vertex[1] += shift;
    extent.west += shift;
    extent.east += shift;
  }
  const centre = properties.centre;
  const centreLat = isLatitude(centre?.latitude) ? centre.latitude : (extent.south + extent.north) / 2;
  const centreLng = isLongitude(centre?.longitude) ? nearestLongitude(centre.longitude, middle + shift) : middle + shift;
  return {
    id: String(id),
    name: typeof properties.name === "string" && properties.name !== "" ? properties.name : `Geofence ${id}`,
    centre: { latitude: centreLat, longitude: centreLng },
    polygons,
    extent,
  };
}

/**
 * GeoJSON polygons ([polygon][ring][[lng, lat]]) as Leaflet's [lat, lng], each
 * step of a ring the short way round (as the server joins them), every ring
 * starting near the first one's first longitude. Null if any is malformed.
 */
function polygonsOf(coordinates) {
  if (!Array.isArray(coordinates)) return null;
  let reference = null;
  const polygons = [];
  for (const rings of coordinates) {
    if (!Array.isArray(rings) || rings.length === 0) return null;
    const out = [];
    for (const ring of rings) {
      if (!Array.isArray(ring) || ring.length < 4) return null;
      let previous = null;
      let raw = null;
      const vertices = [];
      for (const position of ring) {
        const [lng, lat] = Array.isArray(position) ? position : [];
        if (!Number.isFinite(lng) || Math.abs(lng) > 360 || !isLatitude(lat)) return null;
        if (previous === null) {
          reference ??= lng;
          previous = nearestLongitude(lng, reference);
        } else {
          previous += ((((lng - raw + 180) % 360) + 360) % 360) - 180;
        }
        raw = lng;
        vertices.push([lat, previous]);
      }
      out.push(vertices);
    }
    polygons.push(out);
  }
  return polygons;
}

function circleRing(latitude, longitude, radius) {
  const ring = [];
  let previous = longitude;
  for (let step = 0; step < CIRCLE_STEPS; step += 1) {
    const [lat, lng] = destinationPoint(latitude, longitude, (step * 360) / CIRCLE_STEPS, radius);
    previous = nearestLongitude(lng, previous);
    ring.push([lat, previous]);
  }
  return ring;
}

function extentOf(polygons) {
  const extent = { west: Infinity, south: Infinity, east: -Infinity, north: -Infinity };
  for (const rings of polygons) {
    for (const [lat, lng] of rings[0]) {
      extent.west = Math.min(extent.west, lng);
      extent.east = Math.max(extent.east, lng);
      extent.south = Math.min(extent.south, lat);
      extent.north = Math.max(extent.north, lat);
    }
  }
  return extent;
}

function isLatitude(value) {
  return Number.isFinite(value) && Math.abs(value) <= 90;
}

function isLongitude(value) {
  return Number.isFinite(value) && Math.abs(value) <= 360;
}

/** A map control with one checkbox, "Geofences", that shows or hides the fence layer. */
export function fenceToggle(fences) {
  const Toggle = L.Control.extend({
    options: { position: "topleft" },
    onAdd() {
      const container = L.DomUtil.create("div", "leaflet-bar fence-toggle");
      const label = document.createElement("label");
      const box = document.createElement("input");
      box.type = "checkbox";
      box.checked = fences.visible;
      box.addEventListener("change", () => fences.setVisible(box.checked));
      const text = document.createElement("span");
      text.textContent = "Geofences";
      label.append(box, text);
      container.append(label);
      const note = document.createElement("span");
      note.className = "fence-toggle-note";
      note.textContent = "Zoom in to see them all";
      note.hidden = true;
      container.append(note);
      fences.addEventListener("loaded", () => (note.hidden = !fences.truncated));
      L.DomEvent.disableClickPropagation(container);
      return container;
    },
  });
  return new Toggle();
}
