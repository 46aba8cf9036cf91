/* cronhive dashboard: the small amount of JavaScript the pages use.
 *
 * - live regions: an element with data-live-src is re-fetched every
 *   data-live-interval ms (paused while the tab is hidden); each
 *   [data-live-part] of the answer replaces the part of the same name on the
 *   page, and each script[data-chart-feed] updates the chart of that name;
 * - the schedule preview of the job form (fetched while typing);
 * - the charts (Chart.js, vendored under /ui/static/vendor).
 *
 * Everything it inserts is HTML the server rendered (autoescaped) or text
 * set through textContent; the pages work without it, only less live.
 */
(function () {
  "use strict";

  var charts = {};
  var COLORS = {
    succeeded: "#1f9d55", failed: "#d64545", timed_out: "#f08c00", abandoned: "#862e9c", skipped: "#adb5bd",
    cancelled: "#495057",
    duration: "#3b5bdb", lateness: "#f08c00"
  };

  function readFeed(root, name) {
    var node = root.querySelector('script[data-chart-feed="' + name + '"]');
    if (!node) { return null; }
    try { return JSON.parse(node.textContent); } catch (e) { return null; }
  }

  function activityConfig(data) {
    return {
      type: "bar",
      data: {
        labels: data.labels,
        datasets: data.series.map(function (s) {
          return { label: s.label, data: s.data, backgroundColor: COLORS[s.key] || "#868e96", borderWidth: 0,
                   stack: "runs", maxBarThickness: 28 };
        })
      },
      options: {
        responsive: true, maintainAspectRatio: false, animation: false,
        interaction: { mode: "index", intersect: false },
        plugins: { legend: { position: "bottom", labels: { boxWidth: 10, boxHeight: 10 } } },
        scales: { x: { stacked: true, grid: { display: false }, ticks: { maxRotation: 0, autoSkipPadding: 8 } },
                  y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } }
      }
    };
  }

  function jobRunsConfig(data) {
    return {
      type: "line",
      data: {
        labels: data.labels,
        datasets: [
          { label: "Duration (ms)", data: data.duration, borderColor: COLORS.duration, backgroundColor: COLORS.duration,
            tension: 0.25, pointRadius: 2, spanGaps: true },
          { label: "Lateness (ms)", data: data.lateness, borderColor: COLORS.lateness, backgroundColor: COLORS.lateness,
            tension: 0.25, pointRadius: 2, spanGaps: true, borderDash: [4, 3] }
        ]
      },
      options: {
        responsive: true, maintainAspectRatio: false, animation: false,
        interaction: { mode: "index", intersect: false },
        plugins: { legend: { position: "bottom", labels: { boxWidth: 10, boxHeight: 10 } } },
        scales: { x: { grid: { display: false }, ticks: { maxRotation: 0, autoSkipPadding: 12 } },
                  y: { beginAtZero: true, title: { display: true, text: "ms" } } }
      }
    };
  }

  var CONFIGS = { "activity": activityConfig, "job-runs": jobRunsConfig };

  function drawChart(name, data) {
    if (!data || typeof window.Chart === "undefined") { return; }
    var canvas = document.querySelector('canvas[data-chart="' + name + '"]');
    if (!canvas || !CONFIGS[name]) { return; }
    var serialized = JSON.stringify(data);
    var existing = charts[name];
    if (existing && existing.canvas === canvas) {
      if (existing.serialized === serialized) { return; }
      var fresh = CONFIGS[name](data);
      existing.chart.data.labels = fresh.data.labels;
      fresh.data.datasets.forEach(function (set, i) {
        if (existing.chart.data.datasets[i]) { existing.chart.data.datasets[i].data = set.data; }
      });
      existing.chart.update();
      existing.serialized = serialized;
      return;
    }
    if (existing) { existing.chart.destroy(); }
    charts[name] = { canvas: canvas, serialized: serialized, chart: new window.Chart(canvas, CONFIGS[name](data)) };
  }

  function drawCharts(root) {
    Object.keys(CONFIGS).forEach(function (name) { drawChart(name, readFeed(root, name)); });
  }

  function stamp(text) {
    var node = document.querySelector("[data-live-stamp]");
    if (node) { node.textContent = text; }
  }

  function swapParts(doc) {
    doc.querySelectorAll("[data-live-part]").forEach(function (fresh) {
      var name = fresh.getAttribute("data-live-part");
      var current = document.querySelector('[data-live-part="' + name + '"]');
      if (current && current.innerHTML !== fresh.innerHTML) { current.innerHTML = fresh.innerHTML; }
    });
    drawCharts(doc);
  }

  function startLive(region) {
    var src = region.getAttribute("data-live-src");
    var interval = parseInt(region.getAttribute("data-live-interval"), 10) || 3000;
    var busy = false;
    function refresh() {
      if (busy || document.hidden) { return; }
      busy = true;
      fetch(src, { credentials: "same-origin", headers: { "Accept": "text/html" }, cache: "no-store" })
        .then(function (response) {
          if (!response.ok) { throw new Error("HTTP " + response.status); }
          return response.text();
        })
        .then(function (html) {
          swapParts(new DOMParser().parseFromString(html, "text/html"));
          stamp("live · updated " + new Date().toLocaleTimeString());
          document.body.setAttribute("data-live-updates", String(1 + (parseInt(document.body.getAttribute("data-live-updates"), 10) || 0)));
        })
        .catch(function (error) { stamp("live updates paused: " + error.message + " (retrying)"); })
        .then(function () { busy = false; });
    }
    window.setInterval(refresh, interval);
    document.addEventListener("visibilitychange", function () { if (!document.hidden) { refresh(); } });
  }

  function startPreview(form) {
    var box = document.getElementById("preview");
    if (!box) { return; }
    var schedule = form.querySelector('[data-preview="schedule"]');
    var zone = form.querySelector('[data-preview="timezone"]');
    var timer = null;
    var sequence = 0;
    function update() {
      var expression = schedule.value.trim();
      if (!expression) {
        box.textContent = "Type a schedule to see its next fires.";
        return;
      }
      var query = new URLSearchParams({ schedule: expression, timezone: zone ? zone.value.trim() : "" });
      var mine = ++sequence;
      fetch(box.getAttribute("data-preview-src") + "?" + query.toString(), { credentials: "same-origin" })
        .then(function (response) { return response.text(); })
        .then(function (html) {
          if (mine !== sequence) { return; }  // a later keystroke already asked again
          var doc = new DOMParser().parseFromString(html, "text/html");
          box.replaceChildren.apply(box, Array.prototype.slice.call(doc.body.childNodes));
          box.setAttribute("data-preview-for", expression);
        })
        .catch(function () { box.textContent = "Preview unavailable."; });
    }
    function later() {
      window.clearTimeout(timer);
      timer = window.setTimeout(update, 250);
    }
    schedule.addEventListener("input", later);
    if (zone) { zone.addEventListener("input", later); }
    update();
  }

  document.addEventListener("DOMContentLoaded", function () {
    drawCharts(document);
    document.querySelectorAll("[data-live-src]").forEach(startLive);
    var form = document.getElementById("job-form");
    if (form) { startPreview(form); }
  });
})();
