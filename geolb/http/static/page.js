// @ts-check
// geolb's status page: renders /v1/status, follows /v1/events, explains answers, forces endpoints.
// Plain JavaScript, no build step; the types below are checked by editors that read JSDoc.
"use strict";

/**
 * @typedef {{address: string, weight: number, state: "up"|"down", forced: "up"|"down"|null,
 *   checked_state: "up"|"down"|null, successes: number, failures: number, last_check: string|null,
 *   last_error: string|null, last_latency_ms: number|null, load: number|null, busy: boolean,
 *   check: {type: string, target: string|null}}} Endpoint
 * @typedef {{location: [number, number]|null, answers_last_minute: number, failing_open: boolean, endpoints: Endpoint[],
 *   rtt_by_country: Object<string, {ms: number, networks: number}>}} Region
 * @typedef {{zone: string, answers_last_minute: number, failing_open: string[], selection: {policy: string},
 *   steering: string, latency: {networks: number, resolvers: number, countries: number},
 *   regions: Object<string, Region>}} Pool
 * @typedef {{time: string, generation: number, pools: Object<string, Pool>, api_token_required: boolean,
 *   answers_window_seconds: number, zones: {name: string, serial: number}[],
 *   reload: {ok: boolean, errors: string[]}, geoip: {file: string|null, type?: string, built?: string|null,
 *   error: string|null, description?: string}, cluster: {instance: string}|null}} Status
 * @typedef {{id: number, at: number, kind: string, text: string, pool: string|null, region: string|null,
 *   address: string|null, state: string|null, forced: string|null}} FeedEvent
 */

const PERIODIC_REFRESH_MS = 3000; // last checks and answer shares move without a new generation
const POLL_MS = 1000; // while the event stream is down
const FEED_SHOWN = 200;
const LABELLED_MARKERS = 16; // more than this and region names on the map overlap
const RTT_COUNTRIES = 12; // measured countries shown per pool (those with the most networks)

/** @param {string} id */
function byId(id) {
  const found = document.getElementById(id);
  if (!found) throw new Error(`no #${id}`);
  return found;
}

/** @param {string} tag @param {Object<string, string>} [attrs] @param {...(Node|string)} children */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  node.append(...children);
  return node;
}

/** @param {string} tag @param {Object<string, string>} attrs */
function svg(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  return node;
}

/** Region health as the map and the table colour it. @param {Region} region */
function regionState(region) {
  if (region.endpoints.some((e) => e.forced !== null)) return "forced";
  const up = region.endpoints.filter((e) => e.state === "up").length;
  if (up === region.endpoints.length) return "up";
  return up === 0 ? "down" : "partial";
}

/** @param {Region} region */
function healthClass(region) {
  const up = region.endpoints.filter((e) => e.state === "up").length;
  if (up === region.endpoints.length) return "up";
  return up === 0 ? "down" : "partial";
}

/** @param {string|null} iso @param {string} now */
function ago(iso, now) {
  if (!iso) return "never";
  const seconds = (Date.parse(now) - Date.parse(iso)) / 1000;
  if (seconds < 1) return "just now";
  if (seconds < 90) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  return new Date(iso).toLocaleString();
}

/** "1 answer", "2 answers". @param {number} count */
function answers(count) {
  return `${count} answer${count === 1 ? "" : "s"}`;
}

/** @param {string} pool @param {string} region @param {string} [address] */
function key(pool, region, address) {
  return JSON.stringify(address === undefined ? [pool, region] : [pool, region, address]);
}

class StatusPage {
  constructor() {
    /** @type {Status} */
    this.status = JSON.parse(byId("initial-status").textContent || "{}");
    this.shape = "";
    /** @type {Map<string, {row: HTMLTableRowElement, cells: Object<string, HTMLElement>}>} */
    this.rows = new Map();
    /** @type {Map<string, {circle: SVGElement, title: SVGElement, label: SVGElement}>} */
    this.markers = new Map();
    /** @type {Map<string, HTMLElement>} pool -> its "failing open" badge */
    this.failing = new Map();
    /** @type {Map<string, {box: HTMLElement, shown: string}>} pool -> its measured RTT table (steering: latency) */
    this.rtt = new Map();
    this.token = sessionStorage.getItem("geolb-token") || "";
    this.fetching = false;
    this.again = false;
    this.lastEventId = 0;
    /** @type {number|undefined} */
    this.pollTimer = undefined;
    this.renderMs = 0;
    this.serverOffset = 0; // this browser's clock minus the server's
  }

  start() {
    this.render();
    byId("pools").addEventListener("click", (event) => this.onAction(event));
    byId("markers").addEventListener("click", (event) => this.onMarker(event));
    byId("pool-filter").addEventListener("change", () => this.applyFilter());
    byId("explain-form").addEventListener("submit", (event) => this.explain(event));
    byId("token-form").addEventListener("submit", (event) => this.saveToken(event));
    this.follow();
    setInterval(() => this.refresh(), PERIODIC_REFRESH_MS);
    setInterval(() => this.tickTimes(), 1000);
  }

  // --- following the server ------------------------------------------------------------

  follow() {
    const live = byId("live");
    const source = new EventSource("/v1/events");
    source.addEventListener("open", () => {
      live.textContent = "live";
      live.className = "live on";
      window.clearInterval(this.pollTimer);
      this.pollTimer = undefined;
    });
    source.addEventListener("error", () => {
      live.textContent = "reconnecting…";
      live.className = "live off";
      if (this.pollTimer === undefined) this.pollTimer = window.setInterval(() => this.refresh(), POLL_MS);
    });
    source.addEventListener("generation", (event) => {
      if (Number(/** @type {MessageEvent} */ (event).data) !== this.status.generation) this.refresh();
    });
    source.addEventListener("feed", (event) => this.addFeed(JSON.parse(/** @type {MessageEvent} */ (event).data)));
  }

  async refresh() {
    if (this.fetching) {
      this.again = true; // one more fetch once this one is in
      return;
    }
    this.fetching = true;
    try {
      const reply = await fetch("/v1/status", { cache: "no-store" });
      if (reply.ok) {
        this.status = await reply.json();
        this.render();
      }
    } catch (error) {
      // the next event or timer tries again
    } finally {
      this.fetching = false;
      if (this.again) {
        this.again = false;
        this.refresh();
      }
    }
  }

  // --- rendering ------------------------------------------------------------------------

  render() {
    const started = performance.now();
    const status = this.status;
    const shape = JSON.stringify(
      Object.entries(status.pools).map(([name, pool]) => [
        name,
        Object.entries(pool.regions).map(([r, region]) => [r, region.location, region.endpoints.map((e) => e.address)]),
      ]),
    );
    if (shape !== this.shape) {
      this.shape = shape;
      this.build();
    }
    this.update();
    this.renderMs = performance.now() - started;
    document.body.dataset.generation = String(status.generation);
    document.body.dataset.renderMs = this.renderMs.toFixed(1); // read by the tests and bench/page_bench.py
    if (!document.body.dataset.firstRenderMs) document.body.dataset.firstRenderMs = document.body.dataset.renderMs;
  }

  /** The structure: one table per pool, a row per region and endpoint, a marker per placed region. */
  build() {
    const status = this.status;
    this.rows.clear();
    this.markers.clear();
    this.failing.clear();
    this.rtt.clear();
    const pools = byId("pools");
    const markers = byId("markers");
    pools.replaceChildren();
    markers.replaceChildren();
    const filter = /** @type {HTMLSelectElement} */ (byId("pool-filter"));
    const chosen = filter.value;
    filter.replaceChildren(el("option", { value: "" }, "all pools"));
    /** @type {Map<string, number>} */
    const crowd = new Map(); // regions already placed at (about) the same spot: fanned out around it
    const unplaced = [];
    for (const [poolName, pool] of Object.entries(status.pools)) {
      filter.append(el("option", { value: poolName }, poolName));
      const body = el("tbody");
      const table = el(
        "table",
        {},
        el(
          "thead",
          {},
          el("tr", {}, ...["endpoint", "state", "forced", "load", "checks ✓/✗", "last check", "latency", "last error", ""].map((h) => el("th", {}, h))),
        ),
        body,
      );
      const failing = el("span", { class: "badge down failing-open", "data-pool": poolName, hidden: "" });
      this.failing.set(poolName, failing);
      const rtt = el("div", { class: "rtt", "data-pool": poolName });
      this.rtt.set(poolName, { box: rtt, shown: "" });
      const steering = pool.steering === "latency" ? ", latency steering" : "";
      pools.append(
        el(
          "div",
          { class: "pool", "data-pool": poolName },
          el("h3", {}, `${poolName} `, el("span", { class: "muted" }, `(zone ${pool.zone}, ${pool.selection.policy}${steering})`), " ", failing),
          table,
          rtt,
        ),
      );
      for (const [regionName, region] of Object.entries(pool.regions)) {
        const cells = {
          state: el("span", { class: "badge" }),
          share: el("span", { class: "num" }),
          bar: el("span"),
        };
        const where = region.location ? `at ${region.location[0]}, ${region.location[1]}` : "no location";
        const row = /** @type {HTMLTableRowElement} */ (
          el(
            "tr",
            { class: "region-row", "data-pool": poolName, "data-region": regionName, id: `region-${poolName}-${regionName}` },
            el("td", { class: "region-name" }, regionName),
            el("td", {}, cells.state),
            el(
              "td",
              { colspan: "7" },
              el("span", { class: "share", title: "share of the pool's answers over the last minute" }, cells.bar),
              cells.share,
              el("span", { class: "muted where" }, where),
            ),
          )
        );
        body.append(row);
        this.rows.set(key(poolName, regionName), { row, cells });
        for (const endpoint of region.endpoints) {
          const c = {
            state: el("span", { class: "badge" }),
            forced: el("td"),
            load: el("td", { class: "num" }),
            checks: el("td", { class: "num" }),
            last: el("td", { class: "num" }),
            latency: el("td", { class: "num" }),
            error: el("td", { class: "error-text" }),
          };
          const actions = el(
            "td",
            { class: "actions" },
            el("button", { type: "button", "data-action": "up", title: "force up" }, "Force up"),
            " ",
            el("button", { type: "button", "data-action": "down", title: "force down" }, "Force down"),
            " ",
            el("button", { type: "button", "data-action": "clear", title: "back to the health checks" }, "Clear"),
          );
          const endpointRow = /** @type {HTMLTableRowElement} */ (
            el(
              "tr",
              { class: "endpoint-row", "data-pool": poolName, "data-region": regionName, "data-address": endpoint.address },
              el("td", { class: "num", title: endpoint.check.target || "no health check" }, endpoint.address),
              el("td", {}, c.state),
              c.forced,
              c.load,
              c.checks,
              c.last,
              c.latency,
              c.error,
              actions,
            )
          );
          body.append(endpointRow);
          this.rows.set(key(poolName, regionName, endpoint.address), { row: endpointRow, cells: c });
        }
        if (!region.location) {
          unplaced.push(`${poolName}/${regionName}`);
          continue;
        }
        const [lat, lon] = region.location;
        const spot = `${Math.round(lat)},${Math.round(lon)}`;
        const n = crowd.get(spot) || 0;
        crowd.set(spot, n + 1);
        const angle = n * 2.4; // golden angle: neighbours never sit on each other
        const spread = n === 0 ? 0 : 34 + 8 * Math.sqrt(n);
        // The outline's projection (scripts/world_outline.py): x = (lon + 180) * 10, y = (90 - lat) * 10.
        const x = (lon + 180) * 10 + spread * Math.cos(angle);
        const y = (90 - lat) * 10 + spread * Math.sin(angle);
        const circle = svg("circle", { cx: x.toFixed(0), cy: y.toFixed(0), r: "26", class: "marker", "data-pool": poolName, "data-region": regionName });
        const title = svg("title", {});
        circle.append(title);
        const label = svg("text", { x: (x + 36).toFixed(0), y: (y + 12).toFixed(0), class: "marker-label", "data-pool": poolName });
        label.textContent = regionName;
        markers.append(circle, label);
        this.markers.set(key(poolName, regionName), { circle, title, label });
      }
    }
    filter.value = chosen in status.pools ? chosen : "";
    byId("unplaced").textContent = unplaced.length ? `Not on the map (no location): ${unplaced.join(", ")}` : "";
    this.applyFilter();
  }

  /** The values: states, counters, shares, times; only what changed is touched. */
  update() {
    const status = this.status;
    const span = Math.round(status.answers_window_seconds);
    for (const [poolName, pool] of Object.entries(status.pools)) {
      const failing = this.failing.get(poolName);
      if (failing) {
        const families = pool.failing_open.join(", ");
        set(failing, families ? `failing open (${families})` : "");
        failing.title = families ? `no ${families} endpoint is up anywhere in this pool: it answers as if every one were` : "";
        failing.hidden = !families;
      }
      for (const [regionName, region] of Object.entries(pool.regions)) {
        const state = regionState(region);
        const health = healthClass(region);
        const up = region.endpoints.filter((e) => e.state === "up").length;
        let label = state === "forced" ? `forced, ${up}/${region.endpoints.length} up` : state === "partial" ? `${up}/${region.endpoints.length} up` : state;
        if (region.failing_open && up === 0) label += ", failing open"; // down, yet answered: nothing in the pool is up
        const entry = this.rows.get(key(poolName, regionName));
        if (entry) {
          const badge = entry.cells.state;
          set(badge, label);
          setClass(badge, `badge ${state === "forced" ? "forced" : health}`);
          entry.row.dataset.state = state;
          entry.row.dataset.health = health;
          const share = pool.answers_last_minute ? (100 * region.answers_last_minute) / pool.answers_last_minute : 0;
          set(entry.cells.share, `${share.toFixed(share && share < 10 ? 1 : 0)} % (${answers(region.answers_last_minute)}${span && span < 55 ? ` in ${span} s` : " in the last minute"})`);
          entry.cells.bar.style.width = `${share}%`;
        }
        const marker = this.markers.get(key(poolName, regionName));
        if (marker) {
          setClass(marker.circle, `marker ${health}${state === "forced" ? " forced" : ""}`);
          marker.circle.dataset.state = state;
          marker.circle.dataset.health = health;
          set(marker.title, `${poolName} / ${regionName}: ${label}, ${answers(region.answers_last_minute)} in the last minute`);
        }
        for (const endpoint of region.endpoints) {
          const row = this.rows.get(key(poolName, regionName, endpoint.address));
          if (!row) continue;
          const c = row.cells;
          row.row.dataset.state = endpoint.state;
          row.row.dataset.forced = endpoint.forced || "";
          set(c.state, endpoint.state + (endpoint.busy ? ", busy" : ""));
          setClass(c.state, `badge ${endpoint.state === "up" ? "up" : "down"}`);
          set(c.forced, endpoint.forced ? `forced ${endpoint.forced}` : "—");
          set(c.load, endpoint.load === null ? "—" : `${Math.round(endpoint.load * 100)} %`);
          set(c.checks, endpoint.check.type === "none" ? "no check" : `${endpoint.successes} / ${endpoint.failures}`);
          c.last.dataset.at = endpoint.last_check || "";
          set(c.last, endpoint.check.type === "none" ? "—" : ago(endpoint.last_check, status.time));
          set(c.latency, endpoint.last_latency_ms === null ? "—" : `${endpoint.last_latency_ms.toFixed(1)} ms`);
          set(c.error, endpoint.last_error || "");
        }
      }
    }
    for (const [poolName, pool] of Object.entries(status.pools)) this.updateRtt(poolName, pool);
    const zones = status.zones.map((z) => `${z.name} ${z.serial}`).join(", ");
    const instance = status.cluster ? `instance ${status.cluster.instance}, ` : "";
    set(byId("summary"), `${instance}generation ${status.generation}; zones ${zones}`);
    const geoip = status.geoip;
    set(byId("geoip"), geoip.file ? `GeoIP: ${geoip.file} (${geoip.type}, built ${(geoip.built || "").slice(0, 10)})${geoip.error ? ` — refused a new file: ${geoip.error}` : ""}.` : `GeoIP: ${geoip.description || "none"}.`);
    set(byId("reload"), status.reload.ok ? "" : `Last reload had errors: ${status.reload.errors.join("; ")}`);
    byId("token-form").hidden = !status.api_token_required;
    this.serverOffset = Date.now() - Date.parse(status.time);
  }

  /** Latency steering: each region's RTT as measured from each country with evidence (rebuilt when it changes).
   * @param {string} poolName @param {Pool} pool */
  updateRtt(poolName, pool) {
    const entry = this.rtt.get(poolName);
    if (!entry) return;
    /** @type {Map<string, number>} */
    const networks = new Map();
    for (const region of Object.values(pool.regions)) {
      for (const [country, figure] of Object.entries(region.rtt_by_country || {})) {
        networks.set(country, Math.max(networks.get(country) || 0, figure.networks));
      }
    }
    const countries = [...networks.keys()].sort((a, b) => (networks.get(b) || 0) - (networks.get(a) || 0) || a.localeCompare(b)).slice(0, RTT_COUNTRIES);
    const shown = JSON.stringify([countries, Object.entries(pool.regions).map(([name, region]) => [name, region.rtt_by_country])]);
    if (shown === entry.shown) return;
    entry.shown = shown;
    if (!countries.length) {
      entry.box.replaceChildren();
      return;
    }
    const head = el("tr", {}, el("th", {}, "measured RTT from"), ...countries.map((c) => el("th", { class: "num", title: `${networks.get(c)} networks` }, c)));
    const rows = Object.entries(pool.regions).map(([regionName, region]) =>
      el(
        "tr",
        { "data-region": regionName },
        el("td", { class: "region-name" }, regionName),
        ...countries.map((c) => {
          const figure = (region.rtt_by_country || {})[c];
          return el("td", { class: "num", "data-country": c, title: figure ? `${figure.networks} networks` : "not enough measurements" }, figure ? `${figure.ms.toFixed(0)} ms` : "—");
        }),
      ),
    );
    entry.box.replaceChildren(el("table", { class: "rtt-table" }, el("thead", {}, head), el("tbody", {}, ...rows)));
  }

  /** "3.2 s ago" keeps counting between refreshes. */
  tickTimes() {
    const now = new Date(Date.now() - this.serverOffset).toISOString();
    for (const { cells } of this.rows.values()) {
      const at = cells.last && cells.last.dataset.at;
      if (at) set(cells.last, ago(at, now));
    }
  }

  /** Only the chosen pool's markers; names beside them while they are few enough to read. */
  applyFilter() {
    const chosen = /** @type {HTMLSelectElement} */ (byId("pool-filter")).value;
    const shown = [...this.markers.values()].filter(({ circle }) => !chosen || circle.dataset.pool === chosen);
    for (const { circle, label } of this.markers.values()) {
      const visible = !chosen || circle.dataset.pool === chosen;
      circle.style.display = visible ? "" : "none";
      label.style.display = visible && shown.length <= LABELLED_MARKERS ? "" : "none";
    }
  }

  /** @param {Event} event */
  onMarker(event) {
    const target = /** @type {Element} */ (event.target);
    const pool = target.getAttribute("data-pool"), region = target.getAttribute("data-region");
    if (pool === null || region === null) return;
    const entry = this.rows.get(key(pool, region));
    if (!entry) return;
    entry.row.scrollIntoView({ behavior: "smooth", block: "center" });
    entry.row.classList.remove("highlight");
    void entry.row.offsetWidth;
    entry.row.classList.add("highlight");
  }

  // --- the feed ---------------------------------------------------------------------------

  /** @param {FeedEvent} event */
  addFeed(event) {
    if (event.id <= this.lastEventId) return;
    this.lastEventId = event.id;
    const list = byId("feed");
    byId("feed-empty").hidden = true;
    const when = new Date(event.at * 1000);
    const where = event.pool ? `${event.pool}/${event.region} ${event.address}: ` : "";
    const what = event.kind === "state" ? `${event.state} — ` : "";
    const item = el("li", { class: `state-${event.state || "none"}`, "data-kind": event.kind }, el("time", { datetime: when.toISOString() }, when.toLocaleTimeString()), `${where}${what}${event.text}`);
    list.prepend(item);
    while (list.children.length > FEED_SHOWN) list.lastElementChild?.remove();
  }

  // --- forcing ----------------------------------------------------------------------------

  /** @param {Event} event */
  async onAction(event) {
    const button = /** @type {Element} */ (event.target).closest("button[data-action]");
    if (!button) return;
    const row = /** @type {HTMLElement} */ (button.closest("tr"));
    const { pool, region, address } = row.dataset;
    const action = button.getAttribute("data-action");
    const state = action === "clear" ? null : action;
    /** @type {Object<string, string>} */
    const headers = { "Content-Type": "application/json" };
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    const path = `/v1/endpoints/${encodeURIComponent(pool || "")}/${encodeURIComponent(region || "")}/${encodeURIComponent(address || "")}/force`;
    let reply;
    try {
      reply = await fetch(path, { method: "POST", headers, body: JSON.stringify({ state }) });
    } catch (error) {
      this.notify(`Could not reach geolb: ${error}`);
      return;
    }
    if (reply.ok) {
      this.notify(`${pool}/${region} ${address}: ${state === null ? "back to its checks" : `forced ${state}`}`, true);
      this.refresh();
      return;
    }
    let message = `${reply.status} ${reply.statusText}`;
    try {
      message = (await reply.json()).error || message;
    } catch (error) {
      // not JSON: the status line says it
    }
    this.notify(`The API refused (${reply.status}): ${message}`);
    if (reply.status === 401 || reply.status === 403) {
      this.token = "";
      sessionStorage.removeItem("geolb-token");
      const form = byId("token-form");
      form.hidden = false;
      byId("token").focus();
    }
  }

  /** @param {Event} event */
  saveToken(event) {
    event.preventDefault();
    const input = /** @type {HTMLInputElement} */ (byId("token"));
    this.token = input.value.trim();
    if (this.token) sessionStorage.setItem("geolb-token", this.token);
    else sessionStorage.removeItem("geolb-token");
    input.value = "";
    this.notify(this.token ? "Token kept for this tab; try the button again." : "Token cleared.", true);
  }

  /** @param {string} text @param {boolean} [ok] */
  notify(text, ok = false) {
    const notice = byId("notice");
    notice.textContent = text;
    notice.className = ok ? "ok" : "";
    notice.hidden = false;
  }

  // --- explain ----------------------------------------------------------------------------

  /** @param {Event} event */
  async explain(event) {
    event.preventDefault();
    const name = /** @type {HTMLInputElement} */ (byId("explain-name")).value.trim();
    const type = /** @type {HTMLSelectElement} */ (byId("explain-type")).value;
    const client = /** @type {HTMLInputElement} */ (byId("explain-client")).value.trim();
    const out = byId("explain-result");
    out.replaceChildren(el("p", { class: "muted" }, "asking…"));
    let reply, body;
    try {
      reply = await fetch(`/v1/explain?${new URLSearchParams({ name, type, client })}`);
      body = await reply.json();
    } catch (error) {
      out.replaceChildren(el("p", { class: "error" }, `Could not ask geolb: ${error}`));
      return;
    }
    if (!reply.ok) {
      out.replaceChildren(el("p", { class: "error" }, body.error || `${reply.status}`));
      return;
    }
    out.replaceChildren(...explanation(body));
  }
}

/** @param {any} report @returns {HTMLElement[]} */
function explanation(report) {
  const parts = [];
  const geo = report.geo;
  const head = `${report.query.name} ${report.query.type} for ${report.client.address}/${report.client.prefix}: ${report.rcode}, ECS scope /${report.ecs_scope}`;
  parts.push(el("p", { id: "explain-summary" }, head));
  const records = [...report.answer, ...report.authority].map((r) => el("tr", {}, el("td", {}, r.name), el("td", { class: "num" }, String(r.ttl)), el("td", {}, r.type), el("td", { class: "num" }, r.data)));
  if (records.length) {
    parts.push(el("table", { id: "explain-records" }, el("thead", {}, el("tr", {}, ...["name", "ttl", "type", "data"].map((h) => el("th", {}, h)))), el("tbody", {}, ...records)));
  }
  if (!geo) return parts;
  const where = geo.location;
  const place = [where.country, where.continent, where.latitude !== null ? `${where.latitude}, ${where.longitude}` : null].filter(Boolean).join(", ");
  parts.push(
    el(
      "p",
      {},
      "Pool ",
      el("strong", {}, geo.pool),
      ` (${geo.family}); client located at ${place || "unknown"} [${where.source}, ${where.network}]; answered from `,
      el("strong", { id: "explain-region" }, geo.region || "no region"),
      geo.tier === "fail open" ? " (fail open: nothing healthy anywhere)" : geo.tier === "busy" ? " (every healthy endpoint is busy)" : "",
    ),
  );
  /** @type {Map<string, string>} */
  const skipped = new Map(geo.skipped.map((/** @type {{region: string, reason: string}} */ s) => [s.region, s.reason]));
  const rows = geo.ranking.map((/** @type {{region: string, reason: string}} */ r, /** @type {number} */ i) =>
    el(
      "tr",
      { "data-region": r.region, class: r.region === geo.region ? "chosen" : "" },
      el("td", { class: "num" }, String(i + 1)),
      el("td", {}, r.region === geo.region ? `▶ ${r.region}` : r.region),
      el("td", {}, r.reason),
      el("td", {}, skipped.get(r.region) || (r.region === geo.region ? "answered" : "")),
    ),
  );
  parts.push(
    el("table", { id: "explain-ranking" }, el("thead", {}, el("tr", {}, ...["#", "region", `ranked by ${geo.rule}`, "outcome"].map((h) => el("th", {}, h)))), el("tbody", {}, ...rows)),
  );
  return parts;
}

/** @param {Element} node @param {string} text */
function set(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

/** @param {Element} node @param {string} name */
function setClass(node, name) {
  if (node.getAttribute("class") !== name) node.setAttribute("class", name);
}

const page = new StatusPage();
/** @type {any} */ (window).geolb = page;
page.start();
