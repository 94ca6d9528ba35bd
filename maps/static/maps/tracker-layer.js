// One canvas for every tracker marker: a Leaflet layer that stamps every
// marker from a small cache of pre-drawn sprites (one per style and 5° of
// heading) and answers "which marker is under this point?". DOM markers, or
// thousands of vector paths per frame, would not keep up with 5,000 trackers
// moving every second.

import { nearestLongitude } from "./geo.js";
import { STATUS, trackerStatus } from "./status.js";

const L = window.L;

// A marker style for every status a tracker drawn can have: it has a position,
// so never "never", and an offline tracker is a ghost, left off the map (it
// stays findable in the list). A stale one is faded, grey and see-through.
const STYLES = {
  [STATUS.online]: { fill: "#0f7b74", stroke: "#ffffff", alpha: 1 },
  [STATUS.stale]: { fill: "#6f7782", stroke: "#ffffff", alpha: 0.5 },
};
// Online markers are drawn last, on top.
const DRAW_ORDER = [STATUS.stale, STATUS.online];
const ARROW = [
  [0, -9],
  [6.5, 7],
  [0, 3.5],
  [-6.5, 7],
];
const DOT_RADIUS = 5;
const SPRITE_CSS_PIXELS = 24;
const HEADING_STEPS = 72;
// Every sprite one MarkerSprites can hold: per style, a dot and an arrow per heading step.
const SPRITE_KINDS = Object.keys(STYLES).length * (HEADING_STEPS + 1);
const FLASH_COLOUR = "#e08a1e";
/** The selected tracker's halo (its trail has the colour too). */
export const SELECTED_COLOUR = "#1f6feb";
/** How long a geofence flash lasts, in ms. */
export const FLASH_MS = 1500;

export const TrackerLayer = L.Layer.extend({
  options: {
    pane: "trackers",
    /** Canvas margin around the view, as a fraction of its size, so a short pan shows markers before moveend. */
    padding: 0.1,
  },

  /**
   * @param {object} source
   * @param {() => Iterable<import("./trackers.js").Tracker>} source.trackers
   * @param {(tracker) => number|null} source.headingOf
   * @param {{onlineSeconds: number, offlineSeconds: number}} source.thresholds  of the tracker status
   */
  initialize(source, options) {
    L.setOptions(this, options);
    this._source = source;
    this._hoveredId = null;
    this._selected = null;
    this._replay = null;
    this._drawn = { ids: [], xs: new Float32Array(0), ys: new Float32Array(0), count: 0 };
    this._visibleCount = 0;
  },

  onAdd(map) {
    if (!map.getPane(this.options.pane)) map.createPane(this.options.pane);
    this._canvas = L.DomUtil.create("canvas", "tracker-canvas leaflet-zoom-animated");
    this._canvas.setAttribute("aria-hidden", "true");
    this._context = this._canvas.getContext("2d");
    this.getPane().appendChild(this._canvas);
    this._reset();
  },

  onRemove() {
    L.DomUtil.remove(this._canvas);
    this._canvas = null;
  },

  getEvents() {
    const events = { viewreset: this._reset, moveend: this._reset, resize: this._reset };
    if (this._zoomAnimated) events.zoomanim = this._animateZoom;
    return events;
  },

  /** Size and place the canvas over the view (plus padding), then draw. */
  _reset() {
    const map = this._map;
    const size = map.getSize();
    const padding = size.multiplyBy(this.options.padding).round();
    const origin = map.containerPointToLayerPoint(padding.multiplyBy(-1)).round();
    const width = size.x + 2 * padding.x;
    const height = size.y + 2 * padding.y;
    const ratio = window.devicePixelRatio || 1;
    if (!this._sprites || this._sprites.ratio !== ratio) this._sprites = new MarkerSprites(ratio);
    this._origin = origin;
    this._originLatLng = map.layerPointToLatLng(origin);
    this._zoom = map.getZoom();
    this._padding = padding;
    this._width = width;
    this._height = height;
    this._ratio = ratio;
    L.DomUtil.setPosition(this._canvas, origin);
    this._canvas.width = Math.round(width * ratio);
    this._canvas.height = Math.round(height * ratio);
    this._canvas.style.width = `${width}px`;
    this._canvas.style.height = `${height}px`;
    this.redraw();
  },

  _animateZoom(event) {
    const scale = this._map.getZoomScale(event.zoom, this._zoom);
    const offset = this._map._latLngToNewLayerPoint(this._originLatLng, event.zoom, event.center);
    L.DomUtil.setTransform(this._canvas, offset, scale);
  },

  setHovered(id) {
    if (id === this._hoveredId) return;
    this._hoveredId = id;
    this.redraw();
  },

  /**
   * The selected tracker (null: none), drawn last with a halo, from this copy
   * rather than the source's: the selection knows it also outside the watched cells.
   * @param {import("./trackers.js").Tracker|null} tracker
   */
  setSelected(tracker) {
    this._selected = tracker;
    this.redraw();
  },

  /**
   * Draw the replay's markers in place of the live ones (null: the live ones again). `replay()` gives,
   * at each drawing, the replayed trackers where they were (each with the colour of its trail as a
   * ring) and the selected one among them, if it is one.
   * @param {(() => {trackers: Array<import("./trackers.js").Tracker & {ring?: string}>, selected: any}) | null} replay
   */
  setReplay(replay) {
    this._replay = replay;
    this.redraw();
  },

  /** The ids of the markers the last drawing put on the canvas (in or near the view). */
  drawnIds() {
    return this._drawn.ids.slice(0, this._drawn.count);
  },

  /** How many markers the last drawing put inside the view. */
  visibleCount() {
    return this._visibleCount;
  },

  /**
   * Draw every marker now. Returns true while something animates (a geofence
   * flash), so the caller asks for another frame.
   */
  redraw() {
    if (!this._map || !this._canvas) return false;
    const map = this._map;
    const ctx = this._context;
    const nowMs = Date.now();
    const nowFrame = performance.now();
    const centerLng = map.getCenter().lng;
    const { thresholds, headingOf } = this._source;
    const buckets = Object.fromEntries(DRAW_ORDER.map((status) => [status, []]));
    const flashes = [];
    let hovered = null;
    const replay = this._replay ? this._replay() : null;
    const selected = replay ? replay.selected : this._selected;
    let selectedMarker = null;
    const rings = [];
    let selectedFlashUntil = 0; // a crossing flashes the map's own copy of the tracker

    const trackers = replay ? replay.trackers.filter((tracker) => tracker !== selected) : Array.from(this._source.trackers());
    if (selected) trackers.push(selected);
    const ids = new Array(trackers.length);
    const xs = new Float32Array(trackers.length);
    const ys = new Float32Array(trackers.length);
    let count = 0;
    let visible = 0;
    const margin = 12;
    const viewLeft = this._padding.x;
    const viewTop = this._padding.y;
    const viewRight = this._width - this._padding.x;
    const viewBottom = this._height - this._padding.y;

    for (const tracker of trackers) {
      const isSelected = tracker === selected;
      if (selected && !isSelected && tracker.id === selected.id) {
        selectedFlashUntil = tracker.flashUntil;
        continue; // drawn from the selection's copy
      }
      const lng = nearestLongitude(tracker.longitude, centerLng);
      const point = map.latLngToLayerPoint([tracker.latitude, lng]);
      const x = point.x - this._origin.x;
      const y = point.y - this._origin.y;
      if (x < -margin || y < -margin || x > this._width + margin || y > this._height + margin) continue;
      const status = trackerStatus(tracker.timestamp, nowMs, thresholds);
      // A ghost: not drawn, not counted, not under the pointer; unless the operator picked it (faded, in its halo).
      if (status === STATUS.offline && !isSelected) continue;
      const marker = { x, y, heading: headingOf(tracker), tracker };
      if (isSelected) selectedMarker = { ...marker, status: status === STATUS.offline ? STATUS.stale : status };
      else buckets[status].push(marker);
      if (tracker.flashUntil > nowFrame) flashes.push(marker);
      if (tracker.ring) rings.push(marker);
      if (tracker.id === this._hoveredId) hovered = marker;
      ids[count] = tracker.id;
      xs[count] = x;
      ys[count] = y;
      count += 1;
      if (x >= viewLeft && x <= viewRight && y >= viewTop && y <= viewBottom) visible += 1;
    }
    if (selectedMarker && selectedFlashUntil > nowFrame) {
      flashes.push({ ...selectedMarker, tracker: { flashUntil: selectedFlashUntil } });
    }
    this._drawn = { ids, xs, ys, count };
    this._visibleCount = visible;

    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, this._canvas.width, this._canvas.height);
    for (const name of DRAW_ORDER) stampBucket(ctx, buckets[name], name, this._sprites);
    ctx.setTransform(this._ratio, 0, 0, this._ratio, 0, 0);
    for (const marker of rings) drawRing(ctx, marker);
    for (const marker of flashes) drawFlash(ctx, marker, (marker.tracker.flashUntil - nowFrame) / FLASH_MS);
    if (selectedMarker) drawSelected(ctx, selectedMarker, this._sprites);
    if (hovered) drawHover(ctx, hovered);
    return flashes.length > 0;
  },

  /** The id of the marker nearest to a container point, within `maxPixels`; null if none. */
  nearest(containerPoint, maxPixels = 10) {
    if (!this._map || !this._origin) return null;
    const layerPoint = this._map.containerPointToLayerPoint(containerPoint);
    const x = layerPoint.x - this._origin.x;
    const y = layerPoint.y - this._origin.y;
    const { ids, xs, ys, count } = this._drawn;
    let best = null;
    let bestDistance = maxPixels * maxPixels;
    for (let i = 0; i < count; i += 1) {
      const dx = xs[i] - x;
      const dy = ys[i] - y;
      const distance = dx * dx + dy * dy;
      if (distance <= bestDistance) {
        best = ids[i];
        bestDistance = distance;
      }
    }
    return best;
  },
});

function stampBucket(ctx, markers, styleName, sprites) {
  const ratio = sprites.ratio;
  // Stamping a sprite again on the pixel where it already is shows nothing new;
  // where markers crowd (a city seen from afar) most stamps are such repeats.
  const stamped = new Set();
  for (const { x, y, heading } of markers) {
    const sprite = sprites.get(styleName, heading);
    const half = sprite.width / 2;
    const left = Math.round(x * ratio - half);
    const top = Math.round(y * ratio - half);
    // The pixel (below 2^32), then the sprite, SPRITE_KINDS wide: no two sprites share a key
    // whatever HEADING_STEPS is (exact integers while 2^32 * SPRITE_KINDS < 2^53: 700,000 steps).
    const key = ((left + 1024) * 65536 + (top + 1024)) * SPRITE_KINDS + sprite.index;
    if (stamped.has(key)) continue;
    stamped.add(key);
    ctx.drawImage(sprite, left, top);
  }
}

/** Pre-drawn markers at the screen's pixel ratio: a dot, and an arrow every 360/HEADING_STEPS degrees. */
class MarkerSprites {
  constructor(ratio) {
    this.ratio = ratio;
    this._cache = new Map();
  }

  get(styleName, heading) {
    // -1 is the dot; arrows fold into [0, HEADING_STEPS), so the cache never holds more than SPRITE_KINDS.
    const step =
      heading === null || heading === undefined
        ? -1
        : ((Math.round((heading / 360) * HEADING_STEPS) % HEADING_STEPS) + HEADING_STEPS) % HEADING_STEPS;
    const key = `${styleName}:${step}`;
    let sprite = this._cache.get(key);
    if (!sprite) {
      sprite = this._draw(STYLES[styleName], step);
      sprite.index = this._cache.size;
      this._cache.set(key, sprite);
    }
    return sprite;
  }

  _draw(style, step) {
    const size = Math.ceil(SPRITE_CSS_PIXELS * this.ratio / 2) * 2;
    const canvas = document.createElement("canvas");
    canvas.width = size;
    canvas.height = size;
    const ctx = canvas.getContext("2d");
    ctx.scale(this.ratio, this.ratio);
    ctx.translate(SPRITE_CSS_PIXELS / 2, SPRITE_CSS_PIXELS / 2);
    ctx.beginPath();
    if (step < 0) {
      ctx.arc(0, 0, DOT_RADIUS, 0, Math.PI * 2);
    } else {
      // Headings are clockwise from north; canvas angles are clockwise too (y points down).
      ctx.rotate((step * 2 * Math.PI) / HEADING_STEPS);
      ARROW.forEach(([x, y], index) => (index === 0 ? ctx.moveTo(x, y) : ctx.lineTo(x, y)));
      ctx.closePath();
    }
    ctx.globalAlpha = style.alpha;
    ctx.lineJoin = "round";
    ctx.lineWidth = 1.5;
    ctx.strokeStyle = style.stroke;
    ctx.fillStyle = style.fill;
    ctx.stroke();
    ctx.fill();
    return canvas;
  }
}

function drawFlash(ctx, { x, y }, remaining) {
  const progress = 1 - Math.max(0, Math.min(1, remaining));
  ctx.globalAlpha = 1 - progress;
  ctx.strokeStyle = FLASH_COLOUR;
  ctx.lineWidth = 3;
  ctx.beginPath();
  ctx.arc(x, y, 9 + progress * 16, 0, Math.PI * 2);
  ctx.stroke();
  ctx.globalAlpha = 1;
}

/** The selected marker on top of the others, in a halo (the context is in CSS pixels). */
function drawSelected(ctx, { x, y, heading, status }, sprites) {
  // A light disc in a blue ring cased in white: it stands out on land, sea, tiles and the overview's counts.
  ctx.beginPath();
  ctx.arc(x, y, 15, 0, Math.PI * 2);
  ctx.fillStyle = "rgba(255, 255, 255, 0.75)";
  ctx.fill();
  ctx.lineWidth = 5;
  ctx.strokeStyle = "#ffffff";
  ctx.stroke();
  ctx.lineWidth = 2.5;
  ctx.strokeStyle = SELECTED_COLOUR;
  ctx.stroke();
  const sprite = sprites.get(status, heading);
  const ratio = sprites.ratio;
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.drawImage(sprite, Math.round(x * ratio - sprite.width / 2), Math.round(y * ratio - sprite.height / 2));
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
}

/** A replayed tracker's ring, in the colour of its trail. */
function drawRing(ctx, { x, y, tracker }) {
  ctx.lineWidth = 3;
  ctx.strokeStyle = tracker.ring;
  ctx.beginPath();
  ctx.arc(x, y, 11, 0, Math.PI * 2);
  ctx.stroke();
}

function drawHover(ctx, { x, y }) {
  ctx.strokeStyle = "#1d2733";
  ctx.lineWidth = 2;
  ctx.beginPath();
  ctx.arc(x, y, 12, 0, Math.PI * 2);
  ctx.stroke();
}
