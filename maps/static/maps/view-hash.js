// The map view and the selected tracker in the URL hash, so a link opens the same picture:
//
//   #zoom/latitude/longitude                       the view (links made before selection still work)
//   #zoom/latitude/longitude/t=<tracker id>        the view, that tracker selected (details and trail shown)
//   #zoom/latitude/longitude/t=<tracker id>/follow  ... and the map following it
//
// The tracker id is the device's UUID, lower case. Parts this page does not know are
// ignored, so a later page can add its own without breaking these links here.

const TRACKER_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/**
 * @typedef {object} MapHash
 * @property {number} zoom
 * @property {number} latitude
 * @property {number} longitude
 * @property {string|null} tracker   the selected tracker's id
 * @property {boolean} follow        whether the map follows it (never without a tracker)
 */

/** Parse "#13/60.1699/24.9384" (and the forms above); null when the hash holds no valid view. */
export function parseViewHash(hash) {
  const parts = hash.replace(/^#/, "").split("/");
  if (parts.length < 3 || parts.slice(0, 3).some((part) => part.trim() === "")) return null;
  const [zoom, latitude, longitude] = parts.slice(0, 3).map(Number);
  if (![zoom, latitude, longitude].every(Number.isFinite)) return null;
  if (zoom < 0 || zoom > 30 || Math.abs(latitude) > 90 || Math.abs(longitude) > 180) return null;
  let tracker = null;
  let follow = false;
  for (const part of parts.slice(3)) {
    if (part.startsWith("t=")) {
      const id = decodeURIComponent(part.slice(2)).toLowerCase();
      if (TRACKER_ID.test(id)) tracker = id;
    } else if (part === "follow") {
      follow = true;
    }
  }
  return { zoom: Math.round(zoom), latitude, longitude, tracker, follow: follow && tracker !== null };
}

/** "#zoom/lat/lng[/t=id[/follow]]" with as many decimals as the zoom level makes meaningful. */
export function formatViewHash({ zoom, latitude, longitude, tracker = null, follow = false }) {
  const digits = Math.max(2, Math.ceil((zoom * Math.LN2) / Math.LN10));
  let hash = `#${Math.round(zoom)}/${latitude.toFixed(digits)}/${longitude.toFixed(digits)}`;
  if (tracker) hash += `/t=${tracker}${follow ? "/follow" : ""}`;
  return hash;
}

/**
 * Keep the URL hash in step with the map and the selection (replaceState: no
 * history entry per pan or pick), and follow edits to it.
 * @param {any} map  the Leaflet map
 * @param {(longitude: number) => number} wrapLongitude
 * @param {import("./selection.js").Selection} [selection]
 */
export function bindViewHash(map, wrapLongitude, selection) {
  const write = () => {
    const center = map.getCenter();
    const hash = formatViewHash({
      zoom: map.getZoom(),
      latitude: center.lat,
      longitude: wrapLongitude(center.lng),
      tracker: selection?.id ?? null,
      follow: selection?.following ?? false,
    });
    if (hash !== window.location.hash) window.history.replaceState(null, "", hash);
  };
  map.on("moveend", write);
  selection?.addEventListener("change", write);
  window.addEventListener("hashchange", () => {
    const view = parseViewHash(window.location.hash);
    if (!view) return;
    map.setView([view.latitude, view.longitude], view.zoom);
    if (selection) applySelection(selection, view);
  });
}

/** Select what a hash names, in the view the hash has, and follow it if it says so. */
export function applySelection(selection, { tracker, follow }) {
  if (tracker === null) {
    selection.clear();
    return;
  }
  selection.select(tracker, { source: "url" });
  selection.follow(follow);
}
