// The WebGL map of Jointscope: a Streamlit components-v2 renderer on regl-scatterplot.
//
// Data path (see pages/ui/scatter.py): Python sends the point columns once per data version as an Arrow table
// (x, y float32; c uint8/uint16 colour code), and small JSON for everything else. Heavy parts ("blobs":
// points, selected rows, neighbour lines, density grid, thumbnails) carry a key; when Python already sent a
// key to this browser it sends the key alone and the component takes the payload from its store. A key the
// store lacks is asked for again with the "missing" trigger. State goes up with setStateValue: the selection
// as base64 packed int32 row numbers (a trigger), the hovered row, the settled view.
import KDBush from 'kdbush';
import createScatterplot, { createRenderer } from 'regl-scatterplot';

const GREY = '#c8c8c8';
const STORE_NAME = '__jointscopeScatterStore';
const STORE = window[STORE_NAME] || (window[STORE_NAME] = new Map()); // `${uid}:${kind}` -> {key, value}
const INSTANCES = new WeakMap(); // parentElement -> MapView
const REGISTRY = window.jointscopeScatter || (window.jointscopeScatter = new Map()); // uid -> MapView (tests, tools)
const VIEW_SETTLE_MS = 250;
const HOVER_SETTLE_MS = 120;
const HOVER_RADIUS_PX = 6; // the pointer hovers (and a click selects) the nearest point at most this far away
// while the camera moves, a map above LOD_MIN points draws an even sample of about LOD_POINTS of them
// (software WebGL spends about a microsecond a point a frame); all of them again once the view settles
const LOD_MIN = 400000;
const LOD_POINTS = 200000;
// regl-scatterplot is handed an empty spatial index: it would only use one for its own hover and click, and this
// map finds both itself (nearestAt) in its own index, built after the first draw (see buildIndex)
const EMPTY_INDEX = (() => {
  const index = new KDBush(0, 64, Float32Array);
  index.finish();
  return index.data;
})();
const MAX_RINGED = 50; // a selection of at most this many points is ringed as well (one point among many greys)

// ---- small helpers -------------------------------------------------------------------------------------
function linearScale(domain, range) {
  // the d3-scale subset regl-scatterplot uses: call, domain(), range(), invert, copy
  let d = domain.slice();
  let r = range.slice();
  const scale = (v) => r[0] + ((v - d[0]) / (d[1] - d[0])) * (r[1] - r[0]);
  scale.domain = (nd) => (nd === undefined ? d.slice() : ((d = nd.slice()), scale));
  scale.range = (nr) => (nr === undefined ? r.slice() : ((r = nr.slice()), scale));
  scale.invert = (p) => d[0] + ((p - r[0]) / (r[1] - r[0])) * (d[1] - d[0]);
  scale.copy = () => linearScale(d, r);
  return scale;
}

function b64FromInt32(arr) {
  const bytes = new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength);
  let out = '';
  const CHUNK = 0x8000;
  for (let i = 0; i < bytes.length; i += CHUNK) {
    out += String.fromCharCode.apply(null, bytes.subarray(i, i + CHUNK));
  }
  return btoa(out);
}

function columnArray(table, name) {
  const col = table && table.getChild ? table.getChild(name) : null;
  return col ? col.toArray() : null;
}

function hexToRgb(hex) {
  const h = String(hex || '').replace('#', '');
  const full = h.length === 3 ? h.split('').map((c) => c + c).join('') : h.slice(0, 6);
  const v = parseInt(full, 16);
  if (!Number.isFinite(v) || full.length !== 6) return [128, 128, 128];
  return [(v >> 16) & 255, (v >> 8) & 255, v & 255];
}

function el(tag, cls, parent) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (parent) parent.appendChild(node);
  return node;
}

const CSS = `
.js-scatter{position:relative;width:100%;overflow:hidden;background:#fff;font:12px system-ui,sans-serif;
  user-select:none;border:1px solid rgba(49,51,63,.15);border-radius:6px;box-sizing:border-box}
.js-scatter canvas{position:absolute;left:0;top:0;width:100%;height:100%}
.js-scatter .js-density{pointer-events:none;z-index:0}
.js-scatter .js-gl{z-index:1}
.js-scatter .js-overlay{pointer-events:none;z-index:2}
.js-scatter .js-labels{position:absolute;inset:0;pointer-events:none;z-index:3}
.js-scatter .js-label{position:absolute;transform:translate(-50%,-50%);pointer-events:auto;cursor:pointer;
  background:rgba(255,255,255,.78);border:1px solid rgba(0,0,0,.15);border-radius:4px;padding:1px 5px;
  font-weight:600;color:#222;white-space:nowrap;font-size:12px}
.js-scatter .js-label:hover{background:#fff;border-color:#555}
.js-scatter .js-toolbar{position:absolute;top:6px;right:6px;z-index:5;display:flex;gap:2px;
  background:rgba(255,255,255,.9);border:1px solid rgba(0,0,0,.15);border-radius:5px;padding:2px}
.js-scatter .js-toolbar button{border:0;background:transparent;padding:3px 7px;border-radius:3px;cursor:pointer;
  font:12px system-ui,sans-serif;color:#333}
.js-scatter .js-toolbar button.on{background:#e3e8f4;color:#123}
.js-scatter .js-box{position:absolute;z-index:4;border:1px dashed #333;background:rgba(60,90,200,.08);display:none;
  pointer-events:none}
.js-scatter .js-boxcatch{position:absolute;inset:0;z-index:4;display:none;cursor:crosshair}
.js-scatter .js-tip{position:absolute;z-index:6;pointer-events:none;background:rgba(255,255,255,.96);
  border:1px solid rgba(0,0,0,.2);border-radius:4px;padding:3px 6px;max-width:320px;white-space:pre-wrap;
  color:#222;display:none;box-shadow:0 1px 4px rgba(0,0,0,.15)}
.js-scatter .js-status{position:absolute;left:8px;bottom:6px;z-index:5;color:#555;font-size:11px;
  background:rgba(255,255,255,.8);padding:1px 4px;border-radius:3px}
.js-scatter .js-legend{position:absolute;left:6px;top:6px;z-index:5;max-height:45%;max-width:40%;overflow:hidden;pointer-events:none;
  background:rgba(255,255,255,.9);border:1px solid rgba(0,0,0,.15);border-radius:5px;padding:4px 7px;font-size:11px;
  color:#222;display:none}
.js-scatter .js-legend .js-ltitle{font-weight:600;margin-bottom:2px}
.js-scatter .js-legend .js-lrow{display:flex;align-items:center;gap:5px;white-space:nowrap;line-height:16px}
.js-scatter .js-legend .js-swatch{width:10px;height:10px;border-radius:50%;flex:none;border:1px solid rgba(0,0,0,.2)}
.js-scatter .js-legend .js-ramp{height:10px;width:140px;border:1px solid rgba(0,0,0,.2);margin:2px 0}
.js-scatter .js-legend .js-lends{display:flex;justify-content:space-between;width:140px;color:#444}
.js-scatter .js-msg{position:absolute;inset:0;display:flex;align-items:center;justify-content:center;color:#666;
  z-index:4;pointer-events:none}
`;

// ---- the map -------------------------------------------------------------------------------------------
class MapView {
  constructor(parent) {
    this.parent = parent;
    const style = document.createElement('style');
    style.textContent = CSS;
    parent.appendChild(style);
    this.root = el('div', 'js-scatter', parent);
    this.root.dataset.points = '0';
    this.root.dataset.ready = '0';
    this.densityCanvas = el('canvas', 'js-density', this.root);
    this.canvas = el('canvas', 'js-gl', this.root);
    this.overlay = el('canvas', 'js-overlay', this.root);
    this.labelLayer = el('div', 'js-labels', this.root);
    this.boxCatch = el('div', 'js-boxcatch', this.root);
    this.boxEl = el('div', 'js-box', this.root);
    this.tip = el('div', 'js-tip', this.root);
    this.status = el('div', 'js-status', this.root);
    this.msg = el('div', 'js-msg', this.root);
    this.legendEl = el('div', 'js-legend', this.root);
    this.toolbar = el('div', 'js-toolbar', this.root);
    this.buttons = {};
    for (const [mode, label, title] of [
      ['pan', 'Pan', 'Drag pans, wheel zooms'],
      ['lasso', 'Lasso', 'Draw a lasso to select points'],
      ['box', 'Box', 'Drag a rectangle to select points'],
    ]) {
      const b = el('button', '', this.toolbar);
      b.textContent = label;
      b.title = title;
      b.dataset.mode = mode;
      b.addEventListener('click', () => this.setMode(mode));
      this.buttons[mode] = b;
    }
    const png = el('button', '', this.toolbar);
    png.textContent = 'PNG';
    png.title = 'Save the map as a PNG image';
    png.dataset.action = 'png';
    png.addEventListener('click', () => this.savePng());
    this.mode = 'pan';
    this.buttons.pan.classList.add('on');

    this.plot = null;
    this.n = 0; // rows sent by Python
    this.drawn = 0; // finite points drawn
    this.rowOf = null; // Int32Array drawn index -> row (null: identity)
    this.idxOf = null; // Int32Array row -> drawn index or -1 (null: identity)
    this.xs = null; // Float32Array data x of drawn points
    this.ys = null;
    this.rawCodes = null; // colour code per row (null: all 0)
    this.pointsKey = null;
    this.selectedKey = undefined;
    this.selectedRows = null;
    this.lines = null;
    this.linesKey = null;
    this.density = null;
    this.densityKey = null;
    this.densityImage = null;
    this.thumbs = [];
    this.thumbsKey = null;
    this.thumbImages = new Map(); // url -> HTMLImageElement
    this.labels = [];
    this.hoverRow = null;
    this.hoverCaption = null;
    this.appliedViewKey = null;
    this.reportedView = null;
    this.viewTimer = null;
    this.hoverTimer = null;
    this.overlayQueued = false;
    this.selectionCounter = 0;
    this.lastData = null;
    this.resizeObserver = new ResizeObserver(() => this.resize());
    this.resizeObserver.observe(this.root);
    this.boxCatch.addEventListener('pointerdown', (e) => this.boxStart(e));
    this.root.addEventListener('pointermove', (e) => this.onPointerMove(e), { passive: true });
    this.root.addEventListener('pointerleave', () => {
      this.pointerAt = null;
      if (this.hoverRow !== null) this.onHover(null);
    });
  }

  // -- Streamlit bridge ----------------------------------------------------------------------------------
  update(data, setStateValue, setTriggerValue) {
    this.setStateValue = setStateValue;
    this.setTriggerValue = setTriggerValue;
    data = data || {};
    this.uid = String(data.uid || 'map');
    REGISTRY.set(this.uid, this);
    this.root.dataset.uid = this.uid;
    const height = Math.max(120, Number(data.height) || 640);
    if (this.root.style.height !== `${height}px`) this.root.style.height = `${height}px`;
    this.lastData = data;
    this.updates = (this.updates || 0) + 1;
    this.root.dataset.updates = String(this.updates);

    const missing = [];
    const points = this.blob('points', data.points_key, data.points, missing);
    const colours = this.blob('colours', data.colours_key, data.colours, missing);
    const selected = this.blob('selected', data.selected_key, data.selected, missing);
    const lines = this.blob('lines', data.lines_key, data.lines, missing);
    const densityIn = data.density && data.density_z ? { ...data.density, z: data.density_z } : data.density;
    const density = this.blob('density', data.density_key, densityIn, missing);
    const thumbs = this.blob('thumbs', data.thumbs_key, data.thumbs, missing);
    if (missing.length) {
      // Python believes this browser holds these parts; it does not (e.g. its store was cleared): ask again.
      this.showMessage('Loading…');
      this.setTriggerValue('missing', missing);
      return;
    }
    this.showMessage('');
    if (data.selection_token !== undefined) this.confirmSelection(data.selection_token);
    const palette = (data.palette && data.palette.length ? data.palette : ['#1f77b4']).map(String);
    const paletteChanged = JSON.stringify(palette) !== JSON.stringify(this.palette);
    this.palette = palette;
    this.pointSize = Number(data.point_size) || null;
    try {
      const pointsChanged = data.points_key !== this.pointsKey;
      if (pointsChanged) {
        // timings of the last new map, ms since navigation (read by bench/map_component.py)
        this.root.dataset.tData = String(Math.round(performance.now()));
        this.setPoints(points, data.points_key, Number(data.n) || 0);
        this.root.dataset.tPoints = String(Math.round(performance.now()));
      }
      const coloursChanged = pointsChanged || data.colours_key !== this.coloursKey || paletteChanged;
      if (coloursChanged) {
        this.coloursKey = data.colours_key;
        this.rawCodes = columnArray(colours, 'c');
      }
      const selChanged = pointsChanged || data.selected_key !== this.selectedKey;
      if (selChanged) this.setSelected(selected, data.selected_key);
      if (pointsChanged || data.lines_key !== this.linesKey) this.setLines(lines, data.lines_key);
      if (pointsChanged || data.density_key !== this.densityKey) this.setDensity(density, data.density_key);
      if (pointsChanged || data.thumbs_key !== this.thumbsKey) this.setThumbs(thumbs, data.thumbs_key);
      this.setLabels(data.labels || []);
      this.setLegend(data.legend || null);
      this.setHover(data.hover || null);
      const sizeChanged = this.pointSize !== this.drawnSize;
      if (pointsChanged || coloursChanged || selChanged || sizeChanged) this.redrawPoints();
      this.applyView(data.view || null);
      this.queueOverlay();
    } catch (err) {
      const text = err && err.message ? err.message : String(err);
      this.showMessage(`The map could not be drawn: ${text}`);
      this.root.dataset.error = text;
    }
  }

  blob(kind, key, payload, missing) {
    const slot = `${this.uid}:${kind}`;
    if (key === null || key === undefined) {
      STORE.delete(slot);
      return null;
    }
    if (payload !== null && payload !== undefined) {
      STORE.set(slot, { key, value: payload });
      return payload;
    }
    const have = STORE.get(slot);
    if (have && have.key === key) return have.value;
    missing.push(key);
    return null;
  }

  showMessage(text) {
    this.msg.textContent = text;
    this.msg.style.display = text ? 'flex' : 'none';
  }

  // -- points ----------------------------------------------------------------------------------------------
  setPoints(table, key, n) {
    this.pointsKey = key;
    this.n = n;
    const x = columnArray(table, 'x');
    const y = columnArray(table, 'y');
    const rows = x ? x.length : 0;
    // one pass: how many points have both coordinates, and their extent
    let finite = 0;
    let x0 = Infinity;
    let x1 = -Infinity;
    let y0 = Infinity;
    let y1 = -Infinity;
    for (let i = 0; i < rows; i++) {
      const xv = x[i];
      const yv = y[i];
      if (xv - xv !== 0 || yv - yv !== 0) continue; // NaN or ±Infinity
      finite++;
      if (xv < x0) x0 = xv;
      if (xv > x1) x1 = xv;
      if (yv < y0) y0 = yv;
      if (yv > y1) y1 = yv;
    }
    let xs;
    let ys;
    if (finite === rows) {
      xs = x;
      ys = y;
      this.rowOf = null;
      this.idxOf = null;
    } else {
      xs = new Float32Array(finite);
      ys = new Float32Array(finite);
      const rowOf = new Int32Array(finite);
      const idxOf = new Int32Array(rows).fill(-1);
      let j = 0;
      for (let i = 0; i < rows; i++) {
        if (x[i] - x[i] === 0 && y[i] - y[i] === 0) {
          xs[j] = x[i];
          ys[j] = y[i];
          rowOf[j] = i;
          idxOf[i] = j;
          j++;
        }
      }
      this.rowOf = rowOf;
      this.idxOf = idxOf;
    }
    this.xs = xs;
    this.ys = ys;
    this.drawn = finite;
    // a square data domain around the points, so both axes keep one scale
    if (!finite) {
      x0 = -1; x1 = 1; y0 = -1; y1 = 1;
    }
    const half = Math.max(x1 - x0, y1 - y0, 1e-9) / 2 * 1.04;
    const cx = (x0 + x1) / 2;
    const cy = (y0 + y1) / 2;
    this.domain = { x0: cx - half, x1: cx + half, y0: cy - half, y1: cy + half };
    const nx = new Float32Array(finite);
    const ny = new Float32Array(finite);
    const sx = 2 / (this.domain.x1 - this.domain.x0);
    const sy = 2 / (this.domain.y1 - this.domain.y0);
    const dx0 = this.domain.x0;
    const dy0 = this.domain.y0;
    for (let i = 0; i < finite; i++) {
      nx[i] = -1 + (xs[i] - dx0) * sx;
      ny[i] = -1 + (ys[i] - dy0) * sy;
    }
    this.nx = nx;
    this.ny = ny;
    this.kd = null; // built after the first draw of these points (buildIndex), or at the first hover or click
    this.ensurePlot();
    this.plot.set({
      xScale: linearScale([this.domain.x0, this.domain.x1], [0, 1]),
      yScale: linearScale([this.domain.y0, this.domain.y1], [1, 0]),
    });
    this.appliedViewKey = null;
    this.root.dataset.points = String(finite);
    this.root.dataset.rows = String(rows);
    this.status.textContent = finite === rows ? `${finite.toLocaleString()} points`
      : `${finite.toLocaleString()} points (${(rows - finite).toLocaleString()} without coordinates)`;
  }

  ensurePlot() {
    if (this.plot) return;
    // hover is found here, from the spatial index (pointerHover): regl-scatterplot's own hover redraws every
    // point each time the hovered point changes, seconds per pointer move for a million points in software GL.
    // It hovers only while it believes the pointer is inside its canvas; these listeners, added before its own,
    // keep it believing the pointer is outside (its clicks, pans and zooms do not depend on that).
    for (const type of ['mouseenter', 'mouseleave']) {
      this.canvas.addEventListener(type, (e) => {
        if (!this.passPointerEvent) e.stopImmediatePropagation();
      }, true);
    }
    // our own renderer on an offscreen canvas the size of the map: regl-scatterplot's default one is as large
    // as the window, and every frame clears, tone-maps and copies all of it (most of a frame in software GL)
    const width = Math.max(1, this.root.clientWidth);
    const height = Math.max(1, this.root.clientHeight);
    this.renderer = createRenderer({ canvas: document.createElement('canvas') });
    this.renderer.resize(width, height);
    this.plot = createScatterplot({
      renderer: this.renderer,
      canvas: this.canvas,
      width,
      height,
      backgroundColor: [1, 1, 1, 0],
      pointSize: 3,
      pointSizeSelected: 2,
      pointOutlineWidth: 1,
      opacityInactiveMax: 1,
      lassoMinDelay: 10,
      lassoMinDist: 2,
      lassoInitiator: false,
      lassoOnLongPress: false,
      deselectOnDblClick: true,
      deselectOnEscape: true,
      actionKeyMap: {},
      mouseMode: 'panZoom',
      performanceMode: false,
      showReticle: false,
    });
    this.plot.subscribe('view', () => this.onView());
    this.plot.subscribe('select', ({ points }) => this.onSelect(points));
    this.plot.subscribe('deselect', () => this.onDeselect());
    this.passPointerEvent = true;
    this.canvas.dispatchEvent(new MouseEvent('mouseleave'));
    this.passPointerEvent = false;
  }

  // -- hover -----------------------------------------------------------------------------------------------
  onPointerMove(e) {
    this.pointerAt = [e.clientX, e.clientY];
    if (this.hoverQueued) return;
    this.hoverQueued = true;
    requestAnimationFrame(() => {
      this.hoverQueued = false;
      this.pointerHover();
    });
  }

  buildIndex() {
    // the spatial index of the drawn points (hover, click), from the typed arrays: once per map, after its first
    // draw (at a million points it takes about half a second that the first render need not wait for)
    if (this.kd || !this.nx) return this.kd;
    const n = this.drawn;
    const index = new KDBush(n, 64, Float32Array);
    const nx = this.nx;
    const ny = this.ny;
    for (let i = 0; i < n; i++) index.add(nx[i], ny[i]);
    index.finish();
    this.kd = index;
    this.root.dataset.indexed = String(this.pointsKey);
    return index;
  }

  pointerHover() {
    // the drawn point nearest the pointer; none while a drag, lasso or box is under way or the camera moves
    if (!this.pointerAt || !this.kd || !this.plot || this.pointerDown || this.lod || this.mode !== 'pan') return;
    const best = this.nearestAt(this.pointerAt[0], this.pointerAt[1]);
    if (best === null) {
      if (this.hoverRow !== null) this.onHover(null);
      return;
    }
    const row = best < 0 ? null : (this.rowOf ? this.rowOf[best] : best);
    if (row !== this.hoverRow) this.onHover(best < 0 ? null : best);
  }

  nearestAt(clientX, clientY) {
    // the drawn point nearest a client position within HOVER_RADIUS_PX (-1: none), from the spatial index (in
    // the [-1, 1] square the points are drawn in); null when the position is outside the map
    const rect = this.canvas.getBoundingClientRect();
    const px = clientX - rect.left;
    const py = clientY - rect.top;
    if (px < 0 || py < 0 || px > rect.width || py > rect.height || !this.drawn) return null;
    const kd = this.buildIndex();
    const d = this.domain;
    const [x, y] = this.dataOfClient(rect, clientX, clientY);
    const [xr, yr] = this.dataOfClient(rect, clientX + HOVER_RADIUS_PX, clientY + HOVER_RADIUS_PX);
    const sx = 2 / (d.x1 - d.x0);
    const sy = 2 / (d.y1 - d.y0);
    const a = -1 + (x - d.x0) * sx;
    const b = -1 + (y - d.y0) * sy;
    const ra = Math.abs(xr - x) * sx;
    const rb = Math.abs(yr - y) * sy;
    let best = -1;
    let bestD = 1;
    for (const i of kd.range(a - ra, b - rb, a + ra, b + rb)) {
      const u = (this.nx[i] - a) / ra;
      const v = (this.ny[i] - b) / rb;
      const dd = u * u + v * v;
      if (dd <= bestD) {
        bestD = dd;
        best = i;
      }
    }
    return best;
  }

  colourCodes() {
    // one categorical code per drawn point; with a caller's selection every other point takes the grey slot
    const k = this.palette.length;
    const n = this.drawn;
    const out = new Uint16Array(n);
    const codes = this.rawCodes;
    if (codes) {
      const rowOf = this.rowOf;
      for (let i = 0; i < n; i++) {
        const c = codes[rowOf ? rowOf[i] : i];
        out[i] = c < k ? c : 0;
      }
    }
    if (this.selectedRows) {
      const keep = new Uint8Array(n);
      for (const r of this.selectedRows) {
        const i = this.idxOf ? (r >= 0 && r < this.idxOf.length ? this.idxOf[r] : -1) : (r >= 0 && r < n ? r : -1);
        if (i >= 0) keep[i] = 1;
      }
      for (let i = 0; i < n; i++) if (!keep[i]) out[i] = k;
    }
    return out;
  }

  redrawPoints() {
    if (!this.plot) return;
    const colours = this.palette.concat([GREY]);
    const n = this.drawn;
    this.drawnSize = this.pointSize;
    if (!n) {
      this.plot.clear();
      this.root.dataset.ready = '1';
      this.root.dataset.drawnKey = String(this.pointsKey);
      this.showMessage('No points to draw');
      this.queueOverlay();
      return;
    }
    const size = this.pointSize || (n < 1000 ? 7 : n < 20000 ? 4 : n < 300000 ? 2.5 : 1.5);
    this.plot.set({ pointColor: colours, colorBy: 'valueA', pointSize: size, pointSizeSelected: size + 1 });
    const z = this.colourCodes();
    const started = performance.now();
    this.endLod();
    this.redrawing = true;
    this.plot.draw({ x: this.nx, y: this.ny, z }, { zDataType: 'categorical', spatialIndex: EMPTY_INDEX }).then(() => {
      this.root.dataset.ready = '1';
      this.root.dataset.drawMs = String(Math.round(performance.now() - started));
      this.root.dataset.tDrawn = String(Math.round(performance.now()));
      this.redrawing = false;
      // report the view of a new map once it is drawn (thumbnails are asked for it), moved or not
      clearTimeout(this.viewTimer);
      this.viewTimer = setTimeout(() => this.settle(), VIEW_SETTLE_MS);
      this.root.dataset.drawnKey = String(this.pointsKey);
      this.queueOverlay();
      if (!this.kd) setTimeout(() => this.buildIndex(), 0); // hover and click, once the points are on screen
    }).catch((err) => {
      this.redrawing = false;
      this.showMessage(`The map could not be drawn: ${err && err.message ? err.message : err}`);
    });
  }

  // -- selection ---------------------------------------------------------------------------------------------
  setSelected(table, key) {
    this.selectedKey = key;
    const rows = columnArray(table, 'row');
    this.selectedRows = key ? (rows || new Int32Array(0)) : null;
    this.selMask = null; // row -> 1 when selected (thumbnails of the others are drawn faded)
    if (this.selectedRows) {
      this.selMask = new Uint8Array(Math.max(this.n, 1));
      for (const r of this.selectedRows) if (r >= 0 && r < this.selMask.length) this.selMask[r] = 1;
    }
    this.root.dataset.selected = this.selectedRows ? String(this.selectedRows.length) : '';
    if (this.plot && this.plot.get('isPointsDrawn')) this.plot.deselect({ preventEvent: true });
  }

  rowsOfPoints(points) {
    const out = new Int32Array(points.length);
    for (let i = 0; i < points.length; i++) out[i] = this.rowOf ? this.rowOf[points[i]] : points[i];
    out.sort();
    return out;
  }

  onSelect(points) {
    if (!points) return;
    const rows = this.rowsOfPoints(points);
    this.selectionCounter += 1;
    const token = `sel-${Date.now().toString(36)}-${this.selectionCounter}`;
    // this browser holds the rows already: Python can answer with the key alone when it draws them back
    STORE.set(`${this.uid}:selected`, { key: token, value: { getChild: (name) => (name === 'row' ? { toArray: () => rows } : null) } });
    const clicked = this.lastSelectWasClick && rows.length === 1 ? rows[0] : null;
    this.lastSelectWasClick = false;
    this.root.dataset.lastSelection = String(rows.length);
    // a trigger: it goes up once; Python keeps it (a state value would ride along with every later rerun). A
    // rerun asked for by a state change at the same moment (a hover, a view) can replace the one that carries
    // it, so it is sent again (at most twice) until Python's data says it has it (selection_token)
    if (this.pendingSelection) clearTimeout(this.pendingSelection.timer);
    this.pendingSelection = { value: { rows: b64FromInt32(rows), n: rows.length, token, clicked }, tries: 0 };
    this.sendSelection(this.pendingSelection);
    this.root.dataset.selectionSentAt = String(Date.now()); // wall clock, for bench/map_component.py
  }

  onDeselect() {
    if (this.root.dataset.lastSelection === '0') return;
    this.root.dataset.lastSelection = '0';
    if (this.pendingSelection) clearTimeout(this.pendingSelection.timer);
    this.pendingSelection = null;
    this.setTriggerValue('selection', { rows: '', n: 0, token: null, clicked: null });
  }

  confirmSelection(token) {
    // called with every update from Python: the token of the last selection it holds
    const pending = this.pendingSelection;
    if (pending && token === pending.value.token) {
      clearTimeout(pending.timer);
      this.pendingSelection = null;
    }
  }

  sendSelection(pending) {
    // send it, and again (at most twice) if no answer from Python has carried its token 2 s later
    this.setTriggerValue('selection', pending.value);
    clearTimeout(pending.timer);
    pending.timer = setTimeout(() => {
      if (this.pendingSelection !== pending || pending.tries >= 2) return;
      pending.tries += 1;
      this.root.dataset.selectionResent = String(pending.tries);
      this.sendSelection(pending);
    }, 2000);
  }

  onHover(i) {
    const row = i === null || i === undefined ? null : (this.rowOf ? this.rowOf[i] : i);
    this.hoverRow = row;
    this.root.dataset.hovered = row === null ? '' : String(row);
    this.queueOverlay();
    clearTimeout(this.hoverTimer);
    if (this.pointerDown) { // no reruns for hovers in the middle of a drag or lasso
      this.renderTip();
      return;
    }
    this.hoverTimer = setTimeout(() => {
      if (this.reportedHover === row) return;
      this.reportedHover = row;
      this.setStateValue('hovered', row);
    }, HOVER_SETTLE_MS);
    this.renderTip();
  }

  setHover(hover) {
    this.hoverCaption = hover && Number.isInteger(hover.row) ? hover : null;
    this.renderTip();
  }

  renderTip() {
    const cap = this.hoverCaption;
    if (cap === null || this.hoverRow === null || cap.row !== this.hoverRow) {
      this.tip.style.display = 'none';
      return;
    }
    const p = this.screenOfRow(cap.row);
    if (!p) {
      this.tip.style.display = 'none';
      return;
    }
    this.tip.textContent = cap.text;
    this.tip.style.display = 'block';
    const w = this.root.clientWidth;
    const left = p[0] + 12 + 200 > w ? Math.max(0, p[0] - 212) : p[0] + 12;
    this.tip.style.left = `${left}px`;
    this.tip.style.top = `${Math.max(0, p[1] + 10)}px`;
  }

  // -- view ------------------------------------------------------------------------------------------------
  currentView() {
    if (!this.plot) return null;
    const xs = this.plot.get('xScale');
    const ys = this.plot.get('yScale');
    if (!xs || !ys) return null;
    const [x0, x1] = xs.domain();
    const [y0, y1] = ys.domain();
    return { x0, x1, y0, y1 };
  }

  onView() {
    this.startLod();
    this.queueOverlay();
    this.renderTip();
    clearTimeout(this.viewTimer);
    this.viewTimer = setTimeout(() => this.settle(), VIEW_SETTLE_MS);
  }

  settle() {
    // the view has settled once no frame moved it for VIEW_SETTLE_MS and no button is held (a slow frame
    // in the middle of a drag is not the end of it)
    if (this.pointerDown) {
      this.viewTimer = setTimeout(() => this.settle(), VIEW_SETTLE_MS);
      return;
    }
    this.endLod();
    this.reportView();
  }

  startLod() {
    if (this.lod || this.drawn < LOD_MIN || !this.plot || !this.plot.get('isPointsDrawn') || this.redrawing) return;
    const step = Math.ceil(this.drawn / LOD_POINTS);
    if (!this.lodSample || this.lodSample.step !== step) {
      const sample = [];
      for (let i = 0; i < this.drawn; i += step) sample.push(i);
      this.lodSample = { step, sample };
    }
    this.lod = true;
    this.root.dataset.lod = '1';
    this.plot.filter(this.lodSample.sample, { preventEvent: true });
  }

  endLod() {
    if (!this.lod) return;
    this.lod = false;
    this.root.dataset.lod = '0';
    if (this.plot && !this.redrawing) this.plot.unfilter({ preventEvent: true });
  }

  reportView() {
    const v = this.currentView();
    if (!v) return;
    const r = (a) => Number(a.toPrecision(7));
    // with the map's size in CSS pixels (Python spreads thumbnails over cells of a fixed pixel size)
    // and the points it is a view of (a view of the last map must not be taken for one of a new map)
    const view = { x0: r(v.x0), x1: r(v.x1), y0: r(v.y0), y1: r(v.y1), w: this.root.clientWidth, h: this.root.clientHeight,
      points: this.pointsKey };
    const last = this.reportedView;
    // a camera that moved less than a ten-thousandth of the view (float noise after a redraw) is not a new view:
    // every report is a rerun, and a rerun that races a selection's can cost Python the selection
    const tol = (view.x1 - view.x0) * 1e-4;
    if (last && last.points === view.points && last.w === view.w && last.h === view.h && ['x0', 'x1', 'y0', 'y1'].every((k) => Math.abs(last[k] - view[k]) <= tol)) return;
    this.reportedView = view;
    this.root.dataset.view = JSON.stringify(view);
    this.setStateValue('view', view);
  }

  applyView(view) {
    if (!this.plot || !this.domain) return;
    const key = view ? JSON.stringify([view.x0, view.x1, view.y0, view.y1]) : null;
    if (key === this.appliedViewKey) return;
    this.appliedViewKey = key;
    if (!view || ![view.x0, view.x1, view.y0, view.y1].every(Number.isFinite) || view.x1 <= view.x0 || view.y1 <= view.y0) {
      return;
    }
    const cur = this.currentView();
    if (cur) {
      const tol = (view.x1 - view.x0) * 1e-4;
      if (Math.abs(cur.x0 - view.x0) < tol && Math.abs(cur.x1 - view.x1) < tol && Math.abs(cur.y0 - view.y0) < tol
        && Math.abs(cur.y1 - view.y1) < tol) return;
    }
    const d = this.domain;
    const sx = 2 / (d.x1 - d.x0);
    const sy = 2 / (d.y1 - d.y0);
    const rect = { x: -1 + (view.x0 - d.x0) * sx, y: -1 + (view.y0 - d.y0) * sy,
      width: (view.x1 - view.x0) * sx, height: (view.y1 - view.y0) * sy };
    const go = () => this.plot.zoomToArea(rect, { transition: false });
    if (this.plot.get('isPointsDrawn')) go();
    else this.plot.subscribe('draw', go, 1);
  }

  // -- modes -----------------------------------------------------------------------------------------------
  setMode(mode) {
    this.mode = mode;
    for (const [m, b] of Object.entries(this.buttons)) b.classList.toggle('on', m === mode);
    // lasso and box are drawn on a layer above the points and selected straight from the typed arrays:
    // regl-scatterplot's own lasso selection of a few 100k points costs seconds in software GL
    this.boxCatch.style.display = mode === 'box' || mode === 'lasso' ? 'block' : 'none';
  }

  dataOfClient(rect, clientX, clientY) {
    // the scales are in the canvas's CSS pixels
    const xs = this.plot.get('xScale');
    const ys = this.plot.get('yScale');
    return [xs.invert(clientX - rect.left), ys.invert(clientY - rect.top)];
  }

  boxStart(e) {
    if (!this.plot || !this.drawn) return;
    e.preventDefault();
    this.endLod();
    const lasso = this.mode === 'lasso';
    const rect = this.canvas.getBoundingClientRect();
    const x0 = e.clientX - rect.left;
    const y0 = e.clientY - rect.top;
    const path = [[x0, y0]]; // the lasso in pixels
    this.boxCatch.setPointerCapture(e.pointerId);
    this.pointerDown = true;
    const ctx = this.overlay.getContext('2d');
    const move = (ev) => {
      const x1 = ev.clientX - rect.left;
      const y1 = ev.clientY - rect.top;
      if (!lasso) {
        Object.assign(this.boxEl.style, { display: 'block', left: `${Math.min(x0, x1)}px`,
          top: `${Math.min(y0, y1)}px`, width: `${Math.abs(x1 - x0)}px`, height: `${Math.abs(y1 - y0)}px` });
        return;
      }
      const last = path[path.length - 1];
      if (Math.hypot(x1 - last[0], y1 - last[1]) < 2) return;
      path.push([x1, y1]);
      ctx.strokeStyle = '#333';
      ctx.lineWidth = 1.2;
      ctx.setLineDash([4, 3]);
      ctx.beginPath();
      ctx.moveTo(last[0], last[1]);
      ctx.lineTo(x1, y1);
      ctx.stroke();
      ctx.setLineDash([]);
    };
    const up = (ev) => {
      this.boxCatch.removeEventListener('pointermove', move);
      this.boxCatch.removeEventListener('pointerup', up);
      this.boxEl.style.display = 'none';
      this.pointerDown = false;
      this.root.dataset.pointerUpAt = String(Date.now()); // wall clock, for bench/map_component.py
      const x1 = ev.clientX - rect.left;
      const y1 = ev.clientY - rect.top;
      this.queueOverlay(); // wipes the lasso's trail
      if (lasso) {
        path.push([x1, y1]);
        if (path.length < 3) return;
        this.onSelect(this.rowsInPolygon(path.map(([px, py]) => this.dataOfClient(rect, px + rect.left, py + rect.top))));
        return;
      }
      if (Math.abs(x1 - x0) < 3 || Math.abs(y1 - y0) < 3) return;
      const a = this.dataOfClient(rect, Math.min(x0, x1) + rect.left, Math.min(y0, y1) + rect.top);
      const b = this.dataOfClient(rect, Math.max(x0, x1) + rect.left, Math.max(y0, y1) + rect.top);
      this.onSelect(this.rowsInPolygon([[a[0], a[1]], [b[0], a[1]], [b[0], b[1]], [a[0], b[1]]]));
    };
    this.boxCatch.addEventListener('pointermove', move);
    this.boxCatch.addEventListener('pointerup', up);
  }

  rowsInPolygon(poly) {
    // drawn indices of the points inside polygon ``poly`` ([[x, y], …] in data units, closed implicitly):
    // a bounding-box pass over the typed arrays, then an even-odd ray test for the points inside the box
    let xa = Infinity;
    let xb = -Infinity;
    let ya = Infinity;
    let yb = -Infinity;
    for (const [x, y] of poly) {
      if (x < xa) xa = x;
      if (x > xb) xb = x;
      if (y < ya) ya = y;
      if (y > yb) yb = y;
    }
    const m = poly.length;
    const px = Float64Array.from(poly, (p) => p[0]);
    const py = Float64Array.from(poly, (p) => p[1]);
    const isBox = m === 4 && px[0] === px[3] && px[1] === px[2] && py[0] === py[1] && py[2] === py[3];
    const xs = this.xs;
    const ys = this.ys;
    const out = [];
    for (let i = 0; i < this.drawn; i++) {
      const x = xs[i];
      const y = ys[i];
      if (x < xa || x > xb || y < ya || y > yb) continue;
      if (isBox) {
        out.push(i);
        continue;
      }
      let inside = false;
      for (let a = 0, b = m - 1; a < m; b = a++) {
        if ((py[a] > y) !== (py[b] > y) && x < ((px[b] - px[a]) * (y - py[a])) / (py[b] - py[a]) + px[a]) inside = !inside;
      }
      if (inside) out.push(i);
    }
    return out;
  }

  // -- overlays: lines, thumbnails, labels, density ----------------------------------------------------------
  setLines(table, key) {
    this.linesKey = key;
    const a = columnArray(table, 'a');
    const b = columnArray(table, 'b');
    this.lines = a && b ? { a, b } : null;
  }

  setDensity(payload, key) {
    this.densityKey = key;
    this.densityImage = null;
    if (!payload) {
      this.density = null;
      return;
    }
    const z = columnArray(payload.z, 'z');
    const w = payload.w;
    const h = payload.h;
    if (!z || !w || !h || z.length !== w * h) {
      this.density = null;
      return;
    }
    let zmax = 0;
    for (let i = 0; i < z.length; i++) if (Number.isFinite(z[i]) && z[i] > zmax) zmax = z[i];
    const img = document.createElement('canvas');
    img.width = w;
    img.height = h;
    const ctx = img.getContext('2d');
    const data = ctx.createImageData(w, h);
    const [r, g, bl] = hexToRgb(payload.colour || '#3b5bdb');
    for (let j = 0; j < h; j++) {
      for (let i = 0; i < w; i++) {
        const v = z[j * w + i];
        const t = zmax > 0 && Number.isFinite(v) ? Math.max(0, v) / zmax : 0;
        const o = ((h - 1 - j) * w + i) * 4; // row 0 of z is the lowest y
        data.data[o] = r;
        data.data[o + 1] = g;
        data.data[o + 2] = bl;
        data.data[o + 3] = Math.round(Math.sqrt(t) * 150);
      }
    }
    ctx.putImageData(data, 0, 0);
    this.density = payload;
    this.densityImage = img;
  }

  setThumbs(payload, key) {
    this.thumbsKey = key;
    this.thumbs = payload && Array.isArray(payload.items) ? payload.items : [];
    for (const t of this.thumbs) {
      if (!this.thumbImages.has(t.url)) {
        const img = new Image();
        img.onload = () => this.queueOverlay();
        img.src = t.url;
        this.thumbImages.set(t.url, img);
      }
    }
    if (this.thumbImages.size > 2000) {
      const keep = new Set(this.thumbs.map((t) => t.url));
      for (const url of this.thumbImages.keys()) if (!keep.has(url)) this.thumbImages.delete(url);
    }
  }

  setLabels(labels) {
    const sig = JSON.stringify(labels);
    if (sig === this.labelsSig) return;
    this.labelsSig = sig;
    this.labels = labels;
    this.labelLayer.textContent = '';
    this.labelEls = labels.map((lab) => {
      const b = el('div', 'js-label', this.labelLayer);
      b.textContent = String(lab.name);
      b.dataset.cluster = String(lab.cluster);
      b.title = `Select cluster ${lab.name}`;
      b.addEventListener('click', (e) => {
        e.stopPropagation();
        // a state value with a click count, not a trigger: a rerun racing it cannot drop it
        this.labelClicks = (this.labelClicks || 0) + 1;
        this.setStateValue('label_clicked', { cluster: lab.cluster, click: this.labelClicks, uid: this.uid });
      });
      return b;
    });
  }

  setLegend(legend) {
    // what the colours mean: a swatch and a count per category, or a colour ramp with its two ends
    const sig = JSON.stringify(legend);
    if (sig === this.legendSig) return;
    this.legendSig = sig;
    const box = this.legendEl;
    box.textContent = '';
    if (!legend || (!Array.isArray(legend.items) && !Array.isArray(legend.ramp))) {
      box.style.display = 'none';
      return;
    }
    box.style.display = 'block';
    if (legend.title) el('div', 'js-ltitle', box).textContent = String(legend.title);
    if (Array.isArray(legend.items)) {
      for (const item of legend.items) {
        const row = el('div', 'js-lrow', box);
        const sw = el('span', 'js-swatch', row);
        sw.style.background = /^#[0-9a-fA-F]{3,8}$/.test(String(item.colour)) ? String(item.colour) : GREY;
        el('span', '', row).textContent = item.count === undefined || item.count === null
          ? String(item.name) : `${item.name} (${Number(item.count).toLocaleString()})`;
      }
      if (legend.more) el('div', 'js-lrow', box).textContent = String(legend.more);
    } else {
      const stops = legend.ramp.filter((c) => /^#[0-9a-fA-F]{3,8}$/.test(String(c)));
      el('div', 'js-ramp', box).style.background = `linear-gradient(to right, ${stops.join(', ')})`;
      const ends = el('div', 'js-lends', box);
      el('span', '', ends).textContent = String(legend.low);
      el('span', '', ends).textContent = String(legend.high);
      if (legend.missing) el('div', 'js-lrow', box).textContent = String(legend.missing);
    }
  }

  screenOfData(x, y) {
    if (!this.plot) return null;
    const xs = this.plot.get('xScale');
    const ys = this.plot.get('yScale');
    if (!xs || !ys) return null;
    // regl-scatterplot keeps the scales' ranges in CSS pixels: x [0, width], y [height, 0]
    return [xs(x), ys(y)];
  }

  screenOfRow(row) {
    const i = this.idxOf ? (row >= 0 && row < this.idxOf.length ? this.idxOf[row] : -1) : row;
    if (i === null || i < 0 || i >= this.drawn) return null;
    return this.screenOfData(this.xs[i], this.ys[i]);
  }

  queueOverlay() {
    if (this.overlayQueued) return;
    this.overlayQueued = true;
    requestAnimationFrame(() => {
      this.overlayQueued = false;
      this.drawOverlay();
    });
  }

  drawOverlay() {
    const w = this.root.clientWidth;
    const h = this.root.clientHeight;
    const dpr = window.devicePixelRatio || 1;
    for (const c of [this.overlay, this.densityCanvas]) {
      if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
        c.width = Math.round(w * dpr);
        c.height = Math.round(h * dpr);
      }
    }
    const dctx = this.densityCanvas.getContext('2d');
    dctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    dctx.clearRect(0, 0, w, h);
    if (this.densityImage && this.density) {
      const d = this.density;
      const a = this.screenOfData(d.x0, d.y1);
      const b = this.screenOfData(d.x1, d.y0);
      if (a && b) {
        dctx.imageSmoothingEnabled = true;
        dctx.drawImage(this.densityImage, a[0], a[1], b[0] - a[0], b[1] - a[1]);
      }
    }
    const ctx = this.overlay.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    if (this.lines) {
      ctx.strokeStyle = 'rgba(20,20,20,.75)';
      ctx.lineWidth = 1.2;
      ctx.beginPath();
      const { a, b } = this.lines;
      for (let i = 0; i < a.length; i++) {
        const p = this.screenOfRow(a[i]);
        const q = this.screenOfRow(b[i]);
        if (!p || !q) continue;
        ctx.moveTo(p[0], p[1]);
        ctx.lineTo(q[0], q[1]);
      }
      ctx.stroke();
    }
    let drawnThumbs = 0;
    for (const t of this.thumbs) {
      const img = this.thumbImages.get(t.url);
      const p = this.screenOfRow(t.row);
      if (!p || p[0] < -40 || p[1] < -40 || p[0] > w + 40 || p[1] > h + 40) continue;
      if (!img || !img.complete || !img.naturalWidth) continue;
      const s = 36;
      const ratio = img.naturalWidth / img.naturalHeight;
      const iw = ratio >= 1 ? s : s * ratio;
      const ih = ratio >= 1 ? s / ratio : s;
      ctx.globalAlpha = this.selMask && !this.selMask[t.row] ? 0.25 : 1; // not selected: faded, as its point is grey
      ctx.fillStyle = '#fff';
      ctx.fillRect(p[0] - iw / 2 - 1, p[1] - ih / 2 - 1, iw + 2, ih + 2);
      ctx.drawImage(img, p[0] - iw / 2, p[1] - ih / 2, iw, ih);
      ctx.globalAlpha = 1;
      drawnThumbs++;
    }
    this.root.dataset.thumbs = String(drawnThumbs);
    let ringed = 0;
    if (this.selectedRows && this.selectedRows.length <= MAX_RINGED) {
      ctx.strokeStyle = '#d6336c';
      ctx.lineWidth = 2;
      for (const row of this.selectedRows) {
        const p = this.screenOfRow(row);
        if (!p || p[0] < -10 || p[1] < -10 || p[0] > w + 10 || p[1] > h + 10) continue;
        ctx.beginPath();
        ctx.arc(p[0], p[1], 7, 0, 2 * Math.PI);
        ctx.stroke();
        ringed++;
      }
    }
    this.root.dataset.ringed = String(ringed);
    if (this.hoverRow !== null) {
      const p = this.screenOfRow(this.hoverRow);
      if (p) {
        ctx.strokeStyle = '#111';
        ctx.lineWidth = 1.5;
        ctx.beginPath();
        ctx.arc(p[0], p[1], 6, 0, 2 * Math.PI);
        ctx.stroke();
      }
    }
    // cluster names: the largest clusters first; a name that would cover one already placed is hidden (it is
    // still in the table under the map, and shows when a zoom pulls the two apart)
    const placed = [];
    const order = (this.labelEls || []).map((b, i) => i)
      .sort((a, b) => (Number(this.labels[b].n) || 0) - (Number(this.labels[a].n) || 0));
    for (const i of order) {
      const b = this.labelEls[i];
      const lab = this.labels[i];
      const p = this.screenOfData(Number(lab.x), Number(lab.y));
      if (!p || p[0] < -100 || p[1] < -30 || p[0] > w + 100 || p[1] > h + 30) {
        b.style.display = 'none';
        continue;
      }
      b.style.display = 'block';
      b.style.left = `${p[0]}px`;
      b.style.top = `${p[1]}px`;
      const bw = b.offsetWidth / 2 + 2;
      const bh = b.offsetHeight / 2 + 1;
      const box = [p[0] - bw, p[1] - bh, p[0] + bw, p[1] + bh];
      if (placed.some((q) => box[0] < q[2] && box[2] > q[0] && box[1] < q[3] && box[3] > q[1])) {
        b.style.display = 'none';
        continue;
      }
      placed.push(box);
    }
    this.root.dataset.labelsShown = String(placed.length);
  }

  resize() {
    if (!this.plot) return;
    const width = this.root.clientWidth;
    const height = this.root.clientHeight;
    if (width < 1 || height < 1) return;
    if (width === this.plot.get('width') && height === this.plot.get('height')) return;
    this.renderer.resize(width, height);
    this.plot.set({ width, height });
    this.queueOverlay();
  }

  // -- PNG -------------------------------------------------------------------------------------------------
  async savePng() {
    if (!this.plot) return;
    const w = this.root.clientWidth;
    const h = this.root.clientHeight;
    const dpr = window.devicePixelRatio || 1;
    const out = document.createElement('canvas');
    out.width = Math.round(w * dpr);
    out.height = Math.round(h * dpr);
    const ctx = out.getContext('2d');
    ctx.fillStyle = '#fff';
    ctx.fillRect(0, 0, out.width, out.height);
    ctx.drawImage(this.densityCanvas, 0, 0, out.width, out.height);
    ctx.drawImage(this.canvas, 0, 0, out.width, out.height); // the points, as regl-scatterplot copied them
    ctx.drawImage(this.overlay, 0, 0, out.width, out.height);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.font = '600 12px system-ui,sans-serif';
    ctx.textAlign = 'center';
    ctx.textBaseline = 'middle';
    for (const b of this.labelEls || []) {
      if (b.style.display === 'none') continue;
      ctx.fillStyle = 'rgba(255,255,255,.8)';
      const tw = ctx.measureText(b.textContent).width + 10;
      const x = parseFloat(b.style.left);
      const y = parseFloat(b.style.top);
      ctx.fillRect(x - tw / 2, y - 9, tw, 18);
      ctx.fillStyle = '#222';
      ctx.fillText(b.textContent, x, y);
    }
    const a = document.createElement('a');
    a.href = out.toDataURL('image/png');
    a.download = 'map.png';
    a.style.display = 'none';
    this.root.appendChild(a);
    a.click();
    a.remove();
  }

  destroy() {
    clearTimeout(this.viewTimer);
    clearTimeout(this.hoverTimer);
    this.resizeObserver.disconnect();
    if (this.onWindowPointerUp) window.removeEventListener('pointerup', this.onWindowPointerUp, true);
    if (this.plot) this.plot.destroy();
    if (this.renderer) this.renderer.destroy();
    this.plot = null;
    this.renderer = null;
    if (REGISTRY.get(this.uid) === this) REGISTRY.delete(this.uid);
  }
}

// Streamlit calls this at every render of the element with the same parentElement; the map lives on.
export default function render(component) {
  const { parentElement, data, setStateValue, setTriggerValue } = component;
  let view = INSTANCES.get(parentElement);
  if (!view) {
    view = new MapView(parentElement);
    INSTANCES.set(parentElement, view);
  }
  // a click on a point arrives as a select of one point: remember that it was a click
  if (!view.clickHooked) {
    view.clickHooked = true;
    view.canvas.addEventListener('pointerdown', (e) => {
      view.downAt = [e.clientX, e.clientY];
      view.pointerDown = true;
      view.endLod(); // a click or lasso right after a pan sees every point
    });
    view.onWindowPointerUp = () => {
      view.pointerDown = false;
      view.root.dataset.pointerUpAt = String(Date.now()); // wall clock, for bench/map_component.py
    };
    window.addEventListener('pointerup', view.onWindowPointerUp, true);
    view.canvas.addEventListener('pointerup', (e) => {
      // a click (no drag) on a point in pan mode selects it: found here in the map's own index (regl-scatterplot's
      // own click finds nothing: it is handed an empty index)
      const d = view.downAt;
      const click = !!d && Math.hypot(e.clientX - d[0], e.clientY - d[1]) < 4 && view.mode === 'pan';
      view.lastSelectWasClick = false;
      if (!click || !view.plot || !view.drawn) return;
      const best = view.nearestAt(e.clientX, e.clientY);
      if (best !== null && best >= 0) {
        view.lastSelectWasClick = true;
        view.onSelect([best]);
      }
    }, true);
  }
  view.update(data, setStateValue, setTriggerValue);
  return () => {
    INSTANCES.delete(parentElement);
    view.destroy();
  };
}
