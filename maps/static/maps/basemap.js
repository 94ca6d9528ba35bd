// The base map: the bundled Natural Earth land outlines (finer ones loaded as
// the zoom grows), always there and offline, under an optional tile layer
// that is only added once a probe tile proves the tile server reachable (so an
// offline map logs one failed request, not one per tile).

const L = window.L;
const topojson = window.topojson;

const LAND_STYLE = {
  stroke: true,
  color: "#b9b29f",
  weight: 0.8,
  fill: true,
  fillColor: "#f3efe4",
  fillOpacity: 1,
};
const LAND_ATTRIBUTION = "Land outline: Natural Earth";

/**
 * Draw the land outlines on their own canvas below the tiles. `outlines` are
 * TopoJSON files of the same land at finer and finer scales, each with the
 * zoom from which it is worth drawing: `[{url, minZoom}]`. The coarsest loads
 * at once; a finer one the first time the map reaches its zoom (and only once).
 * Only the finest loaded outline for the current zoom is drawn, so a world
 * view stays as cheap as the coarsest file.
 */
export function addLandOutline(map, outlines) {
  const pane = map.createPane("land");
  pane.style.zIndex = "150"; // under the tile pane (200)
  pane.style.pointerEvents = "none";
  return new LandOutlines(map, outlines, L.canvas({ pane: "land", padding: 0.5 }));
}

/** The world copies an outline can be drawn in, so land shows when the view crosses the antimeridian. */
const COPY_SHIFTS = [-360, 0, 360];

/**
 * The land outlines of one map. Each polygon becomes a Leaflet layer only
 * when it first comes near the view, and only polygons near the view are on
 * the map: the 1:10m outline has 400,000 points, and Leaflet projects every
 * point of every layer on the map at each zoom.
 */
class LandOutlines {
  constructor(map, outlines, renderer) {
    this.map = map;
    this.options = { ...LAND_STYLE, interactive: false, renderer, pane: "land" };
    /** Coarsest first; `polygons` once loaded, `layers` ("shift:index" to layer) built as the view needs them. */
    this.levels = [...outlines]
      .sort((a, b) => a.minZoom - b.minZoom)
      .map(({ url, minZoom }) => ({ url, minZoom, state: "idle", polygons: [], layers: new Map() }));
    this.group = L.layerGroup([], { attribution: LAND_ATTRIBUTION }).addTo(map);
    /** The polygon layers on the map now. @type {Set<L.Polygon>} */
    this.drawn = new Set();
    map.on("zoomend moveend", this.update, this);
    this.update();
  }

  /**
   * Load the coarsest outline and the one for the current zoom (the ones
   * between are skipped when the map opens zoomed in), then draw.
   */
  update() {
    const zoom = this.map.getZoom();
    const suitable = this.levels.filter((level) => level.minZoom <= zoom);
    for (const level of new Set([this.levels[0], suitable.at(-1)])) {
      if (level?.state === "idle") this.load(level);
    }
    this.show();
  }

  async load(level) {
    level.state = "loading";
    try {
      const response = await fetch(level.url, { credentials: "same-origin" });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      level.polygons = landPolygons(await response.json());
      level.state = "loaded";
      this.show();
    } catch (error) {
      level.state = "failed";
      const fallback = this.levels.some((other) => other.state === "loaded") ? "a coarser one" : "the sea only";
      console.warn(`Land outline ${level.url} unavailable (${error.message}); showing ${fallback}.`);
    }
  }

  /** Put on the map the polygons of the finest loaded outline for this zoom that meet the view, and only those. */
  show() {
    const zoom = this.map.getZoom();
    const level = this.levels.findLast((candidate) => candidate.state === "loaded" && candidate.minZoom <= zoom);
    const wanted = new Set();
    if (level) {
      // The renderer draws half a view beyond each edge.
      const view = this.map.getBounds().pad(0.5);
      const [south, north] = [view.getSouth(), view.getNorth()];
      for (const shift of COPY_SHIFTS) {
        const [west, east] = [view.getWest() - shift, view.getEast() - shift];
        level.polygons.forEach((polygon, index) => {
          if (polygon.west <= east && polygon.east >= west && polygon.south <= north && polygon.north >= south) {
            wanted.add(this.layerOf(level, index, shift));
          }
        });
      }
    }
    for (const layer of this.drawn) if (!wanted.has(layer)) this.group.removeLayer(layer);
    for (const layer of wanted) if (!this.drawn.has(layer)) this.group.addLayer(layer);
    this.drawn = wanted;
    // Which outline is drawn, for the tests and for whoever inspects the page.
    this.map.getPane("land").dataset.outline = level?.url ?? "";
  }

  layerOf(level, index, shift) {
    const key = `${shift}:${index}`;
    let layer = level.layers.get(key);
    if (!layer) {
      const rings = level.polygons[index].rings.map((ring) => ring.map(([lng, lat]) => L.latLng(lat, lng + shift)));
      layer = L.polygon(rings, this.options);
      level.layers.set(key, layer);
    }
    return layer;
  }
}

/**
 * The polygons of a world-atlas land topology (object `land`): each its rings
 * of [lng, lat] and its bounds. Natural Earth cuts land at the antimeridian,
 * so some rings jump from 180 to -180; drawn flat, that jump is a line across
 * the whole map. Every ring is made continuous (it may then reach past ±180),
 * each polygon centred on the main world with its holes beside it; the ±360°
 * copies fill the other side.
 */
function landPolygons(topology) {
  const collection = topojson.feature(topology, topology.objects.land);
  const features = collection.type === "FeatureCollection" ? collection.features : [collection];
  const polygons = [];
  for (const { geometry } of features) {
    const parts = geometry.type === "Polygon" ? [geometry.coordinates] : geometry.type === "MultiPolygon" ? geometry.coordinates : [];
    for (const [outer, ...holes] of parts) {
      const shell = unwrapRing(outer);
      const box = boundsOf(shell);
      const centring = -360 * Math.floor(((box.west + box.east) / 2 + 180) / 360);
      const rings = [shiftRing(shell, centring)];
      for (const hole of holes) {
        const unwrapped = unwrapRing(hole);
        const { west, east } = boundsOf(unwrapped);
        // A hole stays beside its shell, whichever side of ±180 each was cut to.
        rings.push(shiftRing(unwrapped, centring + 360 * Math.round((box.west + box.east - west - east) / 720)));
      }
      polygons.push({ rings, west: box.west + centring, east: box.east + centring, south: box.south, north: box.north });
    }
  }
  return polygons;
}

/** The ring without jumps of more than 180° of longitude (the same array when it has none). */
function unwrapRing(ring) {
  let jumps = false;
  for (let index = 1; index < ring.length && !jumps; index += 1) jumps = Math.abs(ring[index][0] - ring[index - 1][0]) > 180;
  if (!jumps) return ring;
  let offset = 0;
  return ring.map(([lng, lat], index) => {
    if (index > 0) {
      const step = lng - ring[index - 1][0];
      if (step > 180) offset -= 360;
      else if (step < -180) offset += 360;
    }
    return [lng + offset, lat];
  });
}

function boundsOf(ring) {
  const box = { west: Infinity, east: -Infinity, south: Infinity, north: -Infinity };
  for (const [lng, lat] of ring) {
    if (lng < box.west) box.west = lng;
    if (lng > box.east) box.east = lng;
    if (lat < box.south) box.south = lat;
    if (lat > box.north) box.north = lat;
  }
  return box;
}

function shiftRing(ring, shift) {
  return shift === 0 ? ring : ring.map(([lng, lat]) => [lng + shift, lat]);
}

/**
 * Add the operator's tile layer over the land outline when a probe tile loads.
 * `attribution` is the operator's HTML from settings; it is shown as given.
 * Calls `onUnavailable` when the tiles cannot be had.
 */
export function addTiles(map, { url, attribution, onUnavailable }) {
  if (!url) return;
  let probeUrl;
  try {
    probeUrl = L.Util.template(url, { s: "a", z: 0, x: 0, y: 0, r: "" });
  } catch (error) {
    console.warn(`MAP_TILE_URL is not a usable tile template (${error.message}).`);
    onUnavailable?.();
    return;
  }
  const probe = new Image();
  probe.onload = () => {
    L.tileLayer(url, { attribution, maxZoom: 19, className: "map-tiles" }).addTo(map);
  };
  probe.onerror = () => onUnavailable?.();
  probe.src = probeUrl;
}
