// geolb rum.js (SPEC §10): times each region of a pool from this browser and posts the figures to geolb.
// <script async src="https://RUM-LISTENER/rum.js" data-zone="example.com" data-pool="web" data-sample="0.1"></script>
// data-sample: share of page views that measure (default 1). data-endpoint: where beacons go ("{token}" is
// replaced by the beacon's token); default: "<token>.<rum_name>" of the zone when it has one (resolver
// discovery), else the listener this script came from. The listener serves this script a second time as
// rum.js?zone=&pool= with the pool's regions and rum_urls in it (the CONFIG slot). No cookies, nothing stored.
(function (config) {
  "use strict";
  var script = document.currentScript;
  if (!script || !window.fetch || !window.performance || !window.URL || !window.crypto) return;
  var src = new URL(script.src);
  var endpoint = script.getAttribute("data-endpoint");
  if (!config) {
    var zone = script.getAttribute("data-zone"), pool = script.getAttribute("data-pool");
    var sample = parseFloat(script.getAttribute("data-sample"));
    if (isNaN(sample)) sample = 1;
    if (!zone || !pool || !(Math.random() < sample)) return;
    var next = document.createElement("script");
    next.async = true;
    src.search = "?zone=" + encodeURIComponent(zone) + "&pool=" + encodeURIComponent(pool);
    next.src = src.href;
    if (endpoint) next.setAttribute("data-endpoint", endpoint);
    (document.head || document.documentElement).appendChild(next);
    return;
  }

  var alphabet = "abcdefghijklmnopqrstuvwxyz0123456789", bytes = new Uint8Array(20), token = "";
  crypto.getRandomValues(bytes);
  for (var i = 0; i < bytes.length; i++) token += alphabet.charAt(bytes[i] % 36);
  var count = 0;

  // One fetch of a region's object, never from a cache; its time from Resource Timing: request to first byte
  // when the object allows it (Timing-Allow-Origin), else the whole duration; else as seen from here.
  function timed(url) {
    var busted = url + (url.indexOf("?") < 0 ? "?" : "&") + "geolb-rum=" + token + "-" + count++;
    var started = performance.now();
    return fetch(busted, { cache: "no-store", mode: "no-cors", credentials: "omit" }).then(function (response) {
      var seen = performance.now() - started;
      return (response.type === "opaque" ? Promise.resolve() : response.arrayBuffer()).then(function () {
        return new Promise(function (done) { setTimeout(done, 0); });
      }).then(function () {
        var entries = performance.getEntriesByName(new URL(busted, location.href).href);
        var entry = entries[entries.length - 1];
        if (!entry) return seen;
        return entry.requestStart > 0 && entry.responseStart > 0 ? entry.responseStart - entry.requestStart : entry.duration;
      });
    });
  }

  // Two fetches a region, one after the other: the first pays for DNS, TCP and TLS, the second shows the
  // round trip on a warm connection; the smaller counts.
  function measure(url) {
    return timed(url).then(function (first) {
      return timed(url).then(function (second) { return Math.min(first, second); });
    });
  }

  function send(rtt) {
    var target;
    if (endpoint) {
      target = endpoint.indexOf("{token}") < 0 ? endpoint : endpoint.split("{token}").join(token);
    } else {
      var url = new URL(src.href);
      if (config.rum_name) url.hostname = token + "." + config.rum_name;
      url.pathname = "/v1/rum";
      url.search = "";
      target = url.href;
    }
    var beacon = { zone: config.zone, pool: config.pool, rtt: rtt };
    // the token only where the name carries it
    if (target.indexOf(token) >= 0) beacon.token = token;
    // text/plain: a simple cross-origin request, no preflight
    var body = JSON.stringify(beacon);
    if (!(navigator.sendBeacon && navigator.sendBeacon(target, body))) {
      fetch(target, { method: "POST", body: body, mode: "no-cors", keepalive: true, credentials: "omit" });
    }
  }

  function run() {
    var names = Object.keys(config.regions), rtt = {}, measured = 0, chain = Promise.resolve();
    names.forEach(function (name) {
      chain = chain.then(function () {
        return measure(config.regions[name]).then(function (ms) {
          if (ms > 0 && ms <= 60000) { rtt[name] = Math.round(ms * 10) / 10; measured++; }
        }, function () {});
      });
    });
    chain.then(function () { if (measured) send(rtt); });
  }

  if (document.readyState === "complete") setTimeout(run, 0);
  else window.addEventListener("load", function () { setTimeout(run, 0); });
})(/*CONFIG*/null);
