// A tracker's status by the age of its latest position: the map's twin of
// Tracker.status (tracking/models.py), held to the same cases
// (tests/cases/status.json). The thresholds and the words for each status come
// from the server, in the page's config.

/** The status values, as TrackerStatus in tracking/models.py names them. */
export const STATUS = Object.freeze({ online: "online", stale: "stale", offline: "offline", never: "never" });

/**
 * Online up to `onlineSeconds` old (inclusive, and when ahead of now), stale up
 * to `offlineSeconds` old (inclusive), offline after; "never" without a position.
 * @param {number|null} timestamp  Unix ms of the latest position
 * @param {number} nowMs
 * @param {{onlineSeconds: number, offlineSeconds: number}} thresholds
 */
export function trackerStatus(timestamp, nowMs, { onlineSeconds, offlineSeconds }) {
  if (timestamp === null || timestamp === undefined) return STATUS.never;
  const ageMs = nowMs - timestamp;
  if (ageMs <= onlineSeconds * 1000) return STATUS.online;
  if (ageMs <= offlineSeconds * 1000) return STATUS.stale;
  return STATUS.offline;
}
