// The base map: the bundled Natural Earth land outline, always there and
// offline, under an optional tile layer that is only added once a probe tile
// proves the tile server reachable (so an offline map logs one failed request,
// not one per tile).

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

/** Draw the land outline (TopoJSON at `url`) on its own canvas below the tiles, in three world copies. */
export async function addLandOutline(map, url) {
  const pane = map.createPane("land");
  pane.style.zIndex = "150"; // under the tile pane (200)
  pane.style.pointerEvents = "none";
  const renderer = L.canvas({ pane: "land", padding: 0.5 });
  try {
    const response = await fetch(url, { credentials: "same-origin" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const topology = await response.json();
    const land = continuousRings(topojson.feature(topology, topology.objects.land));
    const group = L.featureGroup([], { attribution: LAND_ATTRIBUTION });
    // Copies at ±360° keep land visible when the view crosses the antimeridian.
    for (const shift of [-360, 0, 360]) {
      L.geoJSON(land, {
        style: LAND_STYLE,
        interactive: false,
        renderer,
        pane: "land",
        coordsToLatLng: ([lng, lat]) => L.latLng(lat, lng + shift),
      }).addTo(group);
    }
    group.addTo(map);
    return group;
  } catch (error) {
    console.warn(`Land outline unavailable (${error.message}); showing the sea only.`);
    return null;
  }
}

/**
 * Natural Earth cuts land at the antimeridian, so some rings jump from 180 to
 * -180; drawn flat, that jump is a line across the whole map. Make every ring
 * continuous (it may then reach past ±180) and centre it on the main world;
 * the ±360° copies then fill the other side.
 */
function continuousRings(featureCollection) {
  for (const feature of featureCollection.features) {
    const geometry = feature.geometry;
    const polygons = geometry.type === "Polygon" ? [geometry.coordinates] : geometry.type === "MultiPolygon" ? geometry.coordinates : [];
    for (const polygon of polygons) {
      polygon.forEach((ring, index) => (polygon[index] = centreRing(unwrapRing(ring))));
    }
  }
  return featureCollection;
}

function unwrapRing(ring) {
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

function centreRing(ring) {
  let min = Infinity;
  let max = -Infinity;
  for (const [lng] of ring) {
    min = Math.min(min, lng);
    max = Math.max(max, lng);
  }
  const shift = -360 * Math.floor(((min + max) / 2 + 180) / 360);
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
