// The inbox's service worker: shows a system notification for each Web Push message.
// The payload is the JSON the browser channel sends: {id, title, message, type, priority,
// created_at, action_url?}. Notification text is plain text by definition (no HTML).
"use strict";

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

function safeHttpUrl(value) {
  if (typeof value !== "string") return null;
  try {
    const url = new URL(value);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  } catch {
    return null;
  }
}

self.addEventListener("push", (event) => {
  let data = {};
  if (event.data) {
    try {
      data = event.data.json();
    } catch {
      data = { message: event.data.text() };
    }
  }
  const title = typeof data.title === "string" && data.title ? data.title : "New notification";
  event.waitUntil(
    self.registration.showNotification(title, {
      body: typeof data.message === "string" ? data.message : "",
      tag: data.id || undefined,
      timestamp: Date.parse(data.created_at) || Date.now(),
      requireInteraction: data.priority === "urgent",
      data: { url: safeHttpUrl(data.action_url) },
    }),
  );
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const url = event.notification.data && event.notification.data.url;
  event.waitUntil(
    (async () => {
      if (url) return self.clients.openWindow(url);
      // No link: bring an open inbox tab forward (a new tab would lack the user's token).
      const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
      const inbox = windows.find((client) => new URL(client.url).pathname === "/inbox");
      return inbox ? inbox.focus() : undefined;
    })(),
  );
});
