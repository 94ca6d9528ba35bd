// The land of a world-atlas TopoJSON file as polygons ready to draw. Decoded
// here from the TopoJSON spec (quantised, delta-encoded arcs stitched into
// rings) rather than with topojson-client, so that a worker (land-worker.js)
// can run it: the 1:10m file's 400,000 points would hold the page's main
// thread for most of a second. Pure, apart from the fetch.

/**
 * @typedef {object} LandPolygon
 * @property {Float64Array[]} rings  the outer ring, then its holes: longitude, latitude pairs
 * @property {number} west
 * @property {number} east
 * @property {number} south
 * @property {number} north
 */

/** The land polygons of the TopoJSON file at `url`. */
export async function fetchLandPolygons(url) {
  const response = await fetch(url, { credentials: "same-origin" });
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  return landPolygons(await response.json());
}

/**
 * The polygons of a topology's object `land`. Natural Earth cuts land at the
 * antimeridian, so some rings jump from 180 to -180; drawn flat, that jump is
 * a line across the whole map. Every ring is made continuous (it may then
 * reach past ±180), each polygon centred on the main world with its holes
 * beside it; a map draws copies at ±360° for the other side.
 * @returns {LandPolygon[]}
 */
export function landPolygons(topology) {
  const arcs = decodeArcs(topology);
  const polygons = [];
  for (const geometry of geometriesOf(topology.objects.land)) {
    const parts = geometry.type === "Polygon" ? [geometry.arcs] : geometry.type === "MultiPolygon" ? geometry.arcs : [];
    for (const [outer, ...holes] of parts) {
      const shell = unwrap(ringOf(outer, arcs));
      const box = boundsOf(shell);
      const middle = (box.west + box.east) / 2;
      const centring = -360 * Math.floor((middle + 180) / 360);
      const rings = [shift(shell, centring)];
      for (const hole of holes) {
        const ring = unwrap(ringOf(hole, arcs));
        const { west, east } = boundsOf(ring);
        // A hole stays beside its shell, whichever side of ±180 each was cut to.
        rings.push(shift(ring, centring + 360 * Math.round((middle - (west + east) / 2) / 360)));
      }
      polygons.push({ rings, west: box.west + centring, east: box.east + centring, south: box.south, north: box.north });
    }
  }
  return polygons;
}

function geometriesOf(object) {
  return object.type === "GeometryCollection" ? object.geometries.flatMap(geometriesOf) : [object];
}

/** Every arc as absolute longitude, latitude pairs. */
function decodeArcs({ arcs, transform }) {
  const [scaleX, scaleY] = transform?.scale ?? [1, 1];
  const [moveX, moveY] = transform?.translate ?? [0, 0];
  return arcs.map((arc) => {
    const points = new Float64Array(arc.length * 2);
    let x = 0;
    let y = 0;
    arc.forEach(([dx, dy], index) => {
      // Quantised arcs hold each position as the difference from the one before.
      x = transform ? x + dx : dx;
      y = transform ? y + dy : dy;
      points[2 * index] = x * scaleX + moveX;
      points[2 * index + 1] = y * scaleY + moveY;
    });
    return points;
  });
}

/** A ring from its arcs (~index: the arc reversed); each arc after the first starts where the last ended. */
function ringOf(indexes, arcs) {
  const pieces = indexes.map((index) => ({ points: arcs[index < 0 ? ~index : index], reversed: index < 0 }));
  const length = 1 + pieces.reduce((sum, { points }) => sum + points.length / 2 - 1, 0);
  const ring = new Float64Array(length * 2);
  let at = 0;
  pieces.forEach(({ points, reversed }, piece) => {
    const count = points.length / 2;
    for (let step = piece === 0 ? 0 : 1; step < count; step += 1) {
      const index = reversed ? count - 1 - step : step;
      ring[at++] = points[2 * index];
      ring[at++] = points[2 * index + 1];
    }
  });
  return ring;
}

/** The ring without jumps of more than 180° of longitude, in place. */
function unwrap(ring) {
  let offset = 0;
  let previous = ring[0];
  for (let index = 2; index < ring.length; index += 2) {
    const longitude = ring[index];
    const step = longitude - previous;
    if (step > 180) offset -= 360;
    else if (step < -180) offset += 360;
    previous = longitude;
    ring[index] = longitude + offset;
  }
  return ring;
}

function boundsOf(ring) {
  const box = { west: Infinity, east: -Infinity, south: Infinity, north: -Infinity };
  for (let index = 0; index < ring.length; index += 2) {
    box.west = Math.min(box.west, ring[index]);
    box.east = Math.max(box.east, ring[index]);
    box.south = Math.min(box.south, ring[index + 1]);
    box.north = Math.max(box.north, ring[index + 1]);
  }
  return box;
}

/** The ring moved by `degrees` of longitude, in place. */
function shift(ring, degrees) {
  if (degrees !== 0) for (let index = 0; index < ring.length; index += 2) ring[index] += degrees;
  return ring;
}
