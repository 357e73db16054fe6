// The pypacs web page: a router over the address's hash (#/studies?…, #/patients?…,
// #/study/UID, #/tags/STUDY/SERIES/INSTANCE, #/upload, #/archive), so that every view can
// be bookmarked, shared and reached with Back; the views live in their own modules.
import { showArchive, setUpArchive } from "./archive.js";
import { $, API, getJson, session } from "./dicom.js";
import { setUpList, showList } from "./lists.js";
import { loadRemotes, setUpStudy, showStudy } from "./study.js";
import { setUpTags, showTags } from "./tags.js";
import { setUpUpload } from "./upload.js";

const VIEWS = ["studies", "patients", "study", "tags", "upload", "archive"];
const TITLES = { studies: "Studies", patients: "Patients", study: "Study", tags: "Tags",
  upload: "Upload", archive: "Archive" };

function show(view) {
  for (const name of VIEWS) $(`view-${name}`).hidden = name !== view;
  for (const a of document.querySelectorAll("#site-nav a")) {
    if (a.dataset.view === view) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  document.title = `pypacs: ${TITLES[view]}`;
}

let lastView = null;

async function route() {
  const hash = location.hash || "#/studies";
  const [path, query = ""] = hash.slice(1).split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const state = new URLSearchParams(query);
  const view = VIEWS.includes(parts[0]) ? parts[0] : "studies";
  show(view);
  // A new view moves the focus to its heading, so that a screen reader says where one is.
  if (view !== lastView && lastView !== null) $(`${view}-title`).focus();
  lastView = view;
  if (view === "studies" || view === "patients") await showList(view, state);
  else if (view === "study") await showStudy(parts[1] || "");
  else if (view === "tags") await showTags(parts[1] || "", parts[2] || "", parts[3] || "");
  else if (view === "archive") await showArchive();
}

async function showAccount() {
  try {
    const who = await getJson(`${API}/session`);
    Object.assign(session, who);
    document.body.dataset.role = who.role;
    if (who.method !== "session") return; // no log-in ([auth] mode none, or a token)
    $("account-name").textContent = `${who.name} (${who.role})`;
    $("account").hidden = false;
  } catch (_) {
    // no account to show: a reader's page
  }
}

async function logOut() {
  await fetch(`${API}/session`, { method: "DELETE" });
  window.location.assign("/login");
}

async function start() {
  setUpList("studies");
  setUpList("patients");
  setUpStudy();
  setUpTags();
  setUpUpload();
  setUpArchive();
  $("log-out").addEventListener("click", logOut);
  await showAccount();
  $("upload-link").hidden = !(session.role === "admin" || session.role === "writer");
  loadRemotes();
  window.addEventListener("hashchange", route);
  await route();
  document.body.dataset.ready = "true";
}

start();
