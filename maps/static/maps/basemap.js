// The base map: the bundled Natural Earth land outlines (finer ones loaded as
// the zoom grows), always there and offline, under an optional tile layer
// that is only added once a probe tile proves the tile server reachable (so an
// offline map logs one failed request, not one per tile).

import { fetchLandPolygons } from "./land.js";

const L = window.L;

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
      level.polygons = await readOutline(level.url);
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
      const rings = level.polygons[index].rings.map((ring) => {
        const latLngs = new Array(ring.length / 2);
        for (let point = 0; point < latLngs.length; point += 1) {
          latLngs[point] = L.latLng(ring[2 * point + 1], ring[2 * point] + shift);
        }
        return latLngs;
      });
      layer = L.polygon(rings, this.options);
      level.layers.set(key, layer);
    }
    return layer;
  }
}

/**
 * The polygons of the land outline at `url`, read by a worker so the page
 * stays responsive while a large file is decoded; on the main thread if no
 * worker can be had.
 * @returns {Promise<import("./land.js").LandPolygon[]>}
 */
function readOutline(url) {
  const absolute = new URL(url, window.location.href).href;
  return new Promise((resolve, reject) => {
    let worker;
    try {
      worker = new Worker(new URL("./land-worker.js", import.meta.url), { type: "module" });
    } catch {
      resolve(fetchLandPolygons(absolute));
      return;
    }
    worker.onmessage = ({ data }) => {
      worker.terminate();
      if (data.error) reject(new Error(data.error));
      else resolve(data.polygons);
    };
    worker.onerror = (event) => {
      event.preventDefault();
      worker.terminate();
      resolve(fetchLandPolygons(absolute));
    };
    worker.postMessage({ url: absolute });
  });
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
