// The notifier inbox: one user's notifications and running tasks, live over a WebSocket.
//
// Open it as /inbox#token=<user token>&user=<user id>. The fragment never reaches the server;
// the token goes out only in the Authorization header of API calls and in the WebSocket URL.
//
// Safety rules this file keeps: data from the server is put into the DOM with textContent and
// element properties only (never innerHTML), and links are made only for http(s) URLs.
"use strict";

(() => {
  const params = new URLSearchParams(window.location.hash.slice(1));
  const token = params.get("token") || "";
  const user = params.get("user") || "";
  const userPath = "/v1/users/" + encodeURIComponent(user);

  const $ = (id) => document.getElementById(id);
  const list = $("notifications");
  const taskList = $("tasks");

  const state = {
    notifications: new Map(), // id -> { data, el }
    unread: 0,
    tasks: new Map(), // task_id -> { data, el }
    cursor: null, // next page of older notifications, once the first page is loaded
    loaded: false,
    socket: null,
    attempt: 0, // reconnect attempts since the last successful open
    everConnected: false,
  };

  // ---- small helpers -------------------------------------------------------------------------

  function say(text) {
    $("status").textContent = text;
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function safeHttpUrl(value) {
    if (typeof value !== "string") return null;
    try {
      const url = new URL(value);
      return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
    } catch {
      return null;
    }
  }

  async function api(method, path, body) {
    const headers = { Authorization: "Bearer " + token, Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
    });
    const data = response.status === 204 ? null : await response.json().catch(() => null);
    if (!response.ok) {
      const message = data && data.error ? data.error.message : "HTTP " + response.status;
      const error = new Error(message);
      error.status = response.status;
      throw error;
    }
    return data;
  }

  // ---- unread badge --------------------------------------------------------------------------

  function setUnread(count) {
    state.unread = Math.max(0, count);
    const badge = $("badge");
    badge.textContent = String(state.unread);
    badge.dataset.count = String(state.unread);
    document.title = state.unread ? "(" + state.unread + ") Inbox" : "Inbox";
  }

  // ---- notifications -------------------------------------------------------------------------

  // Said in words, not by colour alone: the marker's text is what a screen reader reads too.
  const PRIORITY_MARKERS = { urgent: "Urgent", high: "High priority" };

  function priorityMarker(priority) {
    return Object.hasOwn(PRIORITY_MARKERS, priority) ? PRIORITY_MARKERS[priority] : null;
  }

  function renderNotification(n) {
    const item = el("li", "notification");
    item.dataset.id = n.id;
    item.dataset.created = n.created_at;
    item.tabIndex = 0;
    const marker = priorityMarker(n.priority);
    if (marker) {
      item.classList.add("priority-" + n.priority);
      item.append(el("span", "priority", marker));
    }
    item.append(el("div", "title", n.title), el("div", "message", n.message));
    const meta = el("div", "meta");
    const time = el("time", null, new Date(n.created_at).toLocaleString());
    time.dateTime = n.created_at;
    meta.append(time);
    const href = safeHttpUrl(n.action_url);
    if (href) {
      const link = el("a", "action", "Open");
      link.href = href;
      link.target = "_blank";
      link.rel = "noopener noreferrer";
      meta.append(link);
    }
    item.append(meta);
    item.addEventListener("click", (event) => {
      if (event.target.closest("a")) return; // following the link is not "mark read"
      markRead(n.id);
    });
    item.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        markRead(n.id);
      }
    });
    return item;
  }

  function applyReadState(entry) {
    const read = Boolean(entry.data.is_read);
    entry.el.classList.toggle("read", read);
    entry.el.classList.toggle("unread", !read);
    entry.el.classList.remove(...[...entry.el.classList].filter((c) => c.startsWith("type-")));
    entry.el.classList.add("type-" + entry.data.notification_type);
    const marker = priorityMarker(entry.data.priority);
    const prefix = (read ? "" : "Unread: ") + (marker ? marker + ": " : "");
    entry.el.setAttribute("aria-label", prefix + entry.data.title);
  }

  // Keep the list newest first: insert before the first item that is older.
  function insertSorted(node, createdAt) {
    const time = Date.parse(createdAt);
    for (const other of list.children) {
      if (Date.parse(other.dataset.created) <= time) {
        list.insertBefore(node, other);
        return;
      }
    }
    list.append(node);
  }

  // Add or update one notification; returns true when it was new to this page.
  function upsertNotification(n, { live = false } = {}) {
    const known = state.notifications.get(n.id);
    if (known) {
      // A repeated frame, or a fresher copy: never let it undo a read mark made here.
      known.data = { ...n, is_read: known.data.is_read || n.is_read };
      applyReadState(known);
      return false;
    }
    const entry = { data: n, el: renderNotification(n) };
    state.notifications.set(n.id, entry);
    applyReadState(entry);
    if (live) entry.el.classList.add("fresh");
    insertSorted(entry.el, n.created_at);
    $("empty").hidden = true;
    return true;
  }

  async function loadInbox({ more = false } = {}) {
    const query = new URLSearchParams({ limit: "20" });
    if (more && state.cursor) query.set("cursor", state.cursor);
    const page = await api("GET", userPath + "/notifications?" + query);
    for (const n of page.items) upsertNotification(n);
    markSeen(page.items.map((n) => n.id));
    if (more || !state.loaded) state.cursor = page.next_cursor; // a refresh keeps the cursor
    state.loaded = true;
    $("load-more").hidden = !state.cursor;
    $("empty").hidden = state.notifications.size > 0;
    setUnread(page.unread_count);
  }

  // What this page shows is seen: an escalation waiting on "seen" (an email in ten minutes
  // unless…) is skipped. Best effort: a failure only means the escalation may still go out.
  function markSeen(ids) {
    if (ids.length === 0) return;
    api("POST", userPath + "/notifications/seen", { ids }).catch(() => {});
  }

  async function markRead(id) {
    const entry = state.notifications.get(id);
    if (!entry || entry.data.is_read) return;
    entry.data.is_read = true; // optimistic; undone below if the server refuses
    applyReadState(entry);
    setUnread(state.unread - 1);
    try {
      entry.data = await api("POST", userPath + "/notifications/" + encodeURIComponent(id) + "/read");
      applyReadState(entry);
    } catch (error) {
      entry.data.is_read = false;
      applyReadState(entry);
      setUnread(state.unread + 1);
      say("Could not mark it read: " + error.message);
    }
  }

  async function markAllRead() {
    const button = $("mark-all");
    button.disabled = true;
    try {
      const result = await api("POST", userPath + "/notifications/read-all");
      for (const entry of state.notifications.values()) {
        entry.data.is_read = true;
        applyReadState(entry);
      }
      setUnread(result.unread_count);
    } catch (error) {
      say("Could not mark all read: " + error.message);
    } finally {
      button.disabled = false;
    }
  }

  // ---- running tasks -------------------------------------------------------------------------

  const FINISHED = new Set(["completed", "failed", "cancelled"]);

  function renderTask() {
    const item = el("li", "task");
    const label = el("div", "label");
    label.append(el("span", "name"), el("span", "step"));
    const bar = el("progress");
    bar.max = 100;
    item.append(label, bar);
    return item;
  }

  function describe(task) {
    if (task.status === "failed") return task.error_message || "failed";
    if (task.status === "completed") return "done";
    const parts = [task.current_step, Math.round(task.progress_percentage) + "%"];
    const left = task.estimated_remaining_seconds;
    if (typeof left === "number" && task.status === "running") parts.push("~" + Math.ceil(left) + "s left");
    return parts.filter(Boolean).join(" · ");
  }

  function upsertTask(task) {
    let entry = state.tasks.get(task.task_id);
    if (entry && Date.parse(entry.data.updated_at) > Date.parse(task.updated_at)) return; // stale frame
    if (!entry) {
      if (FINISHED.has(task.status)) return; // never shown; nothing to finish
      entry = { data: task, el: renderTask() };
      entry.el.dataset.taskId = task.task_id;
      state.tasks.set(task.task_id, entry);
      taskList.append(entry.el);
    }
    entry.data = task;
    const bar = entry.el.querySelector("progress");
    bar.value = task.status === "completed" ? 100 : task.progress_percentage;
    bar.textContent = Math.round(bar.value) + "%";
    entry.el.querySelector(".name").textContent = task.task_type;
    entry.el.querySelector(".step").textContent = describe(task);
    entry.el.dataset.status = task.status;
    entry.el.className = "task " + task.status;
    if (FINISHED.has(task.status)) {
      // Let the user see the full (or failed) bar for a moment, then drop it.
      state.tasks.delete(task.task_id);
      window.setTimeout(() => {
        entry.el.remove();
        $("tasks-section").hidden = taskList.children.length === 0;
      }, task.status === "completed" ? 1500 : 5000);
    }
    $("tasks-section").hidden = false;
  }

  async function loadTasks() {
    const tasks = await api("GET", userPath + "/tasks?status=running");
    for (const task of tasks) upsertTask(task);
  }

  // ---- WebSocket -----------------------------------------------------------------------------

  function setConnection(stateName, text) {
    const node = $("connection");
    node.dataset.state = stateName;
    node.textContent = text;
  }

  function onFrame(socket, frame) {
    if (frame.type === "notification" && frame.notification) {
      const n = frame.notification;
      // Ack every copy: the server marks the websocket channel delivered on the first one.
      socket.send(JSON.stringify({ type: "ack", id: n.id }));
      if (upsertNotification(n, { live: true }) && !n.is_read) setUnread(state.unread + 1);
    } else if (frame.type === "task_progress" && frame.task) {
      upsertTask(frame.task);
    }
  }

  function connect() {
    const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    const url = scheme + window.location.host + "/v1/ws?token=" + encodeURIComponent(token);
    const socket = new WebSocket(url);
    state.socket = socket;
    let keepAlive = null;

    socket.addEventListener("open", () => {
      const reconnected = state.everConnected;
      state.attempt = 0;
      state.everConnected = true;
      setConnection("live", "live");
      keepAlive = window.setInterval(() => socket.send(JSON.stringify({ type: "ping" })), 25000);
      // After a gap, catch up on what the replay does not cover (read marks, task state).
      if (reconnected) Promise.all([loadInbox(), loadTasks()]).catch((e) => say(e.message));
    });
    socket.addEventListener("message", (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      onFrame(socket, frame);
    });
    socket.addEventListener("close", (event) => {
      window.clearInterval(keepAlive);
      if (state.socket !== socket) return;
      if (event.code === 4401) {
        setConnection("offline", "offline");
        say("Your session has expired. Open the inbox again from the application.");
        return;
      }
      // Exponential backoff with jitter: 0.5 s, 1 s, 2 s ... up to 30 s.
      const delay = Math.min(30000, 500 * 2 ** state.attempt) * (0.5 + Math.random() / 2);
      state.attempt += 1;
      setConnection("reconnecting", "reconnecting…");
      window.setTimeout(connect, delay);
    });
  }

  // ---- Web Push ------------------------------------------------------------------------------

  function base64UrlToBytes(text) {
    const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    const raw = window.atob(base64 + "=".repeat((4 - (base64.length % 4)) % 4));
    return Uint8Array.from(raw, (c) => c.charCodeAt(0));
  }

  function sameKey(a, b) {
    if (!a) return false;
    const left = new Uint8Array(a);
    return left.length === b.length && left.every((byte, i) => byte === b[i]);
  }

  async function enablePush() {
    if (!("serviceWorker" in navigator) || !("PushManager" in window)) {
      say("This browser does not support Web Push.");
      return;
    }
    const keyResponse = await fetch("/v1/push/vapid-public-key", { cache: "no-store" });
    if (keyResponse.status === 404) {
      say("Browser notifications are not configured on this server.");
      return;
    }
    if (!keyResponse.ok) throw new Error("HTTP " + keyResponse.status);
    const serverKey = base64UrlToBytes((await keyResponse.json()).public_key);
    if ((await Notification.requestPermission()) !== "granted") {
      say("Browser notifications were not allowed.");
      return;
    }
    const registration = await navigator.serviceWorker.register("/inbox/sw.js", { scope: "/inbox" });
    await navigator.serviceWorker.ready;
    let subscription = await registration.pushManager.getSubscription();
    if (subscription && !sameKey(subscription.options.applicationServerKey, serverKey)) {
      await subscription.unsubscribe(); // made for another server key
      subscription = null;
    }
    if (!subscription) {
      subscription = await registration.pushManager.subscribe({
        userVisibleOnly: true,
        applicationServerKey: serverKey,
      });
    }
    await api("POST", userPath + "/push-subscriptions", subscription.toJSON());
    say("Browser notifications are on.");
  }

  // ---- preferences ---------------------------------------------------------------------------

  // What a user may turn off: a channel for everything, or email for one notification type
  // (what an email's unsubscribe link does). PATCH sends false to turn off, null to turn back
  // on (the setting is removed). GET/PATCH /v1/users/{user}/preferences.
  const PREF_CHANNELS = [
    ["email", "Email"],
    ["sms", "SMS"],
    ["browser", "Browser notifications"],
    ["websocket", "In this page"],
  ];
  const PREF_TYPES = ["info", "success", "warning", "error", "progress"];

  function preferenceToggle(id, label, checked, changeFor) {
    const row = el("label", "toggle");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.id = "pref-" + id;
    box.checked = checked;
    box.addEventListener("change", async () => {
      box.disabled = true;
      try {
        renderPreferences(await api("PATCH", userPath + "/preferences", changeFor(box.checked)));
        say("Preferences saved.");
      } catch (error) {
        box.checked = !box.checked;
        box.disabled = false;
        say("Could not save preferences: " + error.message);
      }
    });
    row.append(box, el("span", null, label));
    return row;
  }

  function renderPreferences(prefs) {
    const channels = prefs.channels || {};
    const types = prefs.types || {};
    $("pref-channels").replaceChildren(
      ...PREF_CHANNELS.map(([name, label]) =>
        preferenceToggle("channel-" + name, label, channels[name] !== false, (on) => ({
          channels: { [name]: on ? null : false },
        })),
      ),
    );
    $("pref-types").replaceChildren(
      ...PREF_TYPES.map((kind) =>
        preferenceToggle("email-" + kind, kind, !(types[kind] && types[kind].email === false), (on) => ({
          types: { [kind]: { email: on ? null : false } },
        })),
      ),
    );
  }

  async function loadPreferences() {
    renderPreferences(await api("GET", userPath + "/preferences"));
    $("preferences").hidden = false;
  }

  // ---- start ---------------------------------------------------------------------------------

  // The page says "Loading…" (in its HTML, so also before this script runs) until the first
  // load is over, whether it worked or not.
  function doneLoading() {
    $("loading").hidden = true;
    list.removeAttribute("aria-busy");
  }

  function start() {
    $("mark-all").addEventListener("click", markAllRead);
    $("load-more").addEventListener("click", () =>
      loadInbox({ more: true }).catch((e) => say("Could not load more: " + e.message)),
    );
    $("enable-push").addEventListener("click", () =>
      enablePush().catch((e) => say("Could not enable browser notifications: " + e.message)),
    );
    if (!token || !user) {
      doneLoading();
      say("Open this page with #token=…&user=… in its address.");
      return;
    }
    loadPreferences().catch((error) => say("Could not load preferences: " + error.message));
    // Load first, then connect: anything created in between is replayed by the server.
    Promise.all([loadInbox(), loadTasks()])
      .catch((error) => say("Could not load the inbox: " + error.message))
      .finally(() => {
        doneLoading();
        connect();
      });
  }

  start();
})();
