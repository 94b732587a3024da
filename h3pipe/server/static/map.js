// The interactive map of a dataset (/dashboard/map/DATASET): cells drawn on a 2D canvas
// in Web Mercator (h3-js gives each cell's outline), pan by dragging, zoom with the wheel,
// a cell's value on hover and every column's on click, pickers for the column, band and
// scenario of a sweep, and a legend in the column's units. The server sends at most
// 'server: map_cells' cells a view (coarser ones when the view holds more) and colours
// them by the static maps' own colour scale: this script only draws.
//
// No basemap unless 'server: basemap' names one: the scope's outline and a graticule
// (as 'h3pipe map' draws them) say where the cells are. window.h3map is a small hook for
// tests and the curious: project(lng, lat) -> [x, y] on the page, pixel(lng, lat) -> the
// cells layer's RGBA there, state(), view(lng, lat, zoom).
"use strict";

(() => {
  const { call, el, json, number } = H3P;
  const dataset = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop());
  const TILE = 256; // pixels of a Web Mercator world at zoom 0
  const MAX_LAT = 85.0511287798; // Web Mercator's edge
  const MAX_ZOOM = 22;
  const BINARY = "application/octet-stream";

  // -- Web Mercator: world x, y in 0..1 from (-180, MAX_LAT); x continues past 1 east ----

  const worldX = (lng) => (lng + 180) / 360;
  function worldY(lat) {
    const s = Math.sin(Math.max(-MAX_LAT, Math.min(MAX_LAT, lat)) * Math.PI / 180);
    return 0.5 - Math.log((1 + s) / (1 - s)) / (4 * Math.PI);
  }
  const lngOf = (x) => x * 360 - 180;
  const latOf = (y) => 360 / Math.PI * Math.atan(Math.exp((0.5 - y) * 2 * Math.PI)) - 90;

  // -- state ------------------------------------------------------------------------------

  const map = {
    start: null, // GET /maps/DATASET
    choice: { scope: null, resolution: null, column: null, scenario: null },
    view: { x: 0.5, y: 0.5, zoom: 1 },
    size: { w: 0, h: 0, ratio: 1 },
    cells: null, // the last answer, drawn
    hover: -1,
    loaded: 0, // answers drawn so far
    busy: false,
    error: null,
  };
  let canvases = null;
  let fetcher = null;
  let drawQueued = false;
  let fetchTimer = null;

  const scale = () => TILE * 2 ** map.view.zoom;
  const toScreen = (x, y) => [(x - map.view.x) * scale() + map.size.w / 2,
                              (y - map.view.y) * scale() + map.size.h / 2];
  const toWorld = (sx, sy) => [map.view.x + (sx - map.size.w / 2) / scale(),
                               map.view.y + (sy - map.size.h / 2) / scale()];

  // The visible world x range and the copies (whole turns of the world) of a shape
  // spanning x0..x1 that fall in it.
  function visibleX() {
    const half = map.size.w / 2 / scale();
    return [map.view.x - half, map.view.x + half];
  }
  function turns(x0, x1, [v0, v1]) {
    const out = [];
    for (let k = Math.ceil(v0 - x1); k <= Math.floor(v1 - x0); k++) out.push(k);
    return out;
  }

  // -- the page ---------------------------------------------------------------------------

  function layout() {
    const main = document.getElementById("main");
    document.getElementById("title").textContent = dataset;
    document.title = `${dataset} · map · h3pipe`;
    main.querySelector(".intro").textContent = "";
    const pick = (id, label) => el("label", { id: `${id}-box` }, label,
                                   el("select", { id, "aria-label": label }));
    const side = el("aside", { id: "side" },
      el("div", { class: "pickers" }, pick("scope", "scope"), pick("resolution", "resolution"),
         pick("statistic", "column"), pick("band", "band"), pick("scenario", "scenario")),
      el("div", { id: "legend" }),
      el("div", { id: "status", class: "note" }),
      el("div", { id: "details" }, el("p", { class: "note", text: "Click a cell to see all its values." })));
    const stage = el("div", { id: "stage" },
      el("div", { id: "tiles" }),
      el("canvas", { id: "cells" }), el("canvas", { id: "overlay" }),
      el("div", { id: "tip", hidden: true }),
      el("div", { class: "zoom" },
         el("button", { type: "button", title: "zoom in", onclick: () => zoomBy(1) }, "+"),
         el("button", { type: "button", title: "zoom out", onclick: () => zoomBy(-1) }, "−"),
         el("button", { type: "button", title: "the whole scope", onclick: fit }, "⤢")));
    main.append(el("div", { id: "mapview" }, side, stage));
    canvases = { stage, cells: stage.querySelector("#cells"),
                 overlay: stage.querySelector("#overlay"), tiles: stage.querySelector("#tiles"),
                 tip: stage.querySelector("#tip") };
    for (const id of ["scope", "resolution", "statistic", "band", "scenario"]) {
      document.getElementById(id).addEventListener("change", () => picked(id));
    }
    new ResizeObserver(resize).observe(stage);
    interact(stage);
    resize();
  }

  function resize() {
    const { stage, cells, overlay } = canvases;
    const ratio = window.devicePixelRatio || 1;
    map.size = { w: stage.clientWidth, h: stage.clientHeight, ratio };
    for (const c of [cells, overlay]) {
      c.width = Math.round(map.size.w * ratio);
      c.height = Math.round(map.size.h * ratio);
    }
    draw();
  }

  // -- the choices: scope, resolution, column (statistic and band), scenario ---------------

  function fromHash() {
    const found = new URLSearchParams(location.hash.slice(1));
    for (const k of Object.keys(map.choice)) map.choice[k] = found.get(k) || null;
  }

  function toHash() {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(map.choice)) if (v !== null && v !== "") params.set(k, v);
    history.replaceState(null, "", `#${params}`);
  }

  function options(id, values, chosen, shown = (v) => v) {
    const select = document.getElementById(id);
    select.replaceChildren(...values.map((v) => el("option", { value: v, text: shown(v) })));
    if (chosen !== null && values.includes(chosen)) select.value = chosen;
    document.getElementById(`${id}-box`).hidden = values.length === 0;
    return select.value;
  }

  function pickers() {
    const s = map.start;
    options("scope", s.scopes.map((x) => x.scope), s.scope.scope,
            (v) => s.scopes.find((x) => x.scope === v).label);
    options("resolution", s.resolutions.map(String), String(s.resolution));
    const chosen = s.columns.find((c) => c.name === map.choice.column) || s.columns[0];
    const stats = [...new Set(s.columns.map((c) => c.statistic))];
    options("statistic", stats, chosen ? chosen.statistic : null);
    bands(chosen);
    const scenarios = s.sweep ? s.sweep.scenarios : [];
    map.choice.scenario = options("scenario", scenarios, map.choice.scenario) || null;
  }

  function bands(chosen) {
    const s = map.start;
    const stat = document.getElementById("statistic").value;
    const banded = s.columns.filter((c) => c.statistic === stat && c.band);
    const band = options("band", banded.map((c) => c.band), chosen ? chosen.band : null);
    const column = s.columns.find((c) => c.statistic === stat && (c.band || null) === (band || null)) ||
      s.columns.find((c) => c.statistic === stat);
    map.choice.column = column ? column.name : null;
  }

  async function picked(id) {
    if (id === "scope" || id === "resolution") {
      map.choice.scope = document.getElementById("scope").value;
      map.choice.resolution = id === "scope" ? null : document.getElementById("resolution").value;
      await begin(true);
      return;
    }
    if (id === "statistic" || id === "band") {
      bands({ band: document.getElementById("band").value }); // the band stays, if it can
    }
    if (id === "scenario") map.choice.scenario = document.getElementById("scenario").value;
    toHash();
    load();
  }

  async function begin(refit) {
    const params = new URLSearchParams();
    if (map.choice.scope) params.set("scope", map.choice.scope);
    if (map.choice.resolution) params.set("resolution", map.choice.resolution);
    map.start = await json(`/maps/${encodeURIComponent(dataset)}?${params}`);
    map.choice.scope = map.start.scope.scope;
    map.choice.resolution = String(map.start.resolution);
    map.outline = outlineRings(map.start.scope.outline);
    pickers();
    toHash();
    if (refit || !map.fitted) fit();
    load();
  }

  // -- cells --------------------------------------------------------------------------------

  // W,S,E,N of the view (W > E across the antimeridian; every longitude when it holds
  // them all).
  function viewBox() {
    const [x0, x1] = visibleX();
    const [, y0] = toWorld(0, 0);
    const [, y1] = toWorld(0, map.size.h);
    const north = Math.min(latOf(Math.max(y0, 0)), 90);
    const south = Math.max(latOf(Math.min(y1, 1)), -90);
    const wrap = (lng) => ((lng + 180) % 360 + 360) % 360 - 180;
    let west = -180;
    let east = 180;
    if (x1 - x0 < 1) {
      west = wrap(lngOf(x0));
      east = wrap(lngOf(x1));
      if (east === -180) east = 180;
    }
    const r = (v) => Number(v.toFixed(6));
    return [r(west), r(south), r(east), r(north)];
  }

  function load() {
    clearTimeout(fetchTimer);
    fetchTimer = setTimeout(fetchCells, 120);
  }

  async function fetchCells() {
    if (!map.start || !map.choice.column || map.size.w === 0) return;
    if (fetcher) fetcher.abort();
    fetcher = new AbortController();
    const params = new URLSearchParams({ bbox: viewBox().join(","), zoom: map.view.zoom.toFixed(3),
                                         column: map.choice.column, scope: map.choice.scope,
                                         resolution: map.choice.resolution });
    if (map.choice.scenario) params.set("scenario", map.choice.scenario);
    map.busy = true;
    try {
      const response = await call(`/maps/${encodeURIComponent(dataset)}/cells?${params}`,
                                  { headers: { Accept: BINARY }, signal: fetcher.signal });
      map.cells = shapes(unpack(await response.arrayBuffer()));
      map.hover = -1;
      legend(map.cells.head);
      draw();
      map.loaded += 1;
    } catch (error) {
      if (error.name !== "AbortError" && !(error instanceof H3P.ApiError)) {
        H3P.say(`Could not draw the cells: ${error.message}`);
      }
    } finally {
      map.busy = false;
    }
  }

  // The packed answer: a JSON head, then ids (uint64), values (float64), colours (uint16).
  function unpack(buffer) {
    const length = new DataView(buffer).getUint32(0, true);
    const head = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 4, length)));
    const n = head.count;
    let at = 4 + length;
    const ids = new Uint32Array(buffer, at, 2 * n);
    at += 8 * n;
    const values = new Float64Array(buffer, at, n);
    at += 8 * n;
    return { head, ids, values, colour: new Uint16Array(buffer, at, n) };
  }

  // Each cell's outline in world coordinates (longitudes made continuous across 180),
  // its x extent, and the cells of each colour.
  function shapes(data) {
    const n = data.head.count;
    const starts = new Uint32Array(n + 1);
    const xy = new Float64Array(n * 20);
    const xmin = new Float64Array(n);
    const xmax = new Float64Array(n);
    const index = new Map();
    let k = 0;
    for (let i = 0; i < n; i++) {
      const lo = data.ids[2 * i];
      const hi = data.ids[2 * i + 1];
      index.set(`${hi}:${lo}`, i);
      const ring = h3.cellToBoundary([lo, hi]);
      starts[i] = k / 2;
      const first = ring[0][1];
      let x0 = Infinity;
      let x1 = -Infinity;
      for (const [lat, lng0] of ring) {
        let lng = lng0;
        if (lng - first > 180) lng -= 360;
        else if (lng - first < -180) lng += 360;
        const x = worldX(lng);
        xy[k++] = x;
        xy[k++] = worldY(lat);
        x0 = Math.min(x0, x);
        x1 = Math.max(x1, x);
      }
      xmin[i] = x0;
      xmax[i] = x1;
    }
    starts[n] = k / 2;
    const byColour = data.head.palette.map(() => []);
    for (let i = 0; i < n; i++) byColour[data.colour[i]].push(i);
    return Object.assign(data, { starts, xy, xmin, xmax, index, byColour });
  }

  function tracePath(ctx, c, i, dx) {
    const s = scale();
    const ox = map.size.w / 2 - map.view.x * s + dx * s;
    const oy = map.size.h / 2 - map.view.y * s;
    const { xy, starts } = c;
    ctx.moveTo(xy[2 * starts[i]] * s + ox, xy[2 * starts[i] + 1] * s + oy);
    for (let v = starts[i] + 1; v < starts[i + 1]; v++) {
      ctx.lineTo(xy[2 * v] * s + ox, xy[2 * v + 1] * s + oy);
    }
    ctx.closePath();
  }

  function drawCells() {
    const ctx = canvases.cells.getContext("2d");
    ctx.setTransform(map.size.ratio, 0, 0, map.size.ratio, 0, 0);
    ctx.clearRect(0, 0, map.size.w, map.size.h);
    const c = map.cells;
    if (!c) return;
    const seen = visibleX();
    ctx.lineWidth = 0.6; // the same colour round each cell: no hairline between neighbours
    c.byColour.forEach((members, colour) => {
      ctx.beginPath();
      for (const i of members) {
        for (const k of turns(c.xmin[i], c.xmax[i], seen)) tracePath(ctx, c, i, k);
      }
      ctx.fillStyle = ctx.strokeStyle = c.head.palette[colour];
      ctx.fill();
      ctx.stroke();
    });
  }

  // -- what is drawn over the cells: graticule, outline, scale bar, the hovered cell -------

  function draw() {
    if (drawQueued || !canvases) return;
    drawQueued = true;
    requestAnimationFrame(() => {
      drawQueued = false;
      drawCells();
      drawOverlay();
      drawTiles();
    });
  }

  function drawOverlay() {
    const ctx = canvases.overlay.getContext("2d");
    ctx.setTransform(map.size.ratio, 0, 0, map.size.ratio, 0, 0);
    ctx.clearRect(0, 0, map.size.w, map.size.h);
    graticule(ctx);
    outline(ctx);
    scaleBar(ctx);
    if (map.cells && map.hover >= 0) {
      ctx.beginPath();
      for (const k of turns(map.cells.xmin[map.hover], map.cells.xmax[map.hover], visibleX())) {
        tracePath(ctx, map.cells, map.hover, k);
      }
      ctx.lineWidth = 3;
      ctx.strokeStyle = "#ffffff";
      ctx.stroke();
      ctx.lineWidth = 1.5;
      ctx.strokeStyle = "#000000";
      ctx.stroke();
    }
  }

  // Degrees between graticule lines: at most about seven across the view, as the static
  // maps' MaxNLocator(7) ticks.
  function step(span) {
    for (const s of [1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2,
                     5, 10, 15, 30, 45, 90]) {
      if (span / s <= 7) return s;
    }
    return 90;
  }

  function degrees(value, hemispheres) {
    let v = Number(value.toFixed(6));
    if (hemispheres === "EW") {
      v = Number(((((v + 180) % 360) + 360) % 360 - 180).toFixed(6));
      if (v === -180) return "180°";
    }
    return v === 0 ? "0°" : `${Math.abs(v)}°${hemispheres[v < 0 ? 1 : 0]}`;
  }

  function graticule(ctx) {
    const [x0, x1] = visibleX();
    const [, y0] = toWorld(0, 0);
    const [, y1] = toWorld(0, map.size.h);
    const west = lngOf(x0);
    const east = lngOf(x1);
    const north = latOf(Math.max(y0, 0));
    const south = latOf(Math.min(y1, 1));
    const by = step(Math.max(east - west, north - south));
    const labels = [];
    ctx.beginPath();
    for (let lng = Math.ceil(west / by) * by; lng <= east; lng += by) {
      const [sx] = toScreen(worldX(lng), 0);
      ctx.moveTo(Math.round(sx) + 0.5, 0);
      ctx.lineTo(Math.round(sx) + 0.5, map.size.h);
      labels.push([degrees(lng, "EW"), sx + 3, map.size.h - 4]);
    }
    for (let lat = Math.ceil(Math.max(south, -85) / by) * by; lat <= Math.min(north, 85); lat += by) {
      const [, sy] = toScreen(0, worldY(lat));
      ctx.moveTo(0, Math.round(sy) + 0.5);
      ctx.lineTo(map.size.w, Math.round(sy) + 0.5);
      labels.push([degrees(lat, "NS"), 3, sy - 3]);
    }
    ctx.strokeStyle = "rgba(153, 153, 153, 0.5)";
    ctx.lineWidth = 1;
    ctx.stroke();
    // Labels dark on a light halo, readable over any colour.
    ctx.font = "11px sans-serif";
    ctx.lineWidth = 3;
    ctx.strokeStyle = "rgba(255, 255, 255, 0.85)";
    ctx.fillStyle = "#333333";
    for (const [text, x, y] of labels) {
      ctx.strokeText(text, x, y);
      ctx.fillText(text, x, y);
    }
  }

  // The outline's rings in world coordinates, continuous across 180.
  function outlineRings(geometry) {
    if (!geometry) return [];
    const polygons = geometry.type === "Polygon" ? [geometry.coordinates]
      : geometry.type === "MultiPolygon" ? geometry.coordinates : [];
    return polygons.flat().map((ring) => {
      let last = ring[0][0];
      const points = ring.map(([lng0, lat]) => {
        let lng = lng0;
        while (lng - last > 180) lng -= 360;
        while (lng - last < -180) lng += 360;
        last = lng;
        return [worldX(lng), worldY(lat)];
      });
      const xs = points.map((p) => p[0]);
      return { points, x0: Math.min(...xs), x1: Math.max(...xs) };
    });
  }

  function outline(ctx) {
    const seen = visibleX();
    ctx.beginPath();
    for (const ring of map.outline || []) {
      for (const k of turns(ring.x0, ring.x1, seen)) {
        ring.points.forEach(([x, y], i) => {
          const [sx, sy] = toScreen(x + k, y);
          if (i === 0) ctx.moveTo(sx, sy);
          else ctx.lineTo(sx, sy);
        });
      }
    }
    // Dark on a light halo, as the static maps: readable over any colour.
    ctx.lineJoin = "round";
    ctx.lineWidth = 2.6;
    ctx.strokeStyle = "rgba(255, 255, 255, 0.8)";
    ctx.stroke();
    ctx.lineWidth = 1;
    ctx.strokeStyle = (map.start && map.start.colours.outline) || "#1a1a1a";
    ctx.stroke();
  }

  function niceLength(km) {
    if (km <= 0) return 0;
    const power = 10 ** Math.floor(Math.log10(km));
    return Math.max(...[1, 2, 5].map((m) => m * power).filter((v) => v <= km));
  }

  function scaleBar(ctx) {
    const lat = latOf(map.view.y);
    const kmPerPixel = 40075.016686 * Math.cos(lat * Math.PI / 180) / scale();
    const km = niceLength(map.size.w / 5 * kmPerPixel);
    if (!km) return;
    const length = km / kmPerPixel;
    const x = 16;
    const y = map.size.h - 28;
    const label = km >= 1 ? `${number(km)} km` : `${number(km * 1000)} m`;
    ctx.fillStyle = "rgba(255, 255, 255, 0.7)";
    ctx.fillRect(x - 4, y - 16, length + 8, 24);
    ctx.fillStyle = "#000000";
    ctx.fillRect(x, y, length, 3);
    ctx.font = "11px sans-serif";
    ctx.textAlign = "center";
    ctx.fillText(label, x + length / 2, y - 4);
    ctx.textAlign = "start";
  }

  // An optional basemap (server: basemap in h3pipe.yaml): tiles under the cells.
  function drawTiles() {
    const template = map.start && map.start.basemap;
    const holder = canvases.tiles;
    if (!template) return;
    const z = Math.max(0, Math.min(19, Math.round(map.view.zoom)));
    const n = 2 ** z;
    const size = scale() / n;
    const [x0, x1] = visibleX();
    const [, y0] = toWorld(0, 0);
    const [, y1] = toWorld(0, map.size.h);
    const wanted = new Set();
    for (let tx = Math.floor(x0 * n); tx <= Math.floor(x1 * n); tx++) {
      for (let ty = Math.max(0, Math.floor(y0 * n)); ty <= Math.min(n - 1, Math.floor(y1 * n)); ty++) {
        const key = `${z}/${tx}/${ty}`;
        wanted.add(key);
        let img = holder.querySelector(`img[data-key="${key}"]`);
        if (!img) {
          const wrapped = ((tx % n) + n) % n;
          img = el("img", { "data-key": key, alt: "", draggable: "false",
                            src: template.replace("{z}", z).replace("{x}", wrapped).replace("{y}", ty) });
          holder.append(img);
        }
        const [sx, sy] = toScreen(tx / n, ty / n);
        Object.assign(img.style, { left: `${sx}px`, top: `${sy}px`, width: `${size + 0.5}px`,
                                   height: `${size + 0.5}px` });
      }
    }
    for (const img of [...holder.children]) if (!wanted.has(img.dataset.key)) img.remove();
  }

  // -- the legend ---------------------------------------------------------------------------

  function legend(head) {
    const box = document.getElementById("legend");
    const l = head.legend;
    const parts = [el("h3", { text: l.label })];
    if (l.ramp) {
      const bar = el("canvas", { class: "ramp", width: l.ramp.length, height: 1 });
      const ctx = bar.getContext("2d");
      l.ramp.forEach((colour, i) => { ctx.fillStyle = colour; ctx.fillRect(i, 0, 1, 1); });
      const ticks = [0, 0.5, 1].map((t) => {
        const v = l.vmin + t * (l.vmax - l.vmin);
        return el("span", { style: `left:${t * 100}%`, text: number(Number(v.toPrecision(6))) });
      });
      parts.push(el("div", { class: "bar" }, bar, el("div", { class: "ticks" }, ticks)));
    }
    parts.push(el("ul", { class: "entries" }, l.entries.map(([colour, text]) =>
      el("li", {}, el("span", { class: "swatch", style: `background:${colour}` }), text))));
    if (l.coarser) parts.push(el("p", { class: "coarser", text: l.coarser }));
    box.replaceChildren(...parts);
    const published = head.published_resolution;
    document.getElementById("status").textContent =
      `${number(head.count)} cells at resolution ${head.resolution}` +
      (head.resolution < published ? ` (published at ${published})` : "") +
      (head.scenario ? ` · scenario ${head.scenario}` : "");
  }

  // -- pointer: pan, zoom, hover, click -----------------------------------------------------

  function interact(stage) {
    let drag = null;
    stage.addEventListener("pointerdown", (e) => {
      if (e.target.closest(".zoom")) return;
      drag = { x: e.clientX, y: e.clientY, view: { ...map.view }, moved: false };
      stage.setPointerCapture(e.pointerId);
    });
    stage.addEventListener("pointermove", (e) => {
      if (drag) {
        const dx = e.clientX - drag.x;
        const dy = e.clientY - drag.y;
        if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
        map.view.x = drag.view.x - dx / scale();
        map.view.y = clampY(drag.view.y - dy / scale());
        draw();
        return;
      }
      hover(e);
    });
    stage.addEventListener("pointerup", (e) => {
      if (drag && drag.moved) load();
      else if (drag) details(e);
      drag = null;
    });
    stage.addEventListener("pointerleave", () => { canvases.tip.hidden = true; });
    stage.addEventListener("wheel", (e) => {
      e.preventDefault();
      zoomAt(-e.deltaY * 0.002, e);
    }, { passive: false });
    stage.addEventListener("dblclick", (e) => zoomAt(1, e));
  }

  const clampY = (y) => Math.max(0, Math.min(1, y));

  function zoomAt(by, e) {
    const rect = canvases.stage.getBoundingClientRect();
    const sx = e ? e.clientX - rect.left : map.size.w / 2;
    const sy = e ? e.clientY - rect.top : map.size.h / 2;
    const [wx, wy] = toWorld(sx, sy);
    map.view.zoom = Math.max(0, Math.min(MAX_ZOOM, map.view.zoom + by));
    map.view.x = wx - (sx - map.size.w / 2) / scale();
    map.view.y = clampY(wy - (sy - map.size.h / 2) / scale());
    draw();
    load();
  }

  const zoomBy = (by) => zoomAt(by, null);

  function cellAt(e) {
    const c = map.cells;
    if (!c) return -1;
    const rect = canvases.stage.getBoundingClientRect();
    const [x, y] = toWorld(e.clientX - rect.left, e.clientY - rect.top);
    const [lo, hi] = h3.h3IndexToSplitLong(h3.latLngToCell(latOf(y), lngOf(x), c.head.resolution));
    const found = c.index.get(`${hi}:${lo}`);
    return found === undefined ? -1 : found;
  }

  function hover(e) {
    const i = cellAt(e);
    const tip = canvases.tip;
    if (i !== map.hover) {
      map.hover = i;
      draw();
    }
    if (i < 0) {
      tip.hidden = true;
      return;
    }
    const c = map.cells;
    const value = Number.isNaN(c.values[i]) ? "null" : number(c.values[i]);
    const coarse = c.head.resolution < c.head.published_resolution;
    tip.replaceChildren(el("b", { text: `${c.head.legend.label}: ${value}` }), el("br"),
                        el("span", { text: idOf(i) }),
                        ...(coarse ? [el("span", { class: "note",
                                                   text: ` · a coarser cell: ${rule(c.head.column)}` })] : []));
    const rect = canvases.stage.getBoundingClientRect();
    tip.style.left = `${e.clientX - rect.left + 14}px`;
    tip.style.top = `${e.clientY - rect.top + 14}px`;
    tip.hidden = false;
  }

  function rule(column) {
    const found = map.start.columns.find((c) => c.name === column);
    return found ? found.coarser.text : "";
  }

  const idOf = (i) => h3.splitLongToH3Index(map.cells.ids[2 * i], map.cells.ids[2 * i + 1]);

  async function details(e) {
    const i = cellAt(e);
    const box = document.getElementById("details");
    if (i < 0) return;
    const params = new URLSearchParams({ scope: map.choice.scope, resolution: map.choice.resolution });
    if (map.choice.scenario) params.set("scenario", map.choice.scenario);
    const cell = idOf(i);
    const found = await json(`/maps/${encodeURIComponent(dataset)}/cells/${cell}?${params}`);
    const coarse = found.resolution < found.published_resolution;
    box.replaceChildren(
      el("h3", { text: `cell ${cell}` }),
      el("p", { class: "note", text: coarse
        ? `resolution ${found.resolution}: ${number(found.cells)} published cells of resolution ${found.published_resolution}, each column by its rule`
        : `resolution ${found.resolution}` }),
      H3P.table([["column", ([c]) => found.labels[c]], ["value", ([, v]) => number(v), "num"]],
                Object.entries(found.values)));
  }

  // -- fitting the scope --------------------------------------------------------------------

  function fit() {
    const b = map.start && map.start.scope.bounds;
    if (!b || !map.size.w) return;
    // The scope's box and, as the static maps leave, a margin of two cell edges and 2%:
    // the cells along its edge reach past it.
    const edge = 2 * h3.getHexagonEdgeLengthAvg(map.start.resolution, h3.UNITS.km) / 111.32;
    const span = Math.max((b[2] < b[0] ? b[2] + 360 : b[2]) - b[0], b[3] - b[1]);
    const pad = edge + 0.02 * span;
    const west = b[0] - pad / Math.max(Math.cos(Math.max(Math.abs(b[1]), Math.abs(b[3])) * Math.PI / 180), 0.05);
    const east = (b[2] < b[0] ? b[2] + 360 : b[2]) + (b[0] - west);
    const south = Math.max(b[1] - pad, -MAX_LAT);
    const north = Math.min(b[3] + pad, MAX_LAT);
    const x0 = worldX(west);
    const x1 = worldX(east);
    const y0 = worldY(north);
    const y1 = worldY(south);
    const zx = Math.log2(map.size.w * 0.9 / Math.max((x1 - x0) * TILE, 1e-9));
    const zy = Math.log2(map.size.h * 0.9 / Math.max((y1 - y0) * TILE, 1e-9));
    map.view = { x: (x0 + x1) / 2, y: (y0 + y1) / 2, zoom: Math.max(0, Math.min(MAX_ZOOM, zx, zy)) };
    map.fitted = true;
    draw();
    load();
  }

  // -- the hook -------------------------------------------------------------------------------

  window.h3map = {
    project(lng, lat) {
      const x = worldX(lng);
      const near = x + Math.round(map.view.x - x);
      const [sx, sy] = toScreen(near, worldY(lat));
      const rect = canvases.stage.getBoundingClientRect();
      return [rect.left + sx, rect.top + sy];
    },
    pixel(lng, lat) {
      const [px, py] = this.project(lng, lat);
      const rect = canvases.stage.getBoundingClientRect();
      const r = map.size.ratio;
      const data = canvases.cells.getContext("2d")
        .getImageData(Math.floor((px - rect.left) * r), Math.floor((py - rect.top) * r), 1, 1).data;
      return Array.from(data);
    },
    state() {
      const c = map.cells;
      return { loaded: map.loaded, busy: map.busy, zoom: map.view.zoom, choice: { ...map.choice },
               resolution: c ? c.head.resolution : null, count: c ? c.head.count : 0,
               legend: c ? c.head.legend : null };
    },
    view(lng, lat, zoom) {
      map.view = { x: worldX(lng), y: worldY(lat), zoom };
      draw();
      load();
    },
  };

  H3P.start(async () => {
    if (!canvases) {
      layout();
      fromHash();
    }
    await begin(false);
  });
})();
