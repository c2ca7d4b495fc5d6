// The standalone HTML map (core/export.py view_html): the same WebGL map as the app's Map page (index.js),
// driven without Streamlit. The page inlines this bundle (built as one IIFE into assets/scatter/standalone.js)
// and its data as JSON; `window.jointscopeMap.mount(element, payload)` draws it.
//
// payload (written by core.export.view_html):
//   uid, n, height (px or null: fit the window), point_size, palette [#rrggbb], colour_title, legend (as the
//   app's map gets it, core.plots.colour_legend),
//   categories [name] (one per palette slot) | null, value_range [lo, hi] | null (continuous colour: codes
//   0..254 are steps from lo to hi, 255 is "no value"),
//   columns {x, y, c?}: {dtype: "f4" | "i4" | "u1" | "u2", b64} little-endian typed arrays,
//   captions [text] | null (one hover text per row), labels [{name, x, y, cluster, n, rows: column}],
//   lines {a, b} | null (row pairs), density {x0, x1, y0, y1, w, h, z: column, colour?} | null,
//   thumbs [{row, url}] (data: URLs), selected: column | null (rows selected when the map was saved).
// The Streamlit bridge (setStateValue / setTriggerValue) is answered here: a selection (lasso, box, click,
// a cluster name) is drawn back at once (the other points grey) and counted above the map; Escape or Clear
// clears it; hover shows the row's caption. Every text reaches the page through textContent.
import render from './index.js';

const CSS = `
.jsm-bar{display:flex;align-items:center;gap:10px;min-height:28px;font:13px system-ui,sans-serif;color:#333}
.jsm-bar button{font:12px system-ui,sans-serif;padding:2px 10px;border:1px solid rgba(0,0,0,.25);border-radius:4px;
  background:#fff;cursor:pointer}
.jsm-bar button[hidden]{display:none}
.jsm-count{font-weight:600}
.jsm-hint{color:#666}
`;

const ARRAYS = { f4: Float32Array, i4: Int32Array, u1: Uint8Array, u2: Uint16Array };

function decode(col, what) {
  if (!col) return null;
  const Type = ARRAYS[col.dtype];
  if (!Type || typeof col.b64 !== 'string') throw new Error(`${what}: unknown column encoding ${JSON.stringify(col.dtype)}`);
  const bin = atob(col.b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  if (bytes.length % Type.BYTES_PER_ELEMENT) throw new Error(`${what}: ${bytes.length} bytes is not a whole number of values`);
  return new Type(bytes.buffer);
}

// what index.js reads from an Arrow table: table.getChild(name).toArray()
function table(columns) {
  return { getChild: (name) => (columns[name] ? { toArray: () => columns[name] } : null) };
}

function rowsOfB64(b64) {
  return b64 ? decode({ dtype: 'i4', b64 }, 'selection') : new Int32Array(0);
}

function el(tag, cls, parent) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (parent) parent.appendChild(node);
  return node;
}

export function mount(element, payload) {
  const style = document.createElement('style');
  style.textContent = CSS;
  element.appendChild(style);
  const bar = el('div', 'jsm-bar', element);
  const count = el('span', 'jsm-count', bar);
  const clearButton = el('button', 'jsm-clear', bar);
  clearButton.type = 'button';
  clearButton.textContent = 'Clear';
  clearButton.title = 'Clear the selection (Escape)';
  clearButton.hidden = true;
  const hint = el('span', 'jsm-hint', bar);
  const host = el('div', 'jsm-host', element);

  const uid = String(payload.uid || 'html-map');
  const cols = payload.columns || {};
  const x = decode(cols.x, 'x');
  const y = decode(cols.y, 'y');
  const codes = decode(cols.c, 'colour codes');
  const n = x ? x.length : 0;
  const captions = Array.isArray(payload.captions) ? payload.captions : null;
  const categories = Array.isArray(payload.categories) ? payload.categories : null;
  const range = Array.isArray(payload.value_range) ? payload.value_range : null;
  const title = String(payload.colour_title || '');
  const labels = Array.isArray(payload.labels) ? payload.labels : [];
  hint.textContent = `Lasso or Box in the toolbar, a click on a point${labels.length ? ' or on a cluster name' : ''} selects.`;
  const top = element.getBoundingClientRect().top + window.scrollY;
  const height = Number(payload.height) || Math.max(360, Math.round(window.innerHeight - top - 110));

  const data = {
    uid, n, height, palette: payload.palette || [], point_size: payload.point_size || null,
    points_key: 'points', points: table({ x, y }),
    colours_key: codes ? 'colours' : null, colours: codes ? table({ c: codes }) : null,
    selected_key: null, selected: null,
    lines_key: null, lines: null, density_key: null, density: null, thumbs_key: null, thumbs: null,
    labels: labels.map((l) => ({ name: String(l.name), x: Number(l.x), y: Number(l.y), cluster: l.cluster, n: Number(l.n) || 0 })),
    legend: payload.legend || null, hover: null, view: null,
  };
  if (payload.lines) {
    data.lines_key = 'lines';
    data.lines = table({ a: decode(payload.lines.a, 'lines'), b: decode(payload.lines.b, 'lines') });
  }
  if (payload.density) {
    const { z, ...meta } = payload.density;
    data.density_key = 'density';
    data.density = meta;
    data.density_z = table({ z: decode(z, 'density') });
  }
  if (Array.isArray(payload.thumbs) && payload.thumbs.length) {
    data.thumbs_key = 'thumbs';
    data.thumbs = { items: payload.thumbs.filter((t) => typeof t.url === 'string' && t.url.startsWith('data:image/')) };
  }

  function captionOf(row) {
    if (captions && typeof captions[row] === 'string') return captions[row];
    // no inlined captions (a large map): what its colour says
    const code = codes ? codes[row] : null;
    if (code !== null && categories && code < categories.length) return `${title}: ${categories[code]}`;
    if (code !== null && range) {
      if (code >= 255) return `${title}: no value`;
      const v = range[0] + (code / 254) * (range[1] - range[0]);
      return `${title}: about ${Number(v.toPrecision(3))}`;
    }
    return `point ${row + 1} of ${n}`;
  }

  let selection = null; // Int32Array of rows, or null
  let counter = 0;

  let retry = null;
  function draw() {
    // regl-scatterplot refuses a draw while the previous one runs (a million points take seconds): wait
    const map = window.jointscopeScatter && window.jointscopeScatter.get(uid);
    if (map && map.redrawing) {
      if (retry === null) retry = setTimeout(() => { retry = null; draw(); }, 50);
      return;
    }
    render({ parentElement: host, data, setStateValue, setTriggerValue });
  }

  function select(rows, what) {
    if (!rows || !rows.length) {
      clear();
      return;
    }
    selection = rows;
    counter += 1;
    data.selected_key = `sel-${counter}`;
    data.selected = table({ row: rows });
    draw();
    count.textContent = `${rows.length.toLocaleString('en')} selected${what ? ` · ${what}` : ''}`;
    element.dataset.selected = String(rows.length);
    clearButton.hidden = false;
  }

  function clear() {
    if (selection === null && data.selected_key === null) return;
    selection = null;
    data.selected_key = null;
    data.selected = null;
    draw();
    count.textContent = '';
    element.dataset.selected = '0';
    clearButton.hidden = true;
  }

  function setStateValue(name, value) {
    if (name === 'label_clicked') {
      setTriggerValue(name, value && typeof value === 'object' ? value.cluster : value);
      return;
    }
    if (name !== 'hovered') return; // the settled view needs no answer: every thumbnail is here already
    const row = Number.isInteger(value) && value >= 0 && value < n ? value : null;
    data.hover = row === null ? null : { row, text: captionOf(row) };
    draw();
  }

  function setTriggerValue(name, value) {
    if (name === 'selection') {
      data.selection_token = value && value.token ? value.token : null; // answered here: no resend
      const rows = value && value.rows ? rowsOfB64(value.rows) : null;
      select(rows, rows && rows.length === 1 && value.clicked !== null ? 'one point' : '');
    } else if (name === 'label_clicked') {
      const lab = labels.find((l) => l.cluster === value);
      if (lab) select(decode(lab.rows, `cluster ${lab.name}`), String(lab.name));
    }
  }

  clearButton.addEventListener('click', clear);
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape') clear();
  });
  element.dataset.selected = '0';
  if (payload.selected) select(decode(payload.selected, 'selected rows'), 'saved with the map');
  else draw();
  return { select, clear, get selection() { return selection; } };
}

window.jointscopeMap = { mount };
