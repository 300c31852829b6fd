// flashfleet dashboard: local times, and live progress of a mass upgrade (Server-Sent Events).
"use strict";

(function () {
  // A mark of this page load: the browser test checks that it never changes (no reload).
  document.documentElement.dataset.loadId = String(Math.random()).slice(2);

  var SYMBOLS = {
    "success": "✓", "failed": "✗", "aborted": "⊘", "cancelled": "–",
    "in-progress": "…", "idle": "○"
  };

  function localTime(element) {
    var value = element.getAttribute("datetime");
    var date = new Date(value);
    if (isNaN(date.getTime())) { return; }
    element.title = value;
    element.textContent = date.toLocaleString(undefined, {
      year: "numeric", month: "short", day: "numeric",
      hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short"
    });
  }

  function localTimes(root) {
    var times = root.querySelectorAll("time[datetime]");
    for (var i = 0; i < times.length; i++) { localTime(times[i]); }
  }

  function setStatus(element, status) {
    if (!element) { return; }
    element.className = "status status-" + status;
    element.dataset.status = status;
    element.textContent = "";
    var symbol = document.createElement("span");
    symbol.setAttribute("aria-hidden", "true");
    symbol.textContent = SYMBOLS[status] || "?";
    element.appendChild(symbol);
    element.appendChild(document.createTextNode(" " + status));
  }

  function setText(id, text) {
    var element = document.getElementById(id);
    if (element) { element.textContent = text; }
  }

  function onBatch(batch) {
    var counters = batch.counters || {};
    ["total", "in_progress", "success", "failed", "aborted", "cancelled"].forEach(function (key) {
      if (key in counters) { setText("counter-" + key, String(counters[key])); }
    });
    var bar = document.getElementById("overall-bar");
    if (bar && "total" in counters) {
      bar.max = Math.max(counters.total, 1);
      bar.value = counters.completed;
    }
    setText("progress-report", batch.progress_report);
    setStatus(document.getElementById("batch-status"), batch.status);
    var cancel = document.getElementById("cancel-batch");
    if (cancel && ["success", "failed", "cancelled"].indexOf(batch.status) >= 0) {
      cancel.hidden = true;
    }
  }

  function onOperation(operation) {
    var row = document.getElementById("operation-" + operation.id);
    if (!row) { return; }
    setStatus(row.querySelector(".op-status .status"), operation.status);
    var phase = row.querySelector(".op-phase");
    if (phase) { phase.textContent = operation.phase; }
    var progress = row.querySelector(".op-progress");
    if (progress) {
      progress.value = operation.progress;
      progress.textContent = operation.progress + "%";
    }
    var modified = row.querySelector(".op-modified time");
    if (modified && operation.modified) {
      modified.setAttribute("datetime", operation.modified);
      localTime(modified);
    }
  }

  function follow(section) {
    var live = document.getElementById("live");
    if (section.dataset.finished === "true" || !window.EventSource) { return; }
    var source = new EventSource(section.dataset.events);
    source.addEventListener("open", function () { live.textContent = "live"; });
    source.addEventListener("batch", function (event) { onBatch(JSON.parse(event.data)); });
    source.addEventListener("operation", function (event) { onOperation(JSON.parse(event.data)); });
    source.addEventListener("end", function () {
      source.close();
      section.dataset.finished = "true";
      live.textContent = "finished";
    });
    source.addEventListener("error", function () {
      if (section.dataset.finished !== "true") { live.textContent = "reconnecting…"; }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    localTimes(document);
    var section = document.getElementById("batch");
    if (section) { follow(section); }
  });
})();
