// The operator console (GET /admin). Plain JavaScript, no build step; charts by the vendored
// uPlot. Every string that came from a producer (titles, errors, URLs, template output) is put
// into the page as text (textContent), never as HTML. The API key is kept in sessionStorage:
// this tab only, gone when it closes.
"use strict";

(function () {
  const KEY_STORE = "notifier.admin.key";
  const REFRESH_MS = 5000;
  const COUNTED = ["sent", "delivered", "failed", "skipped"];
  const COLORS = { sent: "#2f6fed", delivered: "#16a34a", failed: "#dc2626", skipped: "#98a2b3",
                   p50: "#2f6fed", p95: "#d97706", p99: "#dc2626" };

  const $ = (id) => document.getElementById(id);
  const charts = new Map(); // channel -> {counts: uPlot, latency: uPlot}
  let timer = null;
  let selectedTemplate = null;
  let previewTimer = null;

  // --- DOM helpers: text only ----------------------------------------------------------------

  function el(tag, text, attrs) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
    return node;
  }

  function row(cells, attrs) {
    const tr = el("tr", null, attrs);
    for (const cell of cells) {
      if (cell instanceof Node) { const td = el("td"); td.append(cell); tr.append(td); }
      else tr.append(el("td", cell.text, cell.attrs));
    }
    return tr;
  }

  function when(iso) {
    return iso ? new Date(iso).toLocaleString() : "";
  }

  // --- the API --------------------------------------------------------------------------------

  class AuthError extends Error {}

  async function api(path, options) {
    const key = sessionStorage.getItem(KEY_STORE);
    const init = Object.assign({ headers: {} }, options || {});
    init.headers = Object.assign({ Authorization: "Bearer " + key }, init.headers);
    if (init.body !== undefined) init.headers["Content-Type"] = "application/json";
    const response = await fetch(path, init);
    let body = null;
    try { body = await response.json(); } catch (_) { body = null; }
    if (response.status === 401) {
      throw new AuthError("That API key was refused (401 unauthorized). Check it and sign in again.");
    }
    if (response.status === 403) {
      throw new AuthError("That credential is not a producer API key (403): the console needs one of NOTIFIER_API_KEYS.");
    }
    if (!response.ok) {
      const message = body && body.error ? body.error.message : response.statusText;
      const error = new Error(message || "HTTP " + response.status);
      error.status = response.status;
      error.body = body;
      throw error;
    }
    return body;
  }

  // --- sign in and out ------------------------------------------------------------------------

  function showLogin(message) {
    stop();
    sessionStorage.removeItem(KEY_STORE);
    $("console").hidden = true;
    $("sign-out").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    $("key").value = "";
    $("key").focus();
  }

  async function signIn(event) {
    event.preventDefault();
    const key = $("key").value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY_STORE, key);
    $("sign-in").disabled = true;
    try {
      await start();
    } finally {
      $("sign-in").disabled = false;
    }
  }

  async function start() {
    // Shown before the first refresh, so that the charts are sized to the laid-out page; a
    // refused key puts the login back at once.
    $("login").hidden = true;
    $("console").hidden = false;
    try {
      await refresh();
    } catch (error) {
      fail(error);
      return;
    }
    $("login-error").textContent = "";
    $("sign-out").hidden = false;
    loadTemplates().catch(fail);
    stop();
    timer = setInterval(() => refresh().catch(fail), REFRESH_MS);
  }

  function stop() {
    if (timer !== null) clearInterval(timer);
    timer = null;
  }

  function fail(error) {
    if (error instanceof AuthError) { showLogin(error.message); return; }
    $("console-error").textContent = "Could not refresh: " + error.message;
  }

  // --- refresh --------------------------------------------------------------------------------

  async function refresh() {
    const stats = await api("/v1/admin/stats?window_seconds=3600");
    renderStats(stats);
    await Promise.all([refreshDeadLetter(), refreshWebhooks()]);
    $("console-error").textContent = "";
    $("refreshed").textContent = "updated " + new Date().toLocaleTimeString();
    document.body.dataset.refreshed = String(Date.now());
  }

  function renderStats(stats) {
    $("step").textContent = "(" + stats.step_seconds + " s steps)";
    const queue = $("queue").tBodies[0];
    queue.replaceChildren();
    const select = $("dead-channel");
    for (const [name, series] of Object.entries(stats.channels)) {
      queue.append(row([
        { text: name },
        { text: series.queue.pending, attrs: { class: "num", "data-state": "pending" } },
        { text: series.queue.retrying, attrs: { class: "num", "data-state": "retrying" } },
        { text: series.queue.in_flight, attrs: { class: "num", "data-state": "in_flight" } },
      ], { "data-channel": name }));
      if (![...select.options].some((o) => o.value === name)) select.append(el("option", name, { value: name }));
      renderChannel(name, stats.timestamps, series);
    }
  }

  function renderChannel(name, timestamps, series) {
    let card = document.querySelector('#channels .card[data-channel="' + CSS.escape(name) + '"]');
    if (!card) {
      card = el("article", null, { class: "card", "data-channel": name });
      card.append(el("h3", name), el("div", null, { class: "totals" }),
                  el("div", null, { class: "chart counts" }),
                  el("p", null, { class: "latency-now" }),
                  el("div", null, { class: "chart latency" }));
      $("channels").append(card);
    }
    const totals = card.querySelector(".totals");
    totals.replaceChildren();
    for (const status of COUNTED) {
      const total = series[status].reduce((a, b) => a + b, 0);
      totals.append(el("span", status + " " + total, { class: status, "data-series": status, "data-total": String(total) }));
    }
    const latest = (values) => { for (let i = values.length - 1; i >= 0; i--) if (values[i] !== null) return values[i]; return null; };
    const parts = ["p50", "p95", "p99"].map((p) => {
      const value = latest(series.latency_ms[p]);
      return p + " " + (value === null ? "–" : Math.round(value) + " ms");
    });
    card.querySelector(".latency-now").textContent = "due → sent, latest minute with sends: " + parts.join(" · ");

    const counts = [timestamps, ...COUNTED.map((s) => series[s])];
    const latency = [timestamps, ...["p50", "p95", "p99"].map((p) => series.latency_ms[p])];
    const existing = charts.get(name);
    if (existing) {
      existing.counts.setData(counts);
      existing.latency.setData(latency);
      return;
    }
    const width = Math.max(320, card.clientWidth - 24);
    const make = (target, labels, data, unit) => new uPlot({
      width, height: 150,
      // Latency points are drawn as dots too: a minute with sends between two without is one
      // point, which a line alone would not show.
      series: [{}, ...labels.map((label) => ({
        label, stroke: COLORS[label], width: 1.5, spanGaps: unit === "ms",
        points: { show: unit === "ms", size: 5, fill: COLORS[label] },
      }))],
      axes: [{}, { size: unit === "ms" ? 70 : 48, values: (u, ticks) => ticks.map((t) => t + (unit === "ms" ? " ms" : "")) }],
      scales: { x: { time: true } },
      legend: { live: false },
    }, data, target);
    charts.set(name, {
      counts: make(card.querySelector(".counts"), COUNTED, counts, "count"),
      latency: make(card.querySelector(".latency"), ["p50", "p95", "p99"], latency, "ms"),
    });
  }

  // --- the dead letter ------------------------------------------------------------------------

  async function refreshDeadLetter() {
    const channel = $("dead-channel").value;
    const query = new URLSearchParams({ channel_status: "failed", limit: "100" });
    if (channel) query.set("channel", channel);
    const page = await api("/v1/notifications?" + query);
    renderDeadLetter(page.items);
  }

  function renderDeadLetter(items) {
    const needle = $("dead-error").value.trim().toLowerCase();
    const only = $("dead-channel").value;
    const body = $("dead").tBodies[0];
    body.replaceChildren();
    let shown = 0;
    for (const item of items) {
      for (const [channel, state] of Object.entries(item.delivery_status)) {
        if (state.status !== "failed" || (only && channel !== only)) continue;
        const error = state.last_error || "";
        if (needle && !error.toLowerCase().includes(needle)) continue;
        const button = el("button", "Retry", { type: "button", class: "retry" });
        button.addEventListener("click", () => retry(item.id, button));
        body.append(row([
          { text: when(state.updated_at) },
          { text: item.user_id, attrs: { class: "wrap" } },
          { text: item.title, attrs: { class: "wrap title" } },
          { text: channel },
          { text: state.attempts, attrs: { class: "num" } },
          { text: error, attrs: { class: "wrap last-error" } },
          button,
        ], { "data-id": item.id, "data-channel": channel }));
        shown++;
      }
    }
    $("dead-empty").hidden = shown > 0;
    $("dead-count").textContent = shown + " shown";
  }

  async function retry(id, button) {
    button.disabled = true;
    try {
      const result = await api("/v1/notifications/" + encodeURIComponent(id) + "/retry", { method: "POST" });
      button.replaceWith(el("span", "retried: " + result.status, { class: "retry-note" }));
    } catch (error) {
      if (error instanceof AuthError) { fail(error); return; }
      button.disabled = false;
      $("console-error").textContent = "Retry failed: " + error.message;
    }
  }

  // --- webhook endpoints ----------------------------------------------------------------------

  async function refreshWebhooks() {
    const endpoints = (await api("/v1/webhook-endpoints")).items;
    const logs = await Promise.all(endpoints.map((e) =>
      api("/v1/webhook-endpoints/" + encodeURIComponent(e.id) + "/deliveries?limit=50").then((p) => p.items)));
    const body = $("webhooks").tBodies[0];
    body.replaceChildren();
    endpoints.forEach((endpoint, i) => {
      const attempts = logs[i];
      const failures = attempts.filter((a) => a.status_code === null || a.status_code < 200 || a.status_code >= 300);
      const rate = attempts.length ? failures.length / attempts.length : 0;
      const last = failures.length ? failures[0] : null;
      const lastError = last ? (last.error || "HTTP " + last.status_code) + " · " + when(last.at) : "";
      const level = rate >= 0.5 ? "bad" : rate > 0 ? "warn" : "";
      body.append(row([
        { text: endpoint.url, attrs: { class: "wrap" } },
        { text: endpoint.enabled ? "yes" : "no — " + (endpoint.disabled_reason || "disabled") },
        { text: attempts.length, attrs: { class: "num" } },
        { text: attempts.length ? Math.round(rate * 100) + "%" : "–", attrs: { class: "num rate" } },
        { text: lastError, attrs: { class: "wrap last-error" } },
      ], { "data-id": endpoint.id, class: level }));
    });
    $("webhooks-empty").hidden = endpoints.length > 0;
  }

  // --- templates ------------------------------------------------------------------------------

  async function loadTemplates() {
    const page = await api("/v1/templates?limit=500");
    const list = $("templates");
    list.replaceChildren();
    for (const template of page.items) {
      const button = el("button", template.key + (template.builtin ? " (built-in)" : ""),
                        { type: "button", "aria-pressed": "false", "data-key": template.key });
      button.addEventListener("click", () => selectTemplate(template, button));
      const item = el("li");
      item.append(button);
      list.append(item);
    }
  }

  function selectTemplate(template, button) {
    for (const other of $("templates").querySelectorAll("button")) other.setAttribute("aria-pressed", "false");
    button.setAttribute("aria-pressed", "true");
    selectedTemplate = template;
    $("preview-form").hidden = false;
    $("preview-key").textContent = template.key;
    $("preview-version").textContent = "version " + template.version + " · locales " + template.locales.join(", ");
    preview();
  }

  function schedulePreview() {
    clearTimeout(previewTimer);
    previewTimer = setTimeout(preview, 300);
  }

  async function preview() {
    if (!selectedTemplate) return;
    const out = $("preview-parts");
    let data;
    try {
      data = JSON.parse($("preview-data").value || "{}");
    } catch (error) {
      $("preview-error").textContent = "data is not JSON: " + error.message;
      return;
    }
    const request = { data };
    const locale = $("preview-locale").value.trim();
    if (locale) request.locale = locale;
    try {
      const result = await api("/v1/templates/" + encodeURIComponent(selectedTemplate.key) + "/preview",
                               { method: "POST", body: JSON.stringify(request) });
      $("preview-error").textContent = "";
      out.replaceChildren();
      out.append(el("dt", "locale"), el("dd", result.locale));
      for (const [part, value] of Object.entries(result.parts)) {
        out.append(el("dt", part), el("dd", value === null ? "(default layout)" : value, { "data-part": part }));
      }
    } catch (error) {
      if (error instanceof AuthError) { fail(error); return; }
      $("preview-error").textContent = error.message;
      out.replaceChildren();
    }
  }

  // --- wiring ---------------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", signIn);
    $("sign-out").addEventListener("click", () => showLogin("Signed out."));
    $("dead-channel").addEventListener("change", () => refreshDeadLetter().catch(fail));
    $("dead-error").addEventListener("input", () => refreshDeadLetter().catch(fail));
    $("preview-data").addEventListener("input", schedulePreview);
    $("preview-locale").addEventListener("input", schedulePreview);
    $("preview-form").addEventListener("submit", (event) => event.preventDefault());
    if (sessionStorage.getItem(KEY_STORE)) start();
    else showLogin("");
  });
})();
