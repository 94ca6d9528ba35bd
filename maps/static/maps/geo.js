// Small spherical helpers: distances, bearings and longitudes. Degrees in, degrees out.

const EARTH_RADIUS_METRES = 6371008.8;
const RAD = Math.PI / 180;

/** Great-circle distance in metres (haversine). */
export function distanceMetres(lat1, lng1, lat2, lng2) {
  const dLat = (lat2 - lat1) * RAD;
  const dLng = (lng2 - lng1) * RAD;
  const a =
    Math.sin(dLat / 2) ** 2 + Math.cos(lat1 * RAD) * Math.cos(lat2 * RAD) * Math.sin(dLng / 2) ** 2;
  return 2 * EARTH_RADIUS_METRES * Math.asin(Math.min(1, Math.sqrt(a)));
}

/** Initial bearing from the first point to the second, degrees clockwise from north in [0, 360). */
export function bearingDegrees(lat1, lng1, lat2, lng2) {
  const φ1 = lat1 * RAD;
  const φ2 = lat2 * RAD;
  const Δλ = (lng2 - lng1) * RAD;
  const y = Math.sin(Δλ) * Math.cos(φ2);
  const x = Math.cos(φ1) * Math.sin(φ2) - Math.sin(φ1) * Math.cos(φ2) * Math.cos(Δλ);
  return ((Math.atan2(y, x) / RAD) % 360 + 360) % 360;
}

/** Fold a longitude into [-180, 180). */
export function wrapLongitude(longitude) {
  if (longitude >= -180 && longitude < 180) return longitude;
  return ((((longitude + 180) % 360) + 360) % 360) - 180;
}

/** The copy of `longitude` (shifted by whole turns) nearest to `reference`, for drawing across the antimeridian. */
export function nearestLongitude(longitude, reference) {
  return longitude + 360 * Math.round((reference - longitude) / 360);
}

/** The point `metres` from a start along an initial bearing (degrees clockwise from north), on the sphere. */
export function destinationPoint(latitude, longitude, bearing, metres) {
  const δ = metres / EARTH_RADIUS_METRES;
  const θ = bearing * RAD;
  const φ1 = latitude * RAD;
  const λ1 = longitude * RAD;
  const sinφ2 = Math.sin(φ1) * Math.cos(δ) + Math.cos(φ1) * Math.sin(δ) * Math.cos(θ);
  const φ2 = Math.asin(Math.max(-1, Math.min(1, sinφ2)));
  const λ2 = λ1 + Math.atan2(Math.sin(θ) * Math.sin(δ) * Math.cos(φ1), Math.cos(δ) - Math.sin(φ1) * sinφ2);
  return [φ2 / RAD, λ2 / RAD];
}
