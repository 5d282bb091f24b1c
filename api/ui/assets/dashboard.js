// flashsale live sale dashboard: polls GET /v1/dashboard and draws it.
// Plain DOM and a hand-drawn canvas chart; no framework, no dependencies.
"use strict";

(function () {
  const POLL_MS = 500;
  const HISTORY = 240; // samples kept for the chart: two minutes at 500ms
  const OUTCOMES = ["succeeded", "sold_out", "limit_exceeded", "failed"];
  const LABELS = { succeeded: "succeeded", sold_out: "sold out", limit_exceeded: "over limit", failed: "failed" };

  const $ = (id) => document.getElementById(id);
  const fmt = new Intl.NumberFormat("en-US");
  const rows = new Map(); // product id -> row elements
  let prev = null; // previous snapshot: {t, decided: Map}
  const history = []; // {t, rate, depth}

  function decided(p) {
    return OUTCOMES.reduce((n, k) => n + (p.orders[k] || 0), 0);
  }

  function setStatus(state, text) {
    const s = $("status");
    s.dataset.state = state;
    s.textContent = text;
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function row(p) {
    let r = rows.get(p.id);
    if (r) return r;
    const tr = el("tr");
    tr.dataset.product = p.id;
    const name = el("td", "name");
    name.append(el("strong", "", p.id), el("small", "", p.name));
    const cell = (field) => {
      const td = el("td", "num", "–");
      td.dataset.field = field;
      return td;
    };
    r = { tr, stock: cell("stock"), sold: cell("sold"), rate: cell("rate"), bar: el("div", "mix"), counts: {} };
    const mix = el("td", "outcomes");
    const legend = el("div", "counts");
    for (const k of OUTCOMES) {
      const seg = el("span", k);
      seg.title = LABELS[k];
      r.bar.append(seg);
      const c = el("span", "count " + k, "0");
      c.dataset.field = k;
      r.counts[k] = { seg, c };
      legend.append(el("i", "key " + k), c, document.createTextNode(" " + LABELS[k] + "  "));
    }
    mix.append(r.bar, legend);
    tr.append(name, r.stock, r.sold, r.rate, mix);
    rows.set(p.id, r);
    return r;
  }

  function render(snap) {
    const t = Date.parse(snap.time);
    const tbody = document.querySelector("#products tbody");
    const seen = new Set();
    const decidedNow = new Map();
    let totalSold = 0;
    let totalRate = 0;
    const dt = prev ? (t - prev.t) / 1000 : 0;
    const fresh = dt > 0;
    snap.products.forEach((p, i) => {
      const r = row(p);
      seen.add(p.id);
      if (tbody.children[i] !== r.tr) tbody.insertBefore(r.tr, tbody.children[i] || null);
      r.stock.textContent = fmt.format(p.stock);
      r.sold.textContent = fmt.format(p.sold);
      totalSold += p.sold;
      const d = decided(p);
      decidedNow.set(p.id, d);
      if (fresh) {
        const before = prev.decided.has(p.id) ? prev.decided.get(p.id) : d;
        const rate = Math.max(0, (d - before) / dt);
        totalRate += rate;
        r.rate.textContent = fmt.format(Math.round(rate));
      }
      for (const k of OUTCOMES) {
        const n = p.orders[k] || 0;
        r.counts[k].c.textContent = fmt.format(n);
        r.counts[k].seg.style.width = d > 0 ? (100 * n) / d + "%" : "0";
      }
    });
    for (const [id, r] of rows) {
      if (!seen.has(id)) {
        r.tr.remove();
        rows.delete(id);
      }
    }
    $("more").hidden = !snap.more;

    const q = snap.queue;
    const depth = q.size; // every task not yet done: pending, running, retrying
    $("queue-depth").textContent = fmt.format(depth);
    $("queue-pending").textContent = fmt.format(q.pending);
    $("queue-active").textContent = fmt.format(q.active);
    $("queue-retry").textContent = fmt.format(q.retry + q.scheduled);
    $("queue-archived").textContent = fmt.format(q.archived);
    $("queue-latency").textContent = q.latency_ms < 1000 ? q.latency_ms + " ms" : (q.latency_ms / 1000).toFixed(1) + " s";
    $("total-sold").textContent = fmt.format(totalSold);

    if (fresh || !prev) {
      if (fresh) {
        $("total-rate").textContent = fmt.format(Math.round(totalRate));
        history.push({ t, rate: totalRate, depth });
        if (history.length > HISTORY) history.shift();
        draw();
      }
      prev = { t, decided: decidedNow };
    }
  }

  // draw plots decided orders/s and queue depth, each on its own scale.
  function draw() {
    const c = $("chart");
    const dpr = window.devicePixelRatio || 1;
    const w = c.clientWidth || c.width;
    const h = c.clientHeight || c.height;
    if (c.width !== Math.round(w * dpr)) {
      c.width = Math.round(w * dpr);
      c.height = Math.round(h * dpr);
    }
    const g = c.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    const pad = { l: 48, r: 48, t: 10, b: 20 };
    const pw = w - pad.l - pad.r;
    const ph = h - pad.t - pad.b;
    const nice = (v) => {
      if (v <= 5) return 5;
      const p = Math.pow(10, Math.floor(Math.log10(v)));
      for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
      return 10 * p;
    };
    const maxRate = nice(Math.max(0, ...history.map((s) => s.rate)));
    const maxDepth = nice(Math.max(0, ...history.map((s) => s.depth)));
    const css = getComputedStyle(document.body);
    g.font = "11px system-ui, sans-serif";
    g.strokeStyle = css.getPropertyValue("--grid") || "#ddd";
    g.lineWidth = 1;
    g.fillStyle = css.getPropertyValue("--dim") || "#777";
    for (let i = 0; i <= 4; i++) {
      const y = pad.t + ph - (ph * i) / 4;
      g.beginPath();
      g.moveTo(pad.l, y);
      g.lineTo(pad.l + pw, y);
      g.stroke();
      g.textAlign = "right";
      g.fillText(fmt.format((maxRate * i) / 4), pad.l - 6, y + 4);
      g.textAlign = "left";
      g.fillText(fmt.format((maxDepth * i) / 4), pad.l + pw + 6, y + 4);
    }
    const x = (i) => pad.l + (pw * (HISTORY - history.length + i)) / (HISTORY - 1);
    const line = (key, max, color) => {
      if (history.length < 2) return;
      g.strokeStyle = color;
      g.lineWidth = 2;
      g.beginPath();
      history.forEach((s, i) => {
        const y = pad.t + ph - (ph * s[key]) / max;
        if (i === 0) g.moveTo(x(i), y);
        else g.lineTo(x(i), y);
      });
      g.stroke();
    };
    line("depth", maxDepth, css.getPropertyValue("--depth") || "#d97706");
    line("rate", maxRate, css.getPropertyValue("--rate") || "#2563eb");
  }

  async function poll() {
    try {
      const res = await fetch("/v1/dashboard", { cache: "no-store", headers: { Accept: "application/json" } });
      if (res.status === 401) {
        $("board").hidden = true;
        $("signin").hidden = false;
        setStatus("signed-out", "sign-in needed");
        return; // the sign-in link reloads the page
      }
      if (!res.ok) throw new Error("HTTP " + res.status);
      const snap = await res.json();
      $("signin").hidden = true;
      $("board").hidden = false;
      render(snap);
      setStatus("live", "live · " + new Date(snap.time).toLocaleTimeString());
    } catch (e) {
      setStatus("error", "disconnected, retrying (" + e.message + ")");
    }
    setTimeout(poll, POLL_MS);
  }

  poll();
})();
