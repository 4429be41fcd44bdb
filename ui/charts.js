// Small SVG line charts (no library): lineChart(el, xs, series, opts).
// series: [{label, values, cls}]; xs: bucket start times (Unix ms).
"use strict";
(function () {
  const NS = "http://www.w3.org/2000/svg";
  function node(name, attrs, parent) {
    const n = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    if (parent) parent.appendChild(n);
    return n;
  }
  function nice(max) {
    if (!(max > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(max)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= max) return m * p;
    return 10 * p;
  }
  function fmt(v) {
    if (v >= 1e6) return (v / 1e6).toFixed(1) + "M";
    if (v >= 1e3) return (v / 1e3).toFixed(1) + "k";
    if (v > 0 && v < 0.01) return v.toExponential(0);
    return String(Math.round(v * 100) / 100);
  }
  function timeLabel(t, spanMs) {
    const d = new Date(t);
    if (spanMs > 2 * 86400000) return (d.getMonth() + 1) + "/" + d.getDate();
    return String(d.getHours()).padStart(2, "0") + ":" + String(d.getMinutes()).padStart(2, "0");
  }
  function lineChart(el, xs, series) {
    el.textContent = "";
    const W = 480, H = 180, L = 44, R = 8, T = 8, B = 22;
    const svg = node("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", class: "svgchart" }, el);
    const max = nice(Math.max(0, ...series.flatMap((s) => s.values)));
    const n = xs.length;
    const x = (i) => L + (n <= 1 ? 0 : (i * (W - L - R)) / (n - 1));
    const y = (v) => T + (H - T - B) * (1 - v / max);
    for (let k = 0; k <= 4; k++) {
      const v = (max * k) / 4;
      node("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }, svg);
      node("text", { x: L - 4, y: y(v) + 4, class: "axis", "text-anchor": "end" }, svg).textContent = fmt(v);
    }
    const span = n ? xs[n - 1] - xs[0] : 0;
    for (let k = 0; k < 4 && n > 1; k++) {
      const i = Math.round((k * (n - 1)) / 3);
      node("text", { x: x(i), y: H - 6, class: "axis", "text-anchor": k === 0 ? "start" : k === 3 ? "end" : "middle" }, svg)
        .textContent = timeLabel(xs[i], span);
    }
    const desc = [];
    series.forEach((s, si) => {
      const d = s.values.map((v, i) => (i ? "L" : "M") + x(i).toFixed(1) + " " + y(v).toFixed(1)).join(" ");
      node("path", { d, class: "line s" + si }, svg);
      const total = s.values.reduce((a, b) => a + b, 0);
      desc.push(`${s.label}: peak ${fmt(Math.max(0, ...s.values))}` + (s.sum ? `, total ${fmt(total)}` : ""));
    });
    node("title", {}, svg).textContent = desc.join("; ");
    if (series.length > 1) {
      const legend = document.createElement("div");
      legend.className = "legend";
      series.forEach((s, si) => {
        const item = document.createElement("span");
        item.className = "key s" + si;
        item.textContent = s.label;
        legend.appendChild(item);
      });
      el.appendChild(legend);
    }
    el.dataset.points = String(series.reduce((a, s) => a + s.values.filter((v) => v > 0).length, 0));
  }
  window.lineChart = lineChart;
  window.fmtNum = fmt;
})();
