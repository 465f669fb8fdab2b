// Sluice's status page: connectors and tasks from the REST API, charts of
// the worker's history (GET sluice/history), and the pause / resume /
// restart calls of the same API. Hand-written, no dependencies; every
// request goes to the origin that served the page (with the browser's
// basic-auth credentials when the worker asks for them).
'use strict';

(function () {
  const STATUS_EVERY_MS = 2000;
  const SVG = 'http://www.w3.org/2000/svg';
  const PALETTE = ['#0969da', '#cf222e', '#1a7f37', '#8250df', '#bf8700', '#0a7d8c', '#d4511f', '#57606a'];

  // What each chart draws: a function from (connector name, its point) to
  // the series it contributes, as [label, value] pairs.
  const CHARTS = [
    {
      id: 'throughput',
      title: 'Throughput (source events/s, sink records/s)',
      format: fmtNum,
      series: (name, c) => [[name, c.records_per_second]],
    },
    {
      id: 'latency',
      title: 'Commit-to-durable latency (ms, p50 / p99)',
      format: fmtMs,
      series: (name, c) => c.kind === 'sink'
        ? [[name + ' p50', c.latency_p50_ms], [name + ' p99', c.latency_p99_ms]]
        : [],
    },
    {
      id: 'lag',
      title: 'Lag (ms behind the source / age of a sink\u2019s newest durable change)',
      format: fmtMs,
      series: (name, c) => [[name, c.lag_ms]],
    },
    {
      id: 'backlog',
      title: 'Sink backlog (records not yet committed)',
      format: fmtNum,
      series: (name, c) => c.kind === 'sink' ? [[name, c.backlog_records]] : [],
    },
    {
      id: 'wal',
      title: 'WAL retained by the replication slot',
      format: fmtBytes,
      series: (name, c) => c.kind === 'source' ? [[name, c.retained_wal_bytes]] : [],
    },
  ];

  const history = { intervalMs: 5000, capacity: 720, points: [] };
  const colors = new Map();

  // ---- small helpers -------------------------------------------------

  /** Creates an element; strings among `children` become text (never HTML). */
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k.startsWith('data-')) e.setAttribute(k, String(v));
      else if (k === 'title') e.title = v;
      else e[k] = v;
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined) continue;
      e.append(typeof c === 'string' ? document.createTextNode(c) : c);
    }
    return e;
  }

  function svg(tag, attrs) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    return e;
  }

  function fmtNum(v) {
    if (v === null || v === undefined || !isFinite(v)) return '-';
    const a = Math.abs(v);
    if (a >= 1e9) return (v / 1e9).toFixed(1) + 'G';
    if (a >= 1e6) return (v / 1e6).toFixed(1) + 'M';
    if (a >= 1e4) return (v / 1e3).toFixed(1) + 'k';
    if (a >= 100 || Number.isInteger(v)) return String(Math.round(v));
    return v.toFixed(1);
  }

  function fmtMs(v) {
    if (v === null || v === undefined || !isFinite(v)) return '-';
    if (v < 1000) return fmtNum(v) + ' ms';
    if (v < 120000) return (v / 1000).toFixed(1) + ' s';
    return (v / 60000).toFixed(1) + ' min';
  }

  function fmtBytes(v) {
    if (v === null || v === undefined || !isFinite(v)) return '-';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return (i === 0 ? String(Math.round(v)) : v.toFixed(1)) + ' ' + units[i];
  }

  function colorOf(label) {
    if (!colors.has(label)) colors.set(label, PALETTE[colors.size % PALETTE.length]);
    return colors.get(label);
  }

  function showError(msg) {
    const b = document.getElementById('banner');
    b.textContent = msg;
    b.hidden = false;
  }

  function clearError() {
    document.getElementById('banner').hidden = true;
  }

  /**
   * `path` relative to the page, without the user name and password a
   * page opened as http://user:pass@host/ carries (fetch refuses URLs
   * holding credentials; the browser sends the ones it signed in with).
   */
  function url(path) {
    return new URL(path, location.origin + location.pathname).href;
  }

  /** A request to the worker; rejects with the API's own error message. */
  async function api(method, path) {
    let r;
    try {
      r = await fetch(url(path), { method, headers: { Accept: 'application/json' }, credentials: 'same-origin' });
    } catch (e) {
      throw new Error(`${method} ${path}: the worker did not answer (${e.message}); is it still running?`);
    }
    const text = await r.text();
    let body = null;
    if (text) {
      try { body = JSON.parse(text); } catch (_) { body = null; }
    }
    if (!r.ok) {
      const why = body && body.message ? body.message : (text || r.statusText);
      const hint = r.status === 401 ? ' (reload the page to sign in again)' : '';
      throw new Error(`${method} ${path}: HTTP ${r.status}: ${why}${hint}`);
    }
    return body;
  }

  // ---- connectors and tasks ------------------------------------------

  function stateBadge(s) {
    return el('span', { class: 'state ' + s, 'data-state': s }, s);
  }

  // Traces the user unfolded stay unfolded when the table is redrawn.
  const openTraces = new Set();

  function traceCell(trace, key) {
    if (!trace) return el('td');
    const first = trace.split('\n').find((l) => l.trim() !== '') || 'error';
    const d = el('details', { class: 'trace', open: openTraces.has(key) }, el('summary', {}, first.trim()), el('pre', {}, trace));
    d.addEventListener('toggle', () => {
      if (d.open) openTraces.add(key);
      else openTraces.delete(key);
    });
    return el('td', {}, d);
  }

  function button(label, action, connector, task) {
    const b = el('button', { type: 'button', 'data-action': action, 'data-connector': connector }, label);
    if (task !== undefined) b.setAttribute('data-task', String(task));
    b.addEventListener('click', () => act(b, action, connector, task));
    return b;
  }

  /** A task's figures as short cells: rate, lag, slot WAL or sink pending. */
  function figures(d) {
    if (!d) return ['', '', ''];
    if (d.streaming) {
      const s = d.streaming;
      const wal = s.slot && s.slot.retained_wal_bytes !== undefined ? fmtBytes(s.slot.retained_wal_bytes) : '';
      return [
        s.records_per_second !== undefined ? fmtNum(s.records_per_second) + '/s' : '',
        s.behind_source_ms !== undefined ? fmtMs(s.behind_source_ms) : '',
        wal,
      ];
    }
    if (d.sink) {
      const s = d.sink;
      return [
        s.records_per_second !== undefined ? fmtNum(s.records_per_second) + '/s' : '',
        `${fmtNum(s.records_pending)} pending`,
        s.latency_p99_ms !== undefined ? `p99 ${fmtMs(s.latency_p99_ms)}` : '',
      ];
    }
    return ['', '', ''];
  }

  function renderConnectors(all) {
    const names = Object.keys(all).sort();
    const box = document.getElementById('connectors');
    if (names.length === 0) {
      box.replaceChildren(el('p', { class: 'muted', id: 'no-connectors' }, 'No connectors. Create one with POST /connectors.'));
      return;
    }
    const head = el('tr', {}, ['Connector / task', 'Type', 'State', 'Worker', 'Rate', 'Lag / pending', 'WAL / latency', 'Error', 'Actions'].map((h) => el('th', {}, h)));
    const rows = [];
    for (const name of names) {
      const st = all[name].status;
      if (!st) continue;
      const c = st.connector || {};
      const kind = st.type || (all[name].info && all[name].info.type) || '';
      rows.push(el('tr', { class: 'connector', 'data-connector': name },
        el('td', {}, name),
        el('td', {}, kind),
        el('td', { 'data-role': 'state' }, stateBadge(c.state || 'UNKNOWN')),
        el('td', {}, c.worker_id || ''),
        el('td'), el('td'), el('td'),
        traceCell(c.trace, name),
        el('td', {},
          button('Pause', 'pause', name),
          button('Resume', 'resume', name),
          button('Restart', 'restart', name))));
      for (const t of (st.tasks || []).slice().sort((a, b) => a.id - b.id)) {
        const [rate, lag, wal] = figures(t);
        const health = t.health
          ? el('div', { class: 'health ' + t.health.level }, t.health.message)
          : null;
        const err = traceCell(t.trace, `${name}/${t.id}`);
        if (health) err.prepend(health);
        rows.push(el('tr', { class: 'task', 'data-connector': name, 'data-task': t.id },
          el('td', {}, `task ${t.id}`),
          el('td'),
          el('td', { 'data-role': 'state' }, stateBadge(t.state)),
          el('td', {}, t.worker_id || ''),
          el('td', { class: 'num' }, rate),
          el('td', { class: 'num' }, lag),
          el('td', { class: 'num' }, wal),
          err,
          el('td', {}, button('Restart', 'restart-task', name, t.id))));
      }
    }
    box.replaceChildren(el('table', { id: 'connector-table' }, el('thead', {}, head), el('tbody', {}, rows)));
  }

  function renderSnapshots(all) {
    const boxes = [];
    for (const name of Object.keys(all).sort()) {
      const st = all[name].status;
      for (const t of (st && st.tasks) || []) {
        const s = t.snapshot;
        if (!s) continue;
        const phase = s.running ? 'running' : s.completed ? 'completed' : s.aborted ? 'aborted' : 'stopped';
        const bars = (s.tables || []).map((tb) => {
          const est = tb.rows_estimated;
          const pct = tb.done ? 100 : est ? Math.min(99, (100 * tb.rows_scanned) / est) : 0;
          const fill = el('div');
          fill.style.width = pct.toFixed(1) + '%';
          const label = tb.done
            ? `${fmtNum(tb.rows_scanned)} rows, done`
            : `${fmtNum(tb.rows_scanned)} of ~${est ? fmtNum(est) : '?'} rows`;
          return el('div', { class: 'bar-row', 'data-table': tb.name, 'data-percent': pct.toFixed(1) },
            el('span', {}, tb.name),
            el('div', { class: 'bar' + (tb.done ? ' done' : '') }, fill),
            el('span', { class: 'muted' }, label));
        });
        boxes.push(el('div', { class: 'snapshot', 'data-connector': name, 'data-task': t.id },
          el('h3', {}, `${name} task ${t.id}: snapshot ${phase}, ${fmtNum(s.rows_scanned)} of ~${fmtNum(s.rows_estimated)} rows in ${s.seconds.toFixed(1)} s`),
          bars));
      }
    }
    document.getElementById('snapshot-section').hidden = boxes.length === 0;
    document.getElementById('snapshots').replaceChildren(...boxes);
  }

  async function refreshStatus() {
    try {
      const all = await api('GET', 'connectors?expand=status&expand=info');
      renderConnectors(all || {});
      renderSnapshots(all || {});
      document.getElementById('updated').textContent = 'updated ' + new Date().toLocaleTimeString();
      clearError();
    } catch (e) {
      showError(e.message);
    }
  }

  async function act(btn, action, connector, task) {
    const c = encodeURIComponent(connector);
    const calls = {
      pause: ['PUT', `connectors/${c}/pause`],
      resume: ['PUT', `connectors/${c}/resume`],
      restart: ['POST', `connectors/${c}/restart?includeTasks=true&onlyFailed=false`],
      'restart-task': ['POST', `connectors/${c}/tasks/${task}/restart`],
    };
    const [method, path] = calls[action];
    btn.disabled = true;
    try {
      await api(method, path);
      clearError();
    } catch (e) {
      showError(e.message);
    } finally {
      btn.disabled = false;
    }
    await refreshStatus();
  }

  // ---- history charts ------------------------------------------------

  /** Every series of `chart` over the history: label -> [[t, value|null]]. */
  function seriesOf(chart) {
    const out = new Map();
    history.points.forEach((p, i) => {
      for (const [name, c] of Object.entries(p.connectors)) {
        for (const [label, v] of chart.series(name, c)) {
          if (!out.has(label)) out.set(label, new Array(history.points.length).fill(null));
          out.get(label)[i] = v === undefined || v === null ? null : Number(v);
        }
      }
    });
    return out;
  }

  function drawChart(chart) {
    const W = 600, H = 170, L = 52, R = 8, T = 8, B = 20;
    const series = seriesOf(chart);
    const pts = history.points;
    const end = pts.length ? pts[pts.length - 1].t : Date.now();
    const span = history.intervalMs * history.capacity;
    const start = end - span;
    let max = 0;
    for (const vals of series.values()) for (const v of vals) if (v !== null && isFinite(v)) max = Math.max(max, v);
    const top = max > 0 ? max * 1.1 : 1;
    const x = (t) => L + ((t - start) / span) * (W - L - R);
    const y = (v) => T + (1 - v / top) * (H - T - B);

    const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'data-points': pts.length, id: 'chart-' + chart.id });
    for (const f of [0, 0.5, 1]) {
      const yy = y(top * f);
      root.append(svg('line', { class: 'grid', x1: L, x2: W - R, y1: yy, y2: yy }));
      const lbl = svg('text', { x: L - 4, y: yy + 3, 'text-anchor': 'end' });
      lbl.textContent = chart.format(top * f);
      root.append(lbl);
    }
    const minutes = Math.round(span / 60000);
    for (const [t, text] of [[start, `-${minutes} min`], [end, 'now']]) {
      const lbl = svg('text', { x: x(t), y: H - 5, 'text-anchor': t === start ? 'start' : 'end' });
      lbl.textContent = text;
      root.append(lbl);
    }
    const legend = el('div', { class: 'legend' });
    for (const [label, vals] of series) {
      const color = colorOf(label);
      // A gap in the data (no value) breaks the line.
      let seg = [];
      const flush = () => {
        if (seg.length === 1) {
          root.append(svg('circle', { cx: seg[0][0], cy: seg[0][1], r: 1.5, fill: color }));
        } else if (seg.length > 1) {
          root.append(svg('polyline', { points: seg.map((p) => p.join(',')).join(' '), stroke: color, 'data-series': label }));
        }
        seg = [];
      };
      vals.forEach((v, i) => {
        if (v === null || !isFinite(v)) flush();
        else seg.push([x(pts[i].t).toFixed(1), y(v).toFixed(1)]);
      });
      flush();
      const known = vals.filter((v) => v !== null && isFinite(v));
      const last = known.length ? known[known.length - 1] : undefined;
      const swatch = el('span', { class: 'swatch' });
      swatch.style.background = color;
      legend.append(el('span', {
        'data-series': label,
        'data-last': last === undefined ? '' : last,
        'data-max': known.length ? Math.max(...known) : '',
        'data-count': known.length,
      },
        swatch, `${label}: ${last === undefined ? '-' : chart.format(last)}`));
    }
    const body = series.size === 0
      ? el('p', { class: 'empty' }, pts.length ? 'No connector reports this.' : 'No points yet.')
      : legend;
    return el('div', { class: 'chart', 'data-chart': chart.id }, el('h3', {}, chart.title), root, body);
  }

  function renderCharts() {
    document.getElementById('charts').replaceChildren(...CHARTS.map(drawChart));
    const every = history.intervalMs >= 1000 ? `${history.intervalMs / 1000} s` : `${history.intervalMs} ms`;
    document.getElementById('history-note').textContent =
      `${history.points.length} of ${history.capacity} points, one every ${every} (GET sluice/history).`;
  }

  async function refreshHistory() {
    const last = history.points.length ? history.points[history.points.length - 1].t : null;
    try {
      const h = await api('GET', 'sluice/history' + (last === null ? '' : `?since=${last}`));
      history.intervalMs = h.interval_ms;
      history.capacity = h.capacity;
      history.points.push(...h.points);
      if (history.points.length > history.capacity) {
        history.points.splice(0, history.points.length - history.capacity);
      }
      renderCharts();
    } catch (e) {
      showError(e.message);
    }
  }

  async function refreshWorker() {
    try {
      const w = await api('GET', './');
      document.getElementById('worker').textContent = `worker ${w.version || ''} (${w.commit || 'unknown commit'})`;
    } catch (_) {
      // The version is a nicety; the other requests report errors.
    }
  }

  function loop(f, delay) {
    const run = async () => {
      await f();
      setTimeout(run, typeof delay === 'function' ? delay() : delay);
    };
    run();
  }

  refreshWorker();
  loop(refreshStatus, STATUS_EVERY_MS);
  loop(refreshHistory, () => Math.max(250, history.intervalMs));
})();
