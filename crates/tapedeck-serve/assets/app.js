// tapedeck serve: the page. Plain script, no libraries: the server sends each numeric column
// reduced to first/min/max/last per pixel bucket (M4), and this draws them on canvases.
// Live updates come over Server-Sent Events whose ids are tape sequence numbers: the browser
// reconnects by itself with the last id, and the server continues from there.
'use strict';

const COLORS = ['#1f6feb', '#d1242f', '#1a7f37', '#8250df', '#bf8700', '#0a7b83', '#cf222e', '#57606a'];

// Everything the page knows; `window.tapedeck` lets tests (and the curious) look.
const state = {
  window: 10,        // seconds, or 'all'
  live: true,
  bucket: 0,         // µs per bucket
  from: 0,           // µs: the plotted span
  to: 0,
  series: new Map(), // column name -> Map(bucket -> [min, max, first, last])
  hasTime: true,
  lastSeq: null,     // the sequence number after the last row the page has
  gaps: 0,           // live messages that did not start where the previous one ended
  messages: 0,
  reconnects: 0,
  status: null,
  es: null,
  drawing: false,
};
window.tapedeck = state;

const $ = (id) => document.getElementById(id);

function bytes(n) {
  if (n == null) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + ' ' + units[i];
}

function num(n, digits) {
  if (n == null || !isFinite(n)) return '–';
  const a = Math.abs(n);
  if (a !== 0 && (a >= 1e6 || a < 1e-3)) return n.toExponential(3);
  return n.toLocaleString('en-US', { maximumFractionDigits: digits == null ? 3 : digits });
}

function clock(us) {
  const d = new Date(us / 1000);
  return d.toISOString().slice(11, 23);
}

function notice(text) {
  const n = $('notice');
  n.textContent = text || '';
  n.hidden = !text;
}

function plotWidth() {
  const w = $('plots').clientWidth || 1000;
  return Math.max(100, Math.min(4000, Math.round(w)));
}

// --- the plots' data -------------------------------------------------------------------

function addColumns(columns) {
  for (const c of columns) {
    let m = state.series.get(c.name);
    if (!m) { m = new Map(); state.series.set(c.name, m); }
    for (let i = 0; i < c.b.length; i++) {
      const have = m.get(c.b[i]);
      if (have) {
        // The same bucket from two messages: min of mins, max of maxes, first stays, last moves.
        have[0] = Math.min(have[0], c.min[i]);
        have[1] = Math.max(have[1], c.max[i]);
        have[3] = c.last[i];
      } else {
        m.set(c.b[i], [c.min[i], c.max[i], c.first[i], c.last[i]]);
      }
    }
  }
}

function lastBucket() {
  let last = null;
  for (const m of state.series.values()) {
    for (const b of m.keys()) if (last === null || b > last) last = b;
  }
  return last;
}

function prune() {
  const first = Math.floor(state.from / state.bucket);
  for (const m of state.series.values()) {
    for (const b of m.keys()) if (b < first) m.delete(b);
  }
}

async function loadHistory() {
  closeLive();
  const width = plotWidth();
  let url;
  if (!state.live) url = `/api/series?from=${state.from}&to=${state.to}&width=${width}`;
  else if (state.window === 'all') url = `/api/series?width=${width}`;
  else url = `/api/series?window=${state.window}&width=${width}`;
  let s;
  try {
    const r = await fetch(url);
    s = await r.json();
    if (!r.ok) { notice(s.error || ('the server answered ' + r.status)); return; }
  } catch (e) {
    notice('cannot reach the server: ' + e);
    setTimeout(loadHistory, 2000);
    return;
  }
  state.bucket = s.bucket_us;
  state.from = s.from;
  state.to = s.to;
  state.hasTime = s.has_time;
  state.series = new Map();
  addColumns(s.columns);
  state.lastSeq = s.end_seq;
  if (state.live) openLive();
  showSpan();
  schedule();
  document.body.dataset.ready = '1';
}

// --- live ------------------------------------------------------------------------------

function closeLive() {
  if (state.es) { state.es.close(); state.es = null; }
}

function openLive() {
  closeLive();
  const es = new EventSource(`/api/live?since=${state.lastSeq}&bucket=${state.bucket}`);
  state.es = es;
  es.addEventListener('open', () => { $('conn').textContent = 'live'; $('conn').classList.remove('bad'); });
  es.addEventListener('error', () => {
    // The browser reconnects by itself, sending the last event id — unless the server
    // answered with an error (too many pages, a token): then try again in a while, from the
    // last sequence number the page has.
    state.reconnects++;
    $('conn').textContent = 'reconnecting…';
    $('conn').classList.add('bad');
    if (es.readyState === EventSource.CLOSED && state.es === es) {
      state.es = null;
      setTimeout(() => { if (state.live && !state.es) openLive(); }, 3000);
    }
  });
  es.addEventListener('data', (e) => {
    const d = JSON.parse(e.data);
    if (state.lastSeq !== null && d.from !== state.lastSeq) state.gaps++;
    state.lastSeq = d.to;
    state.messages++;
    if (d.bucket_us !== state.bucket) {
      // The server coarsened the buckets (its byte budget per client): start again at them.
      state.bucket = d.bucket_us;
      state.series = new Map();
    }
    addColumns(d.columns);
    const last = lastBucket();
    if (last !== null && state.window !== 'all') {
      state.to = Math.max(state.to, (last + 1) * state.bucket);
      state.from = state.to - state.window * 1e6;
      prune();
    } else if (last !== null) {
      state.to = Math.max(state.to, (last + 1) * state.bucket);
    }
    document.body.dataset.lastSeq = String(state.lastSeq);
    showSpan();
    schedule();
  });
  es.addEventListener('status', (e) => showStatus(JSON.parse(e.data)));
  es.addEventListener('notice', (e) => notice(e.data));
}

// --- drawing ---------------------------------------------------------------------------

function schedule() {
  if (state.drawing) return;
  state.drawing = true;
  requestAnimationFrame(() => { state.drawing = false; draw(); });
}

function showSpan() {
  $('span').textContent = state.hasTime
    ? `${clock(state.from)} – ${clock(state.to)} UTC, ${num(state.bucket / 1000, 1)} ms per pixel`
    : 'this tape has no event-time column: nothing to plot against';
}

function plotFor(name, index) {
  let div = document.querySelector(`.plot[data-column="${CSS.escape(name)}"]`);
  if (div) return div;
  div = document.createElement('div');
  div.className = 'plot';
  div.dataset.column = name;
  const title = document.createElement('div');
  title.className = 'title';
  const b = document.createElement('b');
  b.textContent = name;
  const v = document.createElement('span');
  v.className = 'value';
  title.append(b, v);
  const canvas = document.createElement('canvas');
  canvas.style.borderLeft = `3px solid ${COLORS[index % COLORS.length]}`;
  div.append(title, canvas);
  zoomable(canvas);
  $('plots').append(div);
  return div;
}

function draw() {
  let index = 0;
  for (const [name, m] of state.series) {
    const div = plotFor(name, index);
    const canvas = div.querySelector('canvas');
    const dpr = window.devicePixelRatio || 1;
    const W = Math.max(1, Math.round(canvas.clientWidth * dpr));
    const H = Math.max(1, Math.round(canvas.clientHeight * dpr));
    if (canvas.width !== W || canvas.height !== H) { canvas.width = W; canvas.height = H; }
    const ctx = canvas.getContext('2d');
    ctx.clearRect(0, 0, W, H);
    const keys = [...m.keys()].sort((a, b) => a - b);
    let lo = Infinity, hi = -Infinity;
    for (const k of keys) { const v = m.get(k); lo = Math.min(lo, v[0]); hi = Math.max(hi, v[1]); }
    div.dataset.points = String(keys.length);
    div.dataset.lastBucket = keys.length ? String(keys[keys.length - 1]) : '';
    const value = div.querySelector('.value');
    if (!keys.length) { value.textContent = 'no values in this span'; index++; continue; }
    const last = m.get(keys[keys.length - 1])[3];
    value.textContent = `last ${num(last)}   min ${num(lo)}   max ${num(hi)}`;
    if (hi === lo) { hi += 0.5; lo -= 0.5; }
    const pad = (hi - lo) * 0.06;
    lo -= pad; hi += pad;
    const span = Math.max(1, state.to - state.from);
    const x = (b) => ((b * state.bucket - state.from) / span) * W;
    const y = (v) => H - ((v - lo) / (hi - lo)) * H;
    // Grid: the value range's ends.
    ctx.fillStyle = '#6a737d';
    ctx.font = `${10 * dpr}px ui-monospace, monospace`;
    ctx.fillText(num(hi - pad), 4, 11 * dpr);
    ctx.fillText(num(lo + pad), 4, H - 3 * dpr);
    ctx.strokeStyle = COLORS[index % COLORS.length];
    ctx.lineWidth = dpr;
    ctx.beginPath();
    let started = false;
    for (const k of keys) {
      const v = m.get(k);
      const px = x(k);
      if (!started) { ctx.moveTo(px, y(v[2])); started = true; } else ctx.lineTo(px, y(v[2]));
      ctx.lineTo(px, y(v[0]));
      ctx.lineTo(px, y(v[1]));
      ctx.lineTo(px, y(v[3]));
    }
    ctx.stroke();
    index++;
  }
}

// Drag across a plot to read that stretch of the past from the tape.
function zoomable(canvas) {
  let start = null;
  canvas.addEventListener('mousedown', (e) => { start = e.offsetX; });
  canvas.addEventListener('mouseup', (e) => {
    if (start === null) return;
    const a = Math.min(start, e.offsetX), b = Math.max(start, e.offsetX);
    start = null;
    if (b - a < 4) return;
    const w = canvas.clientWidth, span = state.to - state.from;
    const from = Math.floor(state.from + (a / w) * span), to = Math.ceil(state.from + (b / w) * span);
    state.live = false;
    state.from = from;
    state.to = to;
    $('live').classList.remove('on');
    loadHistory();
  });
}

// --- status, sinks, metadata -------------------------------------------------------------

function showStatus(s) {
  state.status = s;
  $('tape').textContent = s.tape;
  const st = $('state');
  st.textContent = s.recording ? 'recording' : 'not recording';
  st.className = 'pill' + (s.recording ? ' rec' : '');
  $('s-rate').textContent = num(s.rows_per_second, 0);
  $('s-ack').textContent = num(s.acknowledged, 0);
  $('s-bytes').textContent = bytes(s.tape_bytes);
  $('s-ratio').textContent = s.compression_ratio == null ? '–' : num(s.compression_ratio, 1) + '×';
  $('s-segments').textContent = String(s.segments);
  $('s-disk').textContent = s.disk_free == null ? '–'
    : `${bytes(s.disk_free)} (${num(100 * s.disk_free / Math.max(1, s.disk_total), 1)}%)`;
  $('s-first').textContent = num(s.first_row, 0);
  $('s-fsync').textContent = s.seconds_since_fsync == null ? '–' : num(s.seconds_since_fsync, 1) + ' s ago';
  const body = $('sinks').querySelector('tbody');
  body.replaceChildren();
  for (const k of s.sinks) {
    const tr = document.createElement('tr');
    tr.dataset.sink = k.sink;
    tr.dataset.state = k.state;
    if (k.behind) tr.className = 'behind';
    const cells = [k.sink, k.state, num(k.cursor, 0), num(k.lag_rows, 0), num(k.lag_seconds, 1), num(k.rows, 0), k.error || ''];
    cells.forEach((c, i) => {
      const td = document.createElement('td');
      td.textContent = c;
      if (i >= 2 && i <= 5) td.className = 'num';
      tr.append(td);
    });
    body.append(tr);
  }
  $('nosinks').hidden = s.sinks.length > 0;
  if (s.problems && s.problems.length) notice(s.problems.join('; '));
}

async function loadMeta() {
  try {
    const r = await fetch('/api/meta');
    const m = await r.json();
    if (!r.ok) { notice(m.error); return; }
    const body = $('meta').querySelector('tbody');
    body.replaceChildren();
    const flat = [];
    const walk = (prefix, v) => {
      if (v && typeof v === 'object' && !Array.isArray(v)) {
        for (const [k, x] of Object.entries(v)) walk(prefix ? prefix + '.' + k : k, x);
      } else flat.push([prefix, JSON.stringify(v)]);
    };
    if (m.value) walk('', m.value);
    for (const [k, v] of flat) {
      const tr = document.createElement('tr');
      const a = document.createElement('td'); a.textContent = k;
      const b = document.createElement('td'); b.textContent = v;
      tr.append(a, b);
      body.append(tr);
    }
    $('nometa').hidden = flat.length > 0;
    const ol = $('history');
    ol.replaceChildren();
    for (const rec of m.history.slice().reverse()) {
      const li = document.createElement('li');
      const what = rec.patch ? rec.patch.map((p) => `${p.op} ${p.path}${'value' in p ? ' = ' + JSON.stringify(p.value) : ''}`).join(', ')
        : 'snapshot';
      li.textContent = `${new Date(rec.time / 1000).toISOString()}  ${rec.action}${rec.author ? ' by ' + rec.author : ''}: ${what}`;
      ol.append(li);
    }
  } catch (e) {
    // The server is away for a moment; the next round tries again.
  }
}

async function loadStatus() {
  if (state.es && state.es.readyState === EventSource.OPEN) return; // the stream brings it
  try {
    const r = await fetch('/api/status');
    if (r.ok) showStatus(await r.json());
  } catch (e) {
    // As above.
  }
}

// --- SQL -----------------------------------------------------------------------------------

async function runSql() {
  const sql = $('sql').value;
  $('sqlinfo').textContent = 'running…';
  $('sqlerror').hidden = true;
  let a;
  try {
    const r = await fetch('/api/sql', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ sql }),
    });
    a = await r.json();
    if (!r.ok) {
      $('sqlerror').textContent = a.error;
      $('sqlerror').hidden = false;
      $('sqlinfo').textContent = '';
      return;
    }
  } catch (e) {
    $('sqlerror').textContent = 'cannot reach the server: ' + e;
    $('sqlerror').hidden = false;
    return;
  }
  $('sqlinfo').textContent = `${a.rows.length}${a.truncated ? '+' : ''} rows in ${a.millis} ms`;
  const table = document.createElement('table');
  table.id = 'sqltable';
  const head = document.createElement('tr');
  for (const c of a.columns) { const th = document.createElement('th'); th.textContent = c; head.append(th); }
  table.append(head);
  for (const row of a.rows) {
    const tr = document.createElement('tr');
    for (const c of a.columns) {
      const td = document.createElement('td');
      const v = row[c];
      td.textContent = v == null ? '' : (typeof v === 'object' ? JSON.stringify(v) : String(v));
      if (typeof v === 'number') td.className = 'num';
      tr.append(td);
    }
    table.append(tr);
  }
  $('sqlresult').replaceChildren(table);
  plotSql(a);
}

// A result with a numeric column is also drawn: against its first time column, or row order.
function plotSql(a) {
  const canvas = $('sqlplot');
  const numeric = a.columns.filter((c, i) => /Int|Float|Decimal/.test(a.types[i]));
  const timeCol = a.columns.find((c, i) => a.types[i].startsWith('Timestamp'));
  if (!numeric.length || a.rows.length < 2) { canvas.hidden = true; return; }
  canvas.hidden = false;
  const dpr = window.devicePixelRatio || 1;
  canvas.width = Math.round(canvas.clientWidth * dpr);
  canvas.height = Math.round(canvas.clientHeight * dpr);
  const ctx = canvas.getContext('2d');
  const W = canvas.width, H = canvas.height;
  ctx.clearRect(0, 0, W, H);
  const xs = a.rows.map((r, i) => (timeCol ? Date.parse(r[timeCol]) : i));
  const x0 = Math.min(...xs), x1 = Math.max(...xs);
  numeric.forEach((c, ci) => {
    const ys = a.rows.map((r) => (typeof r[c] === 'number' ? r[c] : null));
    const good = ys.filter((v) => v !== null);
    if (!good.length) return;
    let lo = Math.min(...good), hi = Math.max(...good);
    if (hi === lo) { hi += 0.5; lo -= 0.5; }
    ctx.strokeStyle = COLORS[ci % COLORS.length];
    ctx.lineWidth = dpr;
    ctx.beginPath();
    let started = false;
    ys.forEach((v, i) => {
      if (v === null) return;
      const px = ((xs[i] - x0) / Math.max(1, x1 - x0)) * W;
      const py = H - ((v - lo) / (hi - lo)) * (H - 10 * dpr) - 5 * dpr;
      if (!started) { ctx.moveTo(px, py); started = true; } else ctx.lineTo(px, py);
    });
    ctx.stroke();
    ctx.fillStyle = COLORS[ci % COLORS.length];
    ctx.font = `${11 * dpr}px ui-monospace, monospace`;
    ctx.fillText(c, 6 * dpr, (14 + 13 * ci) * dpr);
  });
}

// --- start -----------------------------------------------------------------------------------

function start() {
  for (const b of document.querySelectorAll('button[data-window]')) {
    b.addEventListener('click', () => {
      for (const x of document.querySelectorAll('button[data-window]')) x.classList.remove('on');
      b.classList.add('on');
      state.window = b.dataset.window === 'all' ? 'all' : Number(b.dataset.window);
      state.live = true;
      $('live').classList.add('on');
      loadHistory();
    });
  }
  $('live').addEventListener('click', () => {
    state.live = true;
    $('live').classList.add('on');
    loadHistory();
  });
  $('run').addEventListener('click', runSql);
  $('sql').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) { e.preventDefault(); runSql(); }
  });
  window.addEventListener('resize', schedule);
  // A hidden tab lets go of its stream: a browser keeps at most six connections to one server
  // over HTTP/1.1, and each open page's stream holds one. Shown again, it continues from the
  // last sequence number it has (or reloads its window, after a long absence).
  let hiddenAt = null;
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'hidden') {
      hiddenAt = Date.now();
      closeLive();
      $('conn').textContent = 'paused while hidden';
    } else if (state.live) {
      const away = hiddenAt === null ? 0 : Date.now() - hiddenAt;
      hiddenAt = null;
      if (away > 60000) loadHistory(); else if (!state.es) openLive();
    }
  });
  loadStatus();
  loadMeta();
  loadHistory();
  setInterval(loadMeta, 5000);
  setInterval(loadStatus, 2000);
}

start();
