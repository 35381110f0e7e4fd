// prefect-mlops web UI: small progressive enhancements of server-rendered pages.
// Text from the server is only ever put in the page with textContent / attributes;
// the artifact preview fragment is HTML rendered (and escaped) by the server.
"use strict";
(function () {
  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));
  const el = (tag, attrs, text) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  };
  const SVG = "http://www.w3.org/2000/svg";
  const svgEl = (tag, attrs, text) => {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  };
  const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"];

  // ------------------------------------------------------------------ runs table
  function runsPage() {
    const form = $("#view-form");
    const key = "mlops-view-" + form.dataset.experiment;
    // The view lives in the URL; the last one is remembered per experiment and
    // restored when the experiment is opened without one.
    if (location.search) {
      localStorage.setItem(key, location.search);
    } else {
      const saved = localStorage.getItem(key);
      if (saved) { location.replace(location.pathname + saved); return; }
    }
    const chooser = $("#column-chooser");
    chooser.addEventListener("change", () => {
      $("#cols").value = $$("input[type=checkbox]:checked", chooser).map((c) => c.value).join(",");
    });
    for (const sel of ["#status", "#since", "#size"]) $(sel).addEventListener("change", () => form.submit());
    // Dropping empty fields keeps shared URLs short.
    form.addEventListener("submit", () => {
      for (const input of $$("input, select", form)) if (input.name && !input.value) input.disabled = true;
    });
    const compare = $("#compare-form");
    const update = () => {
      const n = $$("input[name=runs]:checked", compare).length;
      $("#selected-count").textContent = n + " selected";
      $("#compare-button").disabled = n < 2 || n > 50;
    };
    compare.addEventListener("change", update);
    update();
    // Expand a parent: its child rows (server-rendered, same columns and order) go right
    // under it; collapsing removes them and their own expanded children.
    const table = $("#runs");
    table.addEventListener("click", async (ev) => {
      const button = ev.target.closest("button.expand");
      if (!button) return;
      const row = button.closest("tr");
      const runId = button.dataset.run;
      if (button.getAttribute("aria-expanded") === "true") {
        const drop = new Set([runId]);
        for (const r of $$("tbody tr[data-parent]", table)) {
          if (drop.has(r.dataset.parent)) { if (r.dataset.runId) drop.add(r.dataset.runId); r.remove(); }
        }
        button.setAttribute("aria-expanded", "false");
        button.textContent = button.textContent.replace("▾", "▸");
        return;
      }
      button.disabled = true;
      const qs = new URLSearchParams({ cols: $("#cols").value, order: form.elements.order.value,
                                       depth: String(Number(row.dataset.depth || 0) + 1) });
      const r = await fetch(`/ui-api/runs/${encodeURIComponent(runId)}/children?${qs}`);
      button.disabled = false;
      if (!r.ok) { button.title = "Cannot load child runs: " + (await r.text()); return; }
      const body = document.createElement("tbody");
      body.innerHTML = await r.text(); // server-rendered, escaped rows
      row.after(...Array.from(body.children));
      button.setAttribute("aria-expanded", "true");
      button.textContent = button.textContent.replace("▸", "▾");
      update();
    });
  }

  // ------------------------------------------------------------------ run page
  function runPage() {
    const tree = $("#artifact-tree");
    if (tree) loadLevel(tree, tree.dataset.run, "");
    $$(".chart-box").forEach(chart);
  }

  async function loadLevel(ul, runId, path) {
    const r = await fetch(`/ui-api/runs/${encodeURIComponent(runId)}/artifacts?path=${encodeURIComponent(path)}`);
    if (!r.ok) { ul.appendChild(el("li", { class: "error" }, "Cannot list artifacts: " + (await r.text()))); return; }
    const files = (await r.json()).files;
    if (!files.length && !path) ul.appendChild(el("li", { class: "muted" }, "no artifacts"));
    for (const f of files) {
      const name = f.path.split("/").pop();
      const li = el("li", { class: f.is_dir ? "dir" : "file" });
      const link = el("a", { href: "#", "data-path": f.path }, f.is_dir ? name + "/" : name);
      li.appendChild(link);
      if (!f.is_dir && f.size != null) li.appendChild(el("span", { class: "muted" }, " " + f.size.toLocaleString() + " B"));
      link.addEventListener("click", async (ev) => {
        ev.preventDefault();
        if (f.is_dir) {
          const sub = li.querySelector("ul");
          if (sub) { sub.remove(); return; }
          const child = el("ul");
          li.appendChild(child);
          loadLevel(child, runId, f.path);
        } else {
          showPreview(runId, f.path);
        }
      });
      ul.appendChild(li);
    }
  }

  async function showPreview(runId, path) {
    const box = $("#artifact-preview");
    box.classList.remove("muted");
    box.textContent = "Loading " + path + "…";
    const r = await fetch(`/ui-api/runs/${encodeURIComponent(runId)}/preview?path=${encodeURIComponent(path)}`);
    if (!r.ok) { box.textContent = "Cannot preview: " + (await r.text()); return; }
    box.innerHTML = await r.text(); // server-rendered, escaped fragment
    box.dataset.path = path;
  }

  // ------------------------------------------------------------------ charts
  function smooth(ys, weight) {
    if (!weight) return ys;
    // Exponential moving average with TensorBoard's debiasing, gaps kept as gaps.
    const out = new Array(ys.length);
    let last = 0, n = 0;
    for (let i = 0; i < ys.length; i++) {
      const y = ys[i];
      if (y == null || !isFinite(y)) { out[i] = y; continue; }
      last = last * weight + (1 - weight) * y;
      n++;
      out[i] = last / (1 - Math.pow(weight, n));
    }
    return out;
  }

  function chart(box) {
    const runIds = box.dataset.runs.split(",").filter(Boolean);
    const keys = JSON.parse(box.dataset.keys);
    const controls = el("div", { class: "bar chart-controls" });
    const metric = el("select", { class: "chart-metric", "aria-label": "metric" });
    keys.forEach((k) => metric.appendChild(el("option", { value: k }, k)));
    const axis = el("select", { class: "chart-axis", "aria-label": "x axis" });
    [["step", "step"], ["time", "wall time"], ["relative", "relative time (s)"]].forEach(([v, t]) => axis.appendChild(el("option", { value: v }, t)));
    const smoothing = el("input", { type: "range", min: "0", max: "0.99", step: "0.01", value: "0", class: "chart-smoothing", "aria-label": "smoothing" });
    const smoothLabel = el("span", { class: "muted" }, "0");
    const log = el("input", { type: "checkbox", class: "chart-log" });
    const info = el("span", { class: "muted chart-info" });
    controls.append("metric ", metric, " x ", axis, " smoothing ", smoothing, smoothLabel);
    const logLabel = el("label");
    logLabel.append(log, " log y");
    controls.append(logLabel, info);
    const plotBox = el("div", { class: "chart" });
    box.append(controls, plotBox);
    let plot = null, raw = null, requestId = 0;

    async function load(lo, hi) {
      const id = ++requestId;
      const started = performance.now();
      const qs = new URLSearchParams({ key: metric.value, axis: axis.value, buckets: "1000" });
      runIds.forEach((r) => qs.append("run", r));
      if (lo != null) { qs.set("lo", String(lo)); qs.set("hi", String(hi)); }
      const r = await fetch("/ui-api/metric-history?" + qs);
      if (id !== requestId) return; // a newer request superseded this one
      if (!r.ok) { info.textContent = "Cannot load: " + (await r.text()); return; }
      raw = await r.json();
      draw(lo != null);
      box.dataset.drawMs = (performance.now() - started).toFixed(1); // request + parse + draw (bench/ui_bench.py)
    }

    function draw(zoomed) {
      const scale = axis.value === "step" ? 1 : 1000; // uPlot's time axes are in seconds
      const tables = raw.series.map((s) => [s.x.map((x) => x / scale), smooth(s.y, Number(smoothing.value)).map((y) => (log.checked && !(y > 0) ? null : y))]);
      const data = tables.length === 1 ? tables[0] : uPlot.join(tables);
      const total = raw.series.reduce((a, s) => a + s.total, 0);
      const shown = raw.series.reduce((a, s) => a + s.x.length, 0);
      info.textContent = ` ${shown.toLocaleString()} of ${total.toLocaleString()} points` + (raw.series.some((s) => s.sampled) ? " (min/max per bucket; drag to zoom, double-click to reset)" : "");
      const opts = {
        width: Math.max(320, box.clientWidth - 8), height: 300,
        scales: { x: { time: axis.value === "time" }, y: { distr: log.checked ? 3 : 1 } },
        axes: [{ label: axis.value === "step" ? "step" : axis.value === "time" ? "" : "seconds since start" }, { label: metric.value }],
        series: [{ label: axis.value }].concat(raw.series.map((s, i) => ({ label: s.run_name || s.run_id, stroke: COLORS[i % COLORS.length], width: 1.25, spanGaps: true }))),
        cursor: { drag: { x: true, y: false } },
        hooks: {
          setSelect: [(u) => {
            if (u.select.width < 2) return;
            const lo = u.posToVal(u.select.left, "x"), hi = u.posToVal(u.select.left + u.select.width, "x");
            u.setSelect({ left: 0, width: 0 }, false);
            load(lo * scale, hi * scale); // refine: ask the server for the zoomed range
          }],
        },
      };
      if (plot) plot.destroy();
      plot = new uPlot(opts, data, plotBox);
      box.uplot = plot; // for tests and the console
      plot.over.addEventListener("dblclick", () => load());
      box.dataset.ready = zoomed ? "zoomed" : "full";
    }

    metric.addEventListener("change", () => load());
    axis.addEventListener("change", () => load());
    smoothing.addEventListener("input", () => { smoothLabel.textContent = smoothing.value; if (raw) draw(); });
    log.addEventListener("change", () => raw && draw());
    load();
  }

  // ------------------------------------------------------------------ compare
  function comparePage() {
    const data = JSON.parse($("#compare-data").textContent);
    const only = $("#only-diff");
    only.addEventListener("change", () => $("#compare-table").classList.toggle("only-diff", only.checked));
    $$(".chart-box").forEach(chart);
    const fields = [];
    for (const k of Object.keys(data.params)) fields.push(["params." + k, data.params[k]]);
    for (const k of Object.keys(data.metrics)) fields.push(["metrics." + k, data.metrics[k]]);
    const numeric = (vals) => vals.map((v) => (v == null || v === "" || isNaN(Number(v)) ? null : Number(v)));
    const xs = $("#scatter-x"), ys = $("#scatter-y");
    fields.forEach(([name]) => { xs.appendChild(el("option", { value: name }, name)); ys.appendChild(el("option", { value: name }, name)); });
    if (fields.length > 1) ys.selectedIndex = fields.length - 1;
    const byName = Object.fromEntries(fields);
    const drawScatter = () => scatter($("#scatter"), data.runs, xs.value, numeric(byName[xs.value] || []), ys.value, numeric(byName[ys.value] || []));
    xs.addEventListener("change", drawScatter);
    ys.addEventListener("change", drawScatter);
    if (fields.length) drawScatter();
    parallel($("#parallel"), data.runs, fields.map(([n, v]) => [n, numeric(v)]).filter(([, v]) => v.some((x) => x != null)).slice(0, 12));
  }

  function extent(vals) {
    const f = vals.filter((v) => v != null);
    let lo = Math.min(...f), hi = Math.max(...f);
    if (lo === hi) { lo -= 1; hi += 1; }
    return [lo, hi];
  }

  function scatter(svg, runs, xName, xv, yName, yv) {
    svg.replaceChildren();
    const W = +svg.getAttribute("width"), H = +svg.getAttribute("height"), P = 48;
    if (!xv.some((v) => v != null) || !yv.some((v) => v != null)) {
      svg.appendChild(svgEl("text", { x: P, y: H / 2 }, "Pick numeric fields for both axes."));
      return;
    }
    const [x0, x1] = extent(xv), [y0, y1] = extent(yv);
    const sx = (v) => P + ((v - x0) / (x1 - x0)) * (W - 2 * P), sy = (v) => H - P - ((v - y0) / (y1 - y0)) * (H - 2 * P);
    svg.append(svgEl("line", { x1: P, y1: H - P, x2: W - P, y2: H - P, class: "axis" }), svgEl("line", { x1: P, y1: P, x2: P, y2: H - P, class: "axis" }));
    svg.append(svgEl("text", { x: W / 2, y: H - 10, "text-anchor": "middle" }, xName), svgEl("text", { x: 12, y: P - 12 }, yName));
    for (const [v, x] of [[x0, sx(x0)], [x1, sx(x1)]]) svg.appendChild(svgEl("text", { x, y: H - P + 16, "text-anchor": "middle", class: "tick" }, String(+v.toPrecision(4))));
    for (const [v, y] of [[y0, sy(y0)], [y1, sy(y1)]]) svg.appendChild(svgEl("text", { x: P - 4, y, "text-anchor": "end", class: "tick" }, String(+v.toPrecision(4))));
    runs.forEach((run, i) => {
      if (xv[i] == null || yv[i] == null) return;
      const dot = svgEl("circle", { cx: sx(xv[i]), cy: sy(yv[i]), r: 5, fill: COLORS[i % COLORS.length], class: "dot" });
      dot.appendChild(svgEl("title", {}, `${run.name || run.id}: ${xv[i]}, ${yv[i]}`));
      svg.appendChild(dot);
    });
  }

  function parallel(svg, runs, axes) {
    svg.replaceChildren();
    const W = +svg.getAttribute("width"), H = +svg.getAttribute("height"), P = 36;
    if (axes.length < 2) { svg.appendChild(svgEl("text", { x: P, y: H / 2 }, "Needs at least two numeric params or metrics.")); return; }
    const step = (W - 2 * P) / (axes.length - 1);
    const scales = axes.map(([, v]) => extent(v));
    axes.forEach(([name], j) => {
      const x = P + j * step;
      svg.append(svgEl("line", { x1: x, y1: P, x2: x, y2: H - P, class: "axis" }), svgEl("text", { x, y: P - 10, "text-anchor": "middle", class: "tick" }, name));
    });
    runs.forEach((run, i) => {
      const pts = [];
      axes.forEach(([, v], j) => {
        if (v[i] == null) return;
        const [lo, hi] = scales[j];
        pts.push(`${P + j * step},${H - P - ((v[i] - lo) / (hi - lo)) * (H - 2 * P)}`);
      });
      const line = svgEl("polyline", { points: pts.join(" "), stroke: COLORS[i % COLORS.length], fill: "none", "stroke-width": 2 });
      line.appendChild(svgEl("title", {}, run.name || run.id));
      svg.appendChild(line);
    });
  }

  // ------------------------------------------------------------------ drift reports
  // The drift monitor's runs about one model version: each feature's score per scored
  // batch over time, with the thresholds as dashed lines, and the share of drifted
  // features per batch as bars.
  function versionPage() {
    const source = $("#drift-data");
    if (!source) return;
    const reports = JSON.parse(source.textContent);
    const box = $("#drift-chart");
    if (!reports.length) return;
    const features = Array.from(new Set(reports.flatMap((r) => Object.keys(r.scores)))).sort();
    const xs = reports.map((r) => r.start_time / 1000);
    const series = [{ label: "batch scored" }];
    const data = [xs];
    features.forEach((f, i) => {
      series.push({ label: f, stroke: COLORS[i % COLORS.length], width: 1.5, points: { show: true, size: 5 }, spanGaps: true });
      data.push(reports.map((r) => (r.scores[f] == null || !isFinite(r.scores[f]) ? null : r.scores[f])));
    });
    for (const [name, label] of [["psi", "PSI threshold"], ["ks", "KS threshold"]]) {
      const ys = reports.map((r) => (r.thresholds[name] == null ? null : r.thresholds[name]));
      const used = reports.some((r) => r.thresholds[name] != null && (r.method === name || name === "psi"));
      if (!used || !ys.some((y) => y != null)) continue;
      series.push({ label, stroke: "#555", dash: [6, 4], width: 1, points: { show: false }, spanGaps: true });
      data.push(ys);
    }
    const plot = new uPlot({
      width: Math.max(320, box.clientWidth - 8), height: 280,
      scales: { x: { time: true } },
      axes: [{}, { label: "drift score" }],
      series,
    }, data, box);
    box.uplot = plot; // for tests and the console
    const bars = $("#drift-share");
    const W = +bars.getAttribute("width"), H = +bars.getAttribute("height"), P = 24;
    const bw = Math.max(2, (W - 2 * P) / reports.length - 2);
    bars.append(svgEl("line", { x1: P, y1: H - P, x2: W - P, y2: H - P, class: "axis" }),
                svgEl("text", { x: P, y: 12, class: "tick" }, "share of features drifted per batch (red: batch drifted)"));
    reports.forEach((r, i) => {
      const n = Object.keys(r.scores).length || 1;
      const share = r.drifted_features.length / n;
      const h = Math.max(1, share * (H - 2 * P));
      const bar = svgEl("rect", { x: P + i * (bw + 2), y: H - P - h, width: bw, height: h, class: r.drifted ? "bar drifted" : "bar" });
      bar.appendChild(svgEl("title", {}, `${r.run_name}: ${r.drifted_features.length} of ${n} features drifted` + (r.drifted_features.length ? " (" + r.drifted_features.join(", ") + ")" : "")));
      bars.appendChild(bar);
    });
    box.dataset.ready = "full";
  }

  window.mlopsUi = { runsPage, runPage, comparePage, versionPage };
})();
