// The status page: asks /status/summary every 15 s (and when a key is entered) and draws
// one table per cluster.  The key lives in sessionStorage only: never a cookie or a URL.
"use strict";
(function () {
  var STORE = "inference-gateway-status-key";
  var EVERY_MS = 15000;
  var DASH = "\u2014";
  var timer = null;
  var busy = false;
  var again = false;  // asked for while a refresh was under way: run once more after it

  function $(id) { return document.getElementById(id); }

  function showError(message) {
    var box = $("error");
    box.textContent = message;
    box.hidden = !message;
  }

  window.addEventListener("error", function (event) {
    showError("The page hit an error: " + (event.message || "unknown") + ". Reload to try again.");
  });
  window.addEventListener("unhandledrejection", function (event) {
    showError("The page hit an error: " + String(event.reason) + ". Reload to try again.");
  });

  function storedKey() {
    try { return window.sessionStorage.getItem(STORE) || ""; } catch (e) { return ""; }
  }
  function keepKey(key) {
    try {
      if (key) { window.sessionStorage.setItem(STORE, key); }
      else { window.sessionStorage.removeItem(STORE); }
    } catch (e) { /* storage refused: the key lasts until the page closes */ }
  }

  function number(value, digits, unit) {
    if (value === null || value === undefined) { return DASH; }
    return Number(value).toLocaleString("en", {
      minimumFractionDigits: digits, maximumFractionDigits: digits
    }) + (unit || "");
  }
  function seconds(value) {
    if (value === null || value === undefined) { return DASH; }
    return value < 1 ? number(value * 1000, 0, " ms") : number(value, 2, " s");
  }

  function cell(tag, text, className, scope) {
    var node = document.createElement(tag);
    node.textContent = text;
    if (className) { node.className = className; }
    if (scope) { node.scope = scope; }
    return node;
  }

  function table(cluster, mine) {
    var node = document.createElement("table");
    node.appendChild(cell("caption", "Cluster " + cluster.name));
    var head = document.createElement("thead");
    var row = document.createElement("tr");
    var columns = ["Model", "State", "Requests", "Latency p50", "First token p50",
      "Output tokens/s"];
    if (mine) { columns = columns.concat(["Your requests today", "Your tokens today",
      "Tokens/min left"]); }
    columns.forEach(function (name) { row.appendChild(cell("th", name, "", "col")); });
    head.appendChild(row);
    node.appendChild(head);
    var body = document.createElement("tbody");
    cluster.models.forEach(function (model) {
      var line = document.createElement("tr");
      var figures = model.figures || {};
      line.appendChild(cell("th", model.model, "", "row"));
      line.appendChild(cell("td", model.state, "state state-" + model.state));
      line.appendChild(cell("td", model.figures ? number(figures.requests, 0) : DASH, "num"));
      line.appendChild(cell("td", seconds(figures.latency_p50_seconds), "num"));
      line.appendChild(cell("td", seconds(figures.first_token_p50_seconds), "num"));
      line.appendChild(cell("td", number(figures.output_tokens_per_second, 1), "num"));
      if (mine) {
        var usage = model.usage || {};
        line.appendChild(cell("td", model.usage ? number(usage.requests, 0) : DASH, "num"));
        line.appendChild(cell("td", model.usage ? number(usage.total_tokens, 0) : DASH, "num"));
        var left = model.remaining_tokens_per_minute;
        var limit = model.tokens_per_minute_per_user;
        line.appendChild(cell("td", left === null || left === undefined ? DASH :
          number(left, 0) + (limit ? " of " + number(limit, 0) : ""), "num"));
      }
      body.appendChild(line);
    });
    node.appendChild(body);
    return node;
  }

  function draw(summary) {
    var place = $("clusters");
    var mine = summary.user !== null;
    var models = 0;
    place.textContent = "";
    summary.clusters.forEach(function (cluster) {
      models += cluster.models.length;
      place.appendChild(table(cluster, mine));
    });
    if (!summary.clusters.length) {
      place.appendChild(cell("p", mine ? "You may use no models here." :
        "No models are open to everyone; enter a key to see yours."));
    }
    $("window").textContent = summary.request_log ?
      "Figures cover the last " + Math.round(summary.window_seconds / 60) + " minutes." :
      "This gateway keeps no request log: no figures to show.";
    var when = new Date().toLocaleTimeString("en-GB");
    var who = mine ? " Showing your usage as " + summary.user + "." : "";
    $("live").textContent = "Updated " + when + ": " + models + " model" +
      (models === 1 ? "" : "s") + " on " + summary.clusters.length + " cluster" +
      (summary.clusters.length === 1 ? "" : "s") + "." + who;
  }

  function ask(key) {
    var headers = { "Accept": "application/json" };
    if (key) { headers.Authorization = "Bearer " + key; }
    return fetch("/status/summary", { headers: headers, credentials: "omit",
      cache: "no-store" });
  }

  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    again = false;
    window.clearTimeout(timer);
    var key = storedKey();
    ask(key).then(function (answer) {
      if (answer.status === 401 && key) {
        keepKey("");
        $("key").value = "";
        showError("That key was not accepted; showing the public status.");
        return ask("").then(function (again) { return again.json(); });
      }
      if (!answer.ok) { throw new Error("the gateway answered " + answer.status); }
      showError("");
      return answer.json();
    }).then(draw).catch(function (problem) {
      showError("Could not load the status (" + problem.message + "); retrying in 15 s.");
      $("live").textContent = "The last refresh failed.";
    }).then(function () {
      busy = false;
      timer = window.setTimeout(refresh, again ? 0 : EVERY_MS);
    });
  }

  function start() {
    $("key-form").addEventListener("submit", function (event) {
      event.preventDefault();
      keepKey($("key").value.trim());
      $("live").textContent = "Loading…";
      refresh();
    });
    $("forget").addEventListener("click", function () {
      keepKey("");
      $("key").value = "";
      showError("");
      refresh();
    });
    if (storedKey()) { $("key").value = storedKey(); }
    refresh();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else { start(); }
})();
