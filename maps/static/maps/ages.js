// How long ago, in words: the map's twin of tracking/ages.py, held to the same
// cases (tests/cases/ages.json). Whole units rounded down, in the largest unit
// that fits; under a second either way is "just now" (clocks disagree by that
// much), a second or more ahead is "in the future".

const UNITS = [
  ["d", 86400],
  ["h", 3600],
  ["min", 60],
  ["s", 1],
];

/** "just now", "42 s ago", "3 min ago", "5 h ago", "2 d ago", or "in the future". */
export function formatAge(ms, nowMs = Date.now()) {
  const seconds = (nowMs - ms) / 1000;
  if (seconds <= -1) return "in the future";
  const whole = Math.floor(seconds);
  for (const [unit, size] of UNITS) {
    if (whole >= size) return `${Math.floor(whole / size)} ${unit} ago`;
  }
  return "just now";
}
