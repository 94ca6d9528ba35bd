// The admin's map widget, on the same offline base map as the live map page
// (the bundled land outline, tiles over it when MAP_TILE_URL answers).
//
// "draw" mode (the geofence form): one shape, drawn, edited, dragged or
// removed with leaflet-geoman; every change writes the form's GeoJSON box as
// one Feature, exactly as tracking.geofences.parse_geojson reads it: a Polygon
// or MultiPolygon, or a circle as a Point with properties.radius in metres.
// Editing the box by hand redraws the map.
//
// "trail" mode (the tracker page): read-only, the tracker's recent positions,
// its latest one marked, and the fences it is inside now.

import { addLandOutline, addTiles } from "../maps/basemap.js";

const L = window.L;

const FENCE_STYLE = { color: "#1565c0", weight: 2, fillOpacity: 0.15 };
const INSIDE_STYLE = { color: "#6a1b9a", weight: 2, fillOpacity: 0.1, dashArray: "6 4" };
const NEIGHBOUR_STYLE = { color: "#555", weight: 1, fillOpacity: 0.05, dashArray: "3 3", interactive: false };
const TRAIL_STYLE = { color: "#c62828", weight: 3, opacity: 0.8 };
// Decimals kept in written coordinates: 7 is about a centimetre.
const PRECISION = 7;
const RADIUS_DECIMALS = 1;

const NO_TILES =
  "No map tiles (MAP_TILE_URL is empty or does not answer): the background is only a rough " +
  "outline of the land; the scale bar gives distances.";

function baseMap(root, config) {
  const map = L.map(root.querySelector(".fence-map-canvas"), { zoomSnap: 0.5 });
  map.setView([config.center.latitude, config.center.longitude], config.zoom);
  L.control.scale({ imperial: false, position: "bottomleft" }).addTo(map);
  addLandOutline(map, config.landUrls);
  const note = root.querySelector(".fence-map-note");
  const noTiles = () => {
    root.dataset.tiles = "unavailable";
    note.textContent = NO_TILES;
  };
  if (config.tileUrl) addTiles(map, { url: config.tileUrl, attribution: config.tileAttribution, onUnavailable: noTiles });
  else noTiles();
  return map;
}

// --- GeoJSON <-> Leaflet layers ----------------------------------------------------------------

/** A ring's corners as Leaflet latlngs, continuous across the antimeridian (a step of more
 * than 180° is the short way round), so a fence stored as 179.9 … -179.9 is not drawn the
 * long way round the world. */
function ringLatLngs(ring) {
  let offset = 0;
  return ring.slice(0, -1).map(([lng, lat], index) => {
    if (index > 0) {
      const step = lng - ring[index - 1][0];
      if (step > 180) offset -= 360;
      else if (step < -180) offset += 360;
    }
    return [lat, lng + offset];
  });
}

/** The Leaflet layer of a stored fence (Feature or bare geometry); throws saying why not. */
export function fenceLayer(data, style) {
  const feature = data && data.type === "Feature" ? data : { type: "Feature", properties: {}, geometry: data };
  const geometry = feature.geometry;
  if (!geometry || typeof geometry !== "object") throw new Error("it holds no geometry");
  const options = { ...style, pmIgnore: false };
  switch (geometry.type) {
    case "Point": {
      const radius = Number(feature.properties && feature.properties.radius);
      if (!(radius > 0)) throw new Error('a Point needs a "radius" property in metres');
      const [lng, lat] = geometry.coordinates;
      return L.circle([lat, lng], { ...options, radius });
    }
    case "Polygon":
      return L.polygon(geometry.coordinates.map(ringLatLngs), options);
    case "MultiPolygon":
      return L.polygon(geometry.coordinates.map((polygon) => polygon.map(ringLatLngs)), options);
    default:
      throw new Error(`a fence is a Polygon, MultiPolygon or circle, not ${geometry.type}`);
  }
}

/** The Feature of a drawn layer, keeping the stored feature's other properties. */
export function layerFeature(layer, properties = {}) {
  const kept = { ...properties };
  delete kept.radius;
  if (layer instanceof L.Circle) {
    const centre = layer.getLatLng();
    const round = (value) => Number(value.toFixed(PRECISION));
    return {
      type: "Feature",
      properties: { ...kept, radius: Number(layer.getRadius().toFixed(RADIUS_DECIMALS)) },
      geometry: { type: "Point", coordinates: [round(centre.lng), round(centre.lat)] },
    };
  }
  const feature = layer.toGeoJSON(PRECISION);
  return { type: "Feature", properties: kept, geometry: feature.geometry };
}

function describe(layer) {
  if (!layer) return "Nothing drawn yet: pick a tool on the map's left and draw the fence.";
  if (layer instanceof L.Circle) return `Circle, radius ${layer.getRadius().toFixed(RADIUS_DECIMALS)} m.`;
  const geometry = layer.toGeoJSON().geometry;
  const polygons = geometry.type === "Polygon" ? [geometry.coordinates] : geometry.coordinates;
  const vertices = polygons.flat().reduce((sum, ring) => sum + ring.length - 1, 0);
  const holes = polygons.reduce((sum, polygon) => sum + polygon.length - 1, 0);
  const kind = polygons.length === 1 ? "Polygon" : `Multipolygon of ${polygons.length}`;
  const holeWords = holes === 0 ? "" : holes === 1 ? ", 1 hole" : `, ${holes} holes`;
  return `${kind}, ${vertices} vertices${holeWords}.`;
}

/** The other fences, faint: named, never edited, never in the way of a click. */
function drawNeighbours(map, fences) {
  for (const fence of fences) {
    try {
      const layer = fenceLayer(fence.geojson, NEIGHBOUR_STYLE);
      layer.options.pmIgnore = true;
      layer.bindTooltip(fence.name, { permanent: true, direction: "center", className: "fence-map-neighbour" });
      layer.addTo(map);
    } catch (error) {
      console.warn(`Fence ${fence.name} cannot be drawn: ${error.message}`);
    }
  }
}

// --- Draw mode ----------------------------------------------------------------------------------

class FenceDrawing {
  constructor(root, config) {
    this.root = root;
    this.textarea = root.querySelector("textarea");
    this.radius = root.querySelector(".fence-map-radius input");
    this.radiusRow = root.querySelector(".fence-map-radius");
    this.status = root.querySelector(".fence-map-status");
    this.raw = root.querySelector("details");
    this.properties = {};
    this.layer = null;
    this.map = baseMap(root, config);
    // Only layers that opt in (the fence) are editable: never the land outline.
    L.PM.setOptIn(true);
    this.map.pm.setGlobalOptions({ allowSelfIntersection: false, snappable: false });
    this.map.pm.addControls({
      position: "topleft",
      drawMarker: false,
      drawCircleMarker: false,
      drawPolyline: false,
      drawText: false,
      rotateMode: false,
    });
    drawNeighbours(this.map, config.others || []);
    this.map.on("pm:create", (event) => this.replaceWith(event.layer));
    this.map.on("pm:remove", (event) => {
      if (event.layer === this.layer) this.replaceWith(null);
    });
    this.map.on("pm:cut", (event) => this.replaceWith(event.layer, { drawn: false }));
    this.radius.addEventListener("input", () => this.radiusTyped());
    this.textarea.addEventListener("change", () => this.readBox({ fit: true }));
    this.readBox({ fit: true });
  }

  /** Draw what the GeoJSON box holds (nothing if it is empty; a note if it cannot be drawn). */
  readBox({ fit }) {
    const text = this.textarea.value.trim();
    let layer = null;
    if (text) {
      try {
        const data = JSON.parse(text);
        layer = fenceLayer(data, FENCE_STYLE);
        this.properties = (data.type === "Feature" && data.properties) || {};
      } catch (error) {
        this.show(null);
        this.status.textContent = `The GeoJSON box holds no shape the map can draw: ${error.message}.`;
        this.raw.open = true;
        return;
      }
    }
    this.show(layer);
    if (layer && fit) this.map.fitBounds(layer.getBounds(), { padding: [24, 24], maxZoom: 17 });
  }

  show(layer) {
    if (this.layer) this.layer.remove();
    this.layer = layer;
    if (layer) {
      layer.addTo(this.map);
      for (const name of ["pm:edit", "pm:dragend", "pm:markerdragend", "pm:vertexremoved"]) {
        layer.on(name, () => this.write());
      }
    }
    this.syncControls();
  }

  replaceWith(layer) {
    if (layer) {
      layer.setStyle(FENCE_STYLE);
      layer.options.pmIgnore = false;
      L.PM.reInitLayer(layer);
      if (this.layer && this.layer !== layer) this.layer.remove();
      this.layer = null;
    }
    this.show(layer);
    this.write();
  }

  write() {
    this.textarea.value = this.layer ? JSON.stringify(layerFeature(this.layer, this.properties)) : "";
    this.syncControls();
  }

  radiusTyped() {
    const radius = Number(this.radius.value);
    if (!(this.layer instanceof L.Circle) || !(radius > 0)) return;
    this.layer.setRadius(radius);
    this.write();
  }

  syncControls() {
    const circle = this.layer instanceof L.Circle;
    this.radiusRow.hidden = !circle;
    if (circle && document.activeElement !== this.radius) {
      this.radius.value = this.layer.getRadius().toFixed(RADIUS_DECIMALS);
    }
    this.status.textContent = describe(this.layer);
    this.root.dataset.shape = this.layer ? (circle ? "circle" : "polygon") : "none";
  }
}

// --- Trail mode ---------------------------------------------------------------------------------

function showTrail(root, config) {
  const data = config.trail;
  const map = baseMap(root, config);
  const bounds = L.latLngBounds([]);
  for (const fence of data.fences) {
    try {
      fenceLayer(fence.geojson, INSIDE_STYLE).bindTooltip(fence.name, { sticky: true }).addTo(map);
    } catch (error) {
      console.warn(`Fence ${fence.name} cannot be drawn: ${error.message}`);
    }
  }
  const points = data.positions.map(([lat, lng]) => L.latLng(lat, lng));
  if (points.length > 1) L.polyline(points, TRAIL_STYLE).addTo(map);
  for (const point of points.slice(0, -1)) {
    L.circleMarker(point, { radius: 2.5, color: TRAIL_STYLE.color, weight: 1, fillOpacity: 0.8 }).addTo(map);
    bounds.extend(point);
  }
  const latest = points.at(-1);
  if (latest) {
    L.circleMarker(latest, { radius: 8, color: "#fff", weight: 3, fillColor: "#c62828", fillOpacity: 1 })
      .bindTooltip(data.latestLabel, { permanent: true, direction: "right", offset: [10, 0] })
      .addTo(map);
    bounds.extend(latest);
    if (points.length === 1) map.setView(latest, 16);
    else map.fitBounds(bounds, { padding: [30, 30], maxZoom: 17 });
  }
  root.dataset.trailPoints = String(points.length);
}

// --- Start --------------------------------------------------------------------------------------

for (const root of document.querySelectorAll(".fence-map[data-config]")) {
  const config = JSON.parse(root.dataset.config);
  if (config.mode === "draw") root.fenceDrawing = new FenceDrawing(root, config);
  else showTrail(root, config);
  root.dataset.ready = "yes";
}
