// The log-in page: POST /api/session sets the session cookie, then on to the page.
"use strict";

async function logIn(event) {
  event.preventDefault();
  const status = document.getElementById("login-status");
  const body = {
    name: document.getElementById("login-name").value,
    password: document.getElementById("login-password").value,
  };
  status.textContent = "Logging in…";
  status.classList.remove("error");
  try {
    const response = await fetch("/api/session", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(body),
    });
    if (response.ok) {
      window.location.assign("/");
      return;
    }
    let message = `${response.status} ${response.statusText}`;
    try {
      message = (await response.json()).error.message || message;
    } catch (_) {
      // not the JSON error shape
    }
    status.textContent = message;
  } catch (error) {
    status.textContent = `Log-in failed: ${error.message}`;
  }
  status.classList.add("error");
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("login-form").addEventListener("submit", logIn);
});
