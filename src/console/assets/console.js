// Countersign console: live inbox (server-sent events) and countdowns. No framework, no
// inline script (the Content-Security-Policy forbids it), nothing fetched from elsewhere.
"use strict";

function formatLeft(ms) {
  if (ms <= 0) return "expired";
  const s = Math.floor(ms / 1000);
  if (s < 60) return "expires in " + s + " s";
  if (s < 3600) return "expires in " + Math.floor(s / 60) + " min " + (s % 60) + " s";
  return "expires in " + Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
}

function tick() {
  const now = Date.now();
  for (const el of document.querySelectorAll(".countdown[data-expires-ms]")) {
    el.textContent = formatLeft(Number(el.dataset.expiresMs) - now);
  }
}

async function refresh(section, status) {
  const response = await fetch(section.dataset.live, { credentials: "same-origin", redirect: "manual" });
  if (response.type === "opaqueredirect" || response.status === 401) {
    window.location.href = "/console/login";
    return;
  }
  if (!response.ok) {
    status.textContent = "Could not refresh the list (" + response.status + "); retrying.";
    return;
  }
  // Keep open what the person opened.
  const open = [...section.querySelectorAll(".card details[open]")].map((d) => d.closest(".card").dataset.approval);
  section.innerHTML = await response.text();
  for (const id of open) {
    const details = section.querySelector(`.card[data-approval="${CSS.escape(id)}"] details`);
    if (details) details.open = true;
  }
  status.textContent = "Updated " + new Date().toLocaleTimeString();
  section.dataset.updated = String(Date.now());
  tick();
}

function live() {
  const section = document.getElementById("inbox");
  const status = document.getElementById("live");
  if (!section || !section.dataset.live || !window.EventSource) return;
  const events = new EventSource("/console/events");
  events.addEventListener("changed", () => {
    refresh(section, status).catch(() => { status.textContent = "Could not refresh the list; retrying."; });
  });
  events.addEventListener("signed-out", () => {
    events.close();
    window.location.href = "/console/login";
  });
  events.addEventListener("open", () => { section.dataset.live_connected = "yes"; });
}

document.addEventListener("DOMContentLoaded", () => {
  tick();
  setInterval(tick, 1000);
  live();
});
