// The map view in the URL hash, "#zoom/latitude/longitude", so a view can be shared.

/** Parse "#13/60.1699/24.9384"; null when the hash is not a valid view. */
export function parseViewHash(hash) {
  const parts = hash.replace(/^#/, "").split("/");
  if (parts.length !== 3 || parts.some((part) => part.trim() === "")) return null;
  const [zoom, latitude, longitude] = parts.map(Number);
  if (![zoom, latitude, longitude].every(Number.isFinite)) return null;
  if (zoom < 0 || zoom > 30 || Math.abs(latitude) > 90 || Math.abs(longitude) > 180) return null;
  return { zoom: Math.round(zoom), latitude, longitude };
}

/** "#zoom/lat/lng" with as many decimals as the zoom level makes meaningful. */
export function formatViewHash({ zoom, latitude, longitude }) {
  const digits = Math.max(2, Math.ceil((zoom * Math.LN2) / Math.LN10));
  return `#${Math.round(zoom)}/${latitude.toFixed(digits)}/${longitude.toFixed(digits)}`;
}

/** Keep the URL hash in step with the map (replaceState: no history entry per pan), and follow edits to it. */
export function bindViewHash(map, wrapLongitude) {
  map.on("moveend", () => {
    const center = map.getCenter();
    const hash = formatViewHash({
      zoom: map.getZoom(),
      latitude: center.lat,
      longitude: wrapLongitude(center.lng),
    });
    if (hash !== window.location.hash) window.history.replaceState(null, "", hash);
  });
  window.addEventListener("hashchange", () => {
    const view = parseViewHash(window.location.hash);
    if (view) map.setView([view.latitude, view.longitude], view.zoom);
  });
}
