// The map grid (docs/protocol.md §2), the browser's half: which cells cover a viewport.
// Mirrors tracking/grid.py. A cell is [x, y] = [floor(lng / size), floor(lat / size)],
// LONGITUDE FIRST, with x folded into [-180 / size, 180 / size).

/** The grid's shape for a cell size in degrees (which divides 180 and 360). */
export function gridOf(size) {
  const columns = Math.round(360 / size);
  const rows = Math.round(180 / size);
  return { size, columns, rows, minX: Math.floor(-columns / 2), minY: Math.floor(-rows / 2) };
}

/** Fold a column number into the grid, across the antimeridian. */
export function wrapX(grid, x) {
  return ((((x - grid.minX) % grid.columns) + grid.columns) % grid.columns) + grid.minX;
}

/**
 * The span of cells covering a viewport, before listing them.
 * West and south round down, east and north round up, ends excluded.
 * `east` may exceed 180 (or `west` fall below -180) when the view crosses the
 * antimeridian; a view wider than the world covers every column once.
 */
export function coveringSpan(grid, { west, south, east, north }) {
  const s = Math.max(south, -90);
  const n = Math.min(north, 90);
  let firstX = Math.floor(west / grid.size);
  let lastX = Math.ceil(east / grid.size);
  if (lastX - firstX >= grid.columns) {
    firstX = grid.minX;
    lastX = grid.minX + grid.columns;
  }
  const firstY = Math.max(Math.floor(s / grid.size), grid.minY);
  const lastY = Math.min(Math.ceil(n / grid.size), grid.minY + grid.rows);
  const count = Math.max(0, lastX - firstX) * Math.max(0, lastY - firstY);
  return { firstX, lastX, firstY, lastY, count };
}

/**
 * The cells covering a viewport as [[x, y], ...], x-major like the server,
 * or null when there are more than `maxCells` (the caller then leaves them all).
 */
export function cellsCovering(grid, bounds, maxCells = Infinity) {
  const span = coveringSpan(grid, bounds);
  if (span.count > maxCells) return null;
  const cells = [];
  for (let x = span.firstX; x < span.lastX; x += 1) {
    for (let y = span.firstY; y < span.lastY; y += 1) cells.push([wrapX(grid, x), y]);
  }
  return cells;
}

/** The cell holding a point; longitude 180 is -180, latitude 90 is the top row. */
export function cellOf(grid, latitude, longitude) {
  const x = wrapX(grid, Math.floor(longitude / grid.size));
  const y = Math.floor(latitude / grid.size);
  return [x, Math.min(Math.max(y, grid.minY), grid.minY + grid.rows - 1)];
}

export function cellKey([x, y]) {
  return `${x},${y}`;
}

/** Whether two cell lists hold the same cells, in any order. */
export function sameCells(a, b) {
  if (a.length !== b.length) return false;
  const keys = new Set(a.map(cellKey));
  return b.every((cell) => keys.has(cellKey(cell)));
}
