// Draws report.html's plots from the data the page carries (#report-data):
// one time axis, seconds from the trigger, shared by every lane. Plain
// script, no library, no request: the SVG is written as markup.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var plots = document.getElementById("plots");
  var tip = document.getElementById("tip");
  var ML = 74, MR = 18;
  var lo = data.range[0], hi = data.range[1];
  var W = 1200;

  function esc(s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }
  function xs(t) { return ML + (t - lo) / (hi - lo) * (W - ML - MR); }
  function px(v) { return Math.round(v * 10) / 10; }
  function fmtNs(ns) {
    if (ns < 1e3) return ns + " ns";
    if (ns < 1e6) return Math.round(ns / 1e3) + " µs";
    if (ns < 1e9) return (ns / 1e6).toFixed(ns < 1e7 ? 2 : 1) + " ms";
    return (ns / 1e9).toFixed(2) + " s";
  }
  function fmtBytes(b) {
    var u = ["B", "KiB", "MiB", "GiB", "TiB"], i = 0;
    while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }
    return (i ? b.toFixed(1) : b) + " " + u[i];
  }
  function fmtCount(n) { return String(Math.round(n)); }
  // Seconds from the trigger: `−12 s`, `+1.5 s`; `digits` defaults to what
  // the axis' span needs.
  function fmtRel(t, digits) {
    var d = digits === undefined ? (Math.abs(hi - lo) < 20 ? 1 : 0) : digits;
    var v = Math.abs(t).toFixed(d);
    if (Number(v) === 0) return "0";
    return (t > 0 ? "+" : "−") + v + " s";
  }

  var summarised = data.windows.filter(function (w) { return w.summary && w.x0 !== null && w.x1 !== null; });

  // Bands every lane shares: post_trigger, gaps, unsummarised windows, the
  // blind spot; and the lines: trigger and death.
  function backdrop(h, top, lane) {
    var s = "";
    if (data.post_trigger) {
      s += '<rect class="post" x="' + px(xs(data.post_trigger[0])) + '" y="' + top + '" width="' +
        px(xs(data.post_trigger[1]) - xs(data.post_trigger[0])) + '" height="' + (h - top) + '"/>';
    }
    data.gaps.forEach(function (g) {
      var w = xs(g.x1) - xs(g.x0);
      if (w >= 0.5) s += '<rect class="gap" x="' + px(xs(g.x0)) + '" y="' + top + '" width="' + px(w) + '" height="' + (h - top) + '"/>';
    });
    if (lane !== "windows") {
      data.windows.forEach(function (w) {
        if (w.summary || w.x0 === null || w.x1 === null) return;
        var x = xs(w.x0), wd = Math.max(1, xs(w.x1) - x);
        s += '<rect class="unsum" x="' + px(x) + '" y="' + top + '" width="' + px(wd) + '" height="' + (h - top) + '"/>';
        if (wd > 90) {
          s += '<text class="unsum-label" x="' + px(x + 4) + '" y="' + (top + 14) + '">' +
            esc(w.missing.split(" (")[0]) + "</text>";
        }
      });
    }
    if (data.ending) {
      [["tail_blind", "tailblind"], ["blind", "blind"]].forEach(function (k) {
        var b = data.ending[k[0]];
        if (b) s += '<rect class="' + k[1] + '" x="' + px(xs(b[0])) + '" y="' + top + '" width="' + px(Math.max(1, xs(b[1]) - xs(b[0]))) + '" height="' + (h - top) + '"/>';
      });
    }
    s += '<line class="trigger" x1="' + px(xs(0)) + '" x2="' + px(xs(0)) + '" y1="' + top + '" y2="' + h + '"/>';
    if (data.ending && data.ending.x !== null) {
      s += '<line class="death" x1="' + px(xs(data.ending.x)) + '" x2="' + px(xs(data.ending.x)) + '" y1="' + top + '" y2="' + h + '"/>';
    }
    return s;
  }

  function svg(lane, h, body, points) {
    return '<svg class="lane" data-lane="' + lane + '" data-points="' + points + '" width="' + W + '" height="' + h +
      '" viewBox="0 0 ' + W + " " + h + '">' + body +
      '<line class="guide" x1="-10" x2="-10" y1="0" y2="' + h + '"/></svg>';
  }

  function windowsLane() {
    var h = 74, top = 18, s = backdrop(h, top, "windows");
    data.windows.forEach(function (w) {
      if (w.x0 === null || w.x1 === null) return;
      var x = xs(w.x0), wd = Math.max(1, xs(w.x1) - x);
      var cls = "win" + (w.summary ? "" : " win-unsum") + (w.complete ? "" : " win-cut") + (w.met ? " win-met" : "");
      s += '<rect class="' + cls + '" data-n="' + w.n + '" x="' + px(x) + '" y="28" width="' + px(wd) + '" height="30"/>';
      var label = wd > 150 && !w.summary ? w.n + " · " + w.missing.split(" (")[0] : wd > 16 ? String(w.n) : "";
      if (label) s += '<text class="win-label" x="' + px(x + wd / 2) + '" y="47">' + esc(label) + "</text>";
    });
    data.gaps.forEach(function (g) {
      var w = xs(g.x1) - xs(g.x0);
      if (w > 40) s += '<text class="gap-label" x="' + px((xs(g.x0) + xs(g.x1)) / 2) + '" y="70">gap ' + esc(fmtNs(g.seconds * 1e9)) + "</text>";
    });
    s += '<text class="mark trigger-label" x="' + px(xs(0) - 4) + '" y="12" text-anchor="end">trigger</text>';
    if (data.post_trigger) {
      var edge = xs(0) + 84 > W;
      s += '<text class="mark" x="' + px(edge ? W - 2 : xs(0) + 4) + '" y="12"' + (edge ? ' text-anchor="end"' : "") + ">post_trigger</text>";
    }
    if (data.ending && data.ending.x !== null) {
      s += '<text class="mark death-label" x="' + px(xs(data.ending.x) - 4) + '" y="24" text-anchor="end">' +
        esc(data.ending.how) + (data.ending.blind ? " · blind spot " + esc(fmtNs((data.ending.blind[1] - data.ending.blind[0]) * 1e9)) : "") + "</text>";
    }
    s += '<text class="lane-title" x="6" y="47">windows</text>';
    return svg("windows", h, s, data.windows.filter(function (w) { return w.x0 !== null; }).length);
  }

  // A lane of per-window values. series: [{name, label, color, get, kind: "step"|"bars"|"dash"}].
  function valueLane(lane, title, series, fmt, log) {
    var h = 106, top = 22, bottom = h - 6;
    var vals = [];
    series.forEach(function (se) {
      summarised.forEach(function (w) { var v = se.get(w.summary); if (v > 0 || !log) vals.push(v); });
    });
    var max = Math.max.apply(null, vals.concat([0]));
    var minPos = Math.min.apply(null, vals.filter(function (v) { return v > 0; }).concat([Infinity]));
    var y, ticks = [];
    if (log) {
      var d0 = Math.floor(Math.log10(isFinite(minPos) ? minPos : 1)), d1 = Math.ceil(Math.log10(Math.max(max, 10)));
      if (d1 <= d0) d1 = d0 + 1;
      y = function (v) { var l = Math.log10(Math.max(v, Math.pow(10, d0))); return bottom - (l - d0) / (d1 - d0) * (bottom - top - 6); };
      for (var d = d0; d <= d1; d++) ticks.push(Math.pow(10, d));
    } else {
      var m = max > 0 ? max * 1.12 : 1;
      y = function (v) { return bottom - v / m * (bottom - top - 6); };
      ticks = [0, max / 2, max].filter(function (v, i) { return i === 0 || v > 0; });
    }
    var s = backdrop(h, top, lane);
    ticks.forEach(function (t) {
      s += '<line class="tick" x1="' + ML + '" x2="' + (W - MR) + '" y1="' + px(y(t)) + '" y2="' + px(y(t)) + '"/>' +
        '<text class="ytick" x="' + (ML - 6) + '" y="' + px(y(t) + 4) + '">' + esc(fmt(t)) + "</text>";
    });
    var legend = "";
    series.forEach(function (se, i) {
      var parts = [], n = 0;
      summarised.forEach(function (w) {
        var v = se.get(w.summary);
        if (log && !(v > 0)) return;
        var x0 = xs(w.x0), x1 = Math.max(x0 + 1, xs(w.x1));
        n++;
        if (se.kind === "bars") {
          parts.push('<rect x="' + px(x0 + 1) + '" y="' + px(y(v)) + '" width="' + px(Math.max(1, x1 - x0 - 2)) + '" height="' + px(bottom - y(v)) + '"/>');
        } else {
          parts.push("M" + px(x0) + " " + px(y(v)) + "H" + px(x1));
        }
      });
      if (se.kind === "bars") {
        s += '<g class="series bars" data-series="' + se.name + '" data-points="' + n + '" fill="' + se.color + '">' + parts.join("") + "</g>";
      } else {
        s += '<path class="series ' + se.kind + '" data-series="' + se.name + '" data-points="' + n + '" stroke="' + se.color + '" d="' + parts.join("") + '"/>';
      }
      legend += '<tspan dx="14" style="fill:' + se.color + '">■ ' + esc(se.label) + "</tspan>";
    });
    s += '<text class="lane-title" x="6" y="14">' + esc(title) + '<tspan class="legend">' + legend + "</tspan></text>";
    return svg(lane, h, s, summarised.length);
  }

  function axis() {
    var h = 44, s = "";
    var steps = [0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600];
    var step = steps[steps.length - 1];
    for (var i = 0; i < steps.length; i++) {
      if ((hi - lo) / steps[i] <= (W - ML - MR) / 80) { step = steps[i]; break; }
    }
    for (var t = Math.ceil(lo / step) * step; t <= hi; t += step) {
      var x = px(xs(t));
      s += '<line class="xtick" x1="' + x + '" x2="' + x + '" y1="0" y2="6"/><text class="xlabel" x="' + x + '" y="20">' + esc(fmtRel(t, step < 1 ? 1 : 0)) + "</text>";
    }
    s += '<text class="legend" x="' + ML + '" y="38">seconds from the trigger, which fired at ' + esc(data.fired_at) + "</text>";
    return svg("axis", h, s, 0);
  }

  function draw() {
    W = Math.max(640, Math.floor(plots.clientWidth || 1200));
    var html = windowsLane();
    if (summarised.length) {
      html += valueLane("goroutines", "goroutines", [
        { name: "goroutines_max", label: "goroutines (max)", color: "#3b6fb6", get: function (s) { return s.goroutines_max; }, kind: "step" },
        { name: "runnable_max", label: "runnable (max)", color: "#e8710a", get: function (s) { return s.runnable_max; }, kind: "step" }
      ], fmtCount, false);
      html += valueLane("heap", "heap", [
        { name: "heap_goal_max_bytes", label: "heap goal (max)", color: "#9aa0a6", get: function (s) { return s.heap_goal_max_bytes; }, kind: "dash" },
        { name: "heap_max_bytes", label: "heap objects (max)", color: "#188038", get: function (s) { return s.heap_max_bytes; }, kind: "step" }
      ], fmtBytes, false);
      html += valueLane("gc", "GC cycles", [
        { name: "gc_cycles", label: "GC cycles per window", color: "#a142f4", get: function (s) { return s.gc_cycles; }, kind: "bars" }
      ], fmtCount, false);
      html += valueLane("stw", "stop-the-world", [
        { name: "stw_total_ns", label: "total per window", color: "#f6aea9", get: function (s) { return s.stw_total_ns; }, kind: "bars" },
        { name: "stw_max_ns", label: "longest pause", color: "#c5221f", get: function (s) { return s.stw_max_ns; }, kind: "step" }
      ], fmtNs, false);
      html += valueLane("sched", "scheduling latency", [
        { name: "sched_latency_max_ns", label: "max", color: "#c5221f", get: function (s) { return s.sched_latency_max_ns; }, kind: "step" },
        { name: "sched_latency_p99_ns", label: "p99", color: "#e8710a", get: function (s) { return s.sched_latency_p99_ns; }, kind: "step" },
        { name: "sched_latency_p50_ns", label: "p50", color: "#3b6fb6", get: function (s) { return s.sched_latency_p50_ns; }, kind: "step" }
      ], fmtNs, true);
    } else {
      html += '<p class="nosum">No window has a summary, so there is nothing to plot besides the windows: each window says why above (hover it).</p>';
    }
    html += axis();
    plots.innerHTML = html;
    plots.setAttribute("data-ready", "yes");
  }

  function windowAt(t) {
    var best = null;
    data.windows.forEach(function (w) {
      if (w.x0 !== null && w.x1 !== null && w.x0 <= t && t <= w.x1) best = w;
    });
    return best;
  }

  function describe(w) {
    var s = "<b>window " + w.n + "</b> · " + esc(w.file) + "<br>" + esc(fmtRel(w.x0, 2)) + " → " + esc(fmtRel(w.x1, 2)) +
      " · Go " + esc(w.go) + " · " + esc(fmtBytes(w.bytes)) + (w.complete ? "" : " · truncated (" + esc(w.truncation || "cut") + ")");
    if (w.met) s += "<br><b>met the trace trigger's condition</b>";
    if (!w.summary) return s + "<br>" + esc(w.missing);
    var m = w.summary;
    return s + "<table>" +
      "<tr><td>goroutines / runnable</td><td>" + m.goroutines_max + " / " + m.runnable_max + "</td></tr>" +
      "<tr><td>heap / goal</td><td>" + esc(fmtBytes(m.heap_max_bytes)) + " / " + esc(fmtBytes(m.heap_goal_max_bytes)) + "</td></tr>" +
      "<tr><td>GC cycles</td><td>" + m.gc_cycles + " (assists " + esc(fmtNs(m.gc_assist_ns)) + ")</td></tr>" +
      "<tr><td>stop-the-world</td><td>" + m.stw_count + " pauses, " + esc(fmtNs(m.stw_total_ns)) + ", longest " + esc(fmtNs(m.stw_max_ns)) +
      (m.stw_max_reason ? " (" + esc(m.stw_max_reason) + ")" : "") + "</td></tr>" +
      "<tr><td>sched latency</td><td>p50 " + esc(fmtNs(m.sched_latency_p50_ns)) + ", p99 " + esc(fmtNs(m.sched_latency_p99_ns)) +
      ", max " + esc(fmtNs(m.sched_latency_max_ns)) + " (" + m.sched_latency_samples + ")</td></tr>" +
      "<tr><td>GOMAXPROCS</td><td>" + m.gomaxprocs + "</td></tr></table>";
  }

  function hover(ev) {
    var lane = plots.querySelector("svg.lane");
    if (!lane) return;
    var r = lane.getBoundingClientRect();
    var x = (ev.clientX - r.left) * (W / r.width);
    var guides = plots.querySelectorAll("line.guide");
    if (x < ML || x > W - MR) {
      tip.hidden = true;
      for (var i = 0; i < guides.length; i++) guides[i].setAttribute("x1", -10), guides[i].setAttribute("x2", -10);
      return;
    }
    for (var j = 0; j < guides.length; j++) guides[j].setAttribute("x1", x), guides[j].setAttribute("x2", x);
    var t = lo + (x - ML) / (W - ML - MR) * (hi - lo);
    var w = windowAt(t);
    var g = data.gaps.filter(function (g) { return g.x0 <= t && t <= g.x1; })[0];
    var text = "<b>" + esc(fmtRel(t, 2)) + "</b><br>";
    if (w) text += describe(w);
    else if (g) text += "no trace: gap of " + esc(fmtNs(g.seconds * 1e9)) + " before window " + g.before;
    else text += "outside every window";
    tip.innerHTML = text;
    tip.hidden = false;
    var left = ev.clientX + 16;
    if (left + 360 > window.innerWidth) left = ev.clientX - 376;
    tip.style.left = left + window.scrollX + "px";
    tip.style.top = ev.clientY + 12 + window.scrollY + "px";
  }

  draw();
  plots.addEventListener("mousemove", hover);
  plots.addEventListener("mouseleave", function () { tip.hidden = true; });
  var pending = false;
  window.addEventListener("resize", function () {
    if (pending) return;
    pending = true;
    window.requestAnimationFrame(function () { pending = false; draw(); });
  });

  // The page is meant to make no request at all (its Content-Security-Policy
  // forbids them): it counts any it sees, for whoever checks.
  function countRequests() {
    var n = performance.getEntriesByType("resource").length;
    document.body.setAttribute("data-requests", String(n));
  }
  countRequests();
  if (window.PerformanceObserver) {
    try {
      new PerformanceObserver(countRequests).observe({ type: "resource", buffered: true });
    } catch (e) { /* an old browser: the count above stands */ }
  }
})();
