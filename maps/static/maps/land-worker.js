// A worker that reads one land outline (land.js) off the page's main thread
// and hands its rings over without copying them.

import { fetchLandPolygons } from "./land.js";

self.onmessage = async ({ data: { url } }) => {
  try {
    const polygons = await fetchLandPolygons(url);
    const buffers = polygons.flatMap((polygon) => polygon.rings.map((ring) => ring.buffer));
    self.postMessage({ polygons }, buffers);
  } catch (error) {
    self.postMessage({ error: error.message });
  }
};
