// One study: its series with thumbnails, a place per series where the image viewer mounts
// (viewer.js when it is there, else a list of images each shown rendered), the tags of any
// instance, the study as a ZIP, sending it to a remote, deleting it or a series (admins).
import {
  $,
  API,
  DICOMWEB,
  button,
  cell,
  displayDate,
  enc,
  first,
  getJson,
  isAdmin,
  link,
  personName,
  qido,
  say,
  sendJson,
  seriesPath,
  studyPath,
  text,
} from "./dicom.js";
import { confirmDelete } from "./confirm.js";

const JOB_POLL_MS = 300;
const STUDY_FIELDS = ["StudyDescription", "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
  "NumberOfStudyRelatedInstances"];
const SERIES_FIELDS = ["Modality", "SeriesDescription", "SeriesNumber",
  "NumberOfSeriesRelatedInstances"];
// What the viewer needs of each instance: its frames, and whether it is a PDF.
const INSTANCE_FIELDS = ["InstanceNumber", "Rows", "Columns", "SOPClassUID", "NumberOfFrames",
  "MIMETypeOfEncapsulatedDocument"];

let current = null; // the open study's UID
let viewerLinks = null; // GET /api/viewer once: { installed, study_url } or null

// The OHIF viewer's address for a study (and a series), when one is installed.
async function viewerLink() {
  if (viewerLinks === null) {
    try {
      viewerLinks = await getJson(`${API}/viewer`);
    } catch (_) {
      viewerLinks = { installed: false };
    }
  }
  return viewerLinks.installed ? viewerLinks.study_url : null;
}

export async function showStudy(uid) {
  current = uid;
  $("study-heading").textContent = "Study";
  $("study-summary").textContent = "";
  $("download-zip").href = `${API}${studyPath(uid)}/archive.zip`;
  $("send-progress-box").hidden = true;
  $("delete-study").hidden = !isAdmin();
  // Sending to a remote and testing it are an administrator's (web/roles.py).
  $("send-form").hidden = !isAdmin();
  $("study-viewer-link").hidden = true;
  say("send-status", "");
  say("study-status", "");
  closeImage();
  const body = $("series").tBodies[0];
  body.replaceChildren();
  $("series-views").replaceChildren();
  try {
    const [found] = await qido("/studies", { StudyInstanceUID: uid }, STUDY_FIELDS);
    if (current !== uid) return;
    if (!found) {
      say("study-status", `No study ${uid} in the archive.`, true);
      return;
    }
    const name = personName(found, "PatientName") || "unnamed patient";
    $("study-heading").textContent = `Study of ${name}`;
    $("study-summary").textContent = [
      displayDate(first(found, "StudyDate")),
      text(found, "StudyDescription"),
      text(found, "AccessionNumber") && `accession ${text(found, "AccessionNumber")}`,
      `Patient ID ${text(found, "PatientID")}`,
      `Study Instance UID ${uid}`,
    ].filter(Boolean).join(" · ");
    const series = await qido(`${studyPath(uid)}/series`, {}, SERIES_FIELDS);
    if (current !== uid) return;
    series.sort((a, b) => (first(a, "SeriesNumber") ?? 0) - (first(b, "SeriesNumber") ?? 0));
    const template = await viewerLink();
    if (template) {
      $("study-viewer-link").href = template.replace("{study}", enc(uid));
      $("study-viewer-link").hidden = false;
    }
    body.replaceChildren(...series.map((s) => seriesRow(uid, s, template)));
    $("series-views").replaceChildren(...series.map((s) => seriesView(s)));
  } catch (error) {
    say("study-status", `Study unavailable: ${error.message}`, true);
  }
}

function thumbnail(study, seriesUid, description) {
  const img = document.createElement("img");
  img.className = "thumbnail";
  img.alt = `Preview of series ${description}`;
  img.width = 96;
  img.height = 96;
  img.addEventListener("error", () => {
    const none = document.createElement("span");
    none.className = "no-preview";
    none.textContent = "no preview";
    img.replaceWith(none);
  });
  // PS3.18 8.3.5.1.3: the viewport is the size of the image answered.
  img.src = `${DICOMWEB}${seriesPath(study, seriesUid)}/thumbnail?viewport=96,96`;
  return img;
}

function seriesRow(study, series, template) {
  const row = document.createElement("tr");
  const uid = first(series, "SeriesInstanceUID");
  row.dataset.series = uid;
  const description = text(series, "SeriesDescription") || `series ${first(series, "SeriesNumber") ?? ""}`;
  cell(row, thumbnail(study, uid, description));
  cell(row, first(series, "SeriesNumber"));
  cell(row, text(series, "Modality"));
  cell(row, text(series, "SeriesDescription"));
  cell(row, first(series, "NumberOfSeriesRelatedInstances"));
  const actions = document.createElement("div");
  actions.className = "row-actions";
  actions.append(button("Images", () => showImages(study, uid, description),
    `Images of ${description}`));
  if (template) {
    // OHIF takes the series to show as SeriesInstanceUIDs.
    const href = `${template.replace("{study}", enc(study))}&SeriesInstanceUIDs=${enc(uid)}`;
    actions.append(link("Open in viewer", href, `Open ${description} in the viewer`));
  }
  if (isAdmin()) {
    const del = button("Delete", () => deleteSeries(study, uid, description),
      `Delete ${description}`);
    del.className = "danger";
    actions.append(del);
  }
  cell(row, actions);
  return row;
}

// Where the viewer of one series mounts: hidden until its images are asked for.
function seriesView(series) {
  const section = document.createElement("section");
  const uid = first(series, "SeriesInstanceUID");
  section.className = "series-view";
  section.dataset.series = uid;
  section.hidden = true;
  section.setAttribute("aria-label", `Images of series ${text(series, "SeriesDescription") || uid}`);
  return section;
}

async function showImages(study, series, description) {
  const view = document.querySelector(`.series-view[data-series="${CSS.escape(series)}"]`);
  if (!view) return;
  view.hidden = false;
  const heading = document.createElement("h3");
  heading.textContent = `Images of ${description}`;
  heading.tabIndex = -1;
  const mount = document.createElement("div");
  mount.className = "viewer-mount";
  view.replaceChildren(heading, mount);
  heading.focus();
  let instances;
  try {
    instances = await qido(`${seriesPath(study, series)}/instances`, {}, INSTANCE_FIELDS);
    instances.sort((a, b) => (first(a, "InstanceNumber") ?? 0) - (first(b, "InstanceNumber") ?? 0));
  } catch (error) {
    heading.textContent = `Images unavailable: ${error.message}`;
    return;
  }
  let viewer = null;
  try {
    viewer = await import("./viewer.js");
  } catch (_) {
    viewer = null; // no viewer module: the list of images below
  }
  if (viewer && typeof viewer.mountSeriesViewer === "function") {
    if (instances.length) view.append(tagsOfShown(study, series, instances, mount));
    await viewer.mountSeriesViewer(mount, { study, series, instances, description });
  } else {
    mount.append(instanceTable(study, series, instances));
  }
}

// A link to the tags of the image the viewer shows, following it as it scrolls.
function tagsOfShown(study, series, instances, mount) {
  const uids = [];
  for (const instance of instances) {
    // The viewer's items: one per frame of an image (viewer.js itemsOf, same order).
    const frames = Math.max(1, Number(first(instance, "NumberOfFrames")) || 1);
    for (let i = 0; i < frames; i += 1) uids.push(first(instance, "SOPInstanceUID"));
  }
  const tags = link("Tags of the image shown", "#", "Tags of the image shown in the viewer");
  const point = (uid) => {
    tags.href = `#/tags/${enc(study)}/${enc(series)}/${enc(uid)}`;
  };
  point(uids[0]);
  mount.addEventListener("pypacs-viewer-shown", (event) => {
    const uid = uids[event.detail.index];
    if (uid) point(uid);
  });
  const p = document.createElement("p");
  p.className = "tags-link";
  p.append(tags);
  return p;
}

function instanceTable(study, series, instances) {
  const table = document.createElement("table");
  table.className = "data instances";
  const caption = document.createElement("caption");
  caption.textContent = "Instances of the series";
  const head = document.createElement("thead");
  const tr = document.createElement("tr");
  for (const label of ["Number", "Size", "SOP Instance UID", "Actions"]) {
    const th = document.createElement("th");
    th.scope = "col";
    th.textContent = label;
    tr.append(th);
  }
  head.append(tr);
  const body = document.createElement("tbody");
  body.append(...instances.map((i) => instanceRow(study, series, i)));
  table.append(caption, head, body);
  return table;
}

function instanceRow(study, series, instance) {
  const row = document.createElement("tr");
  const uid = first(instance, "SOPInstanceUID");
  row.dataset.instance = uid;
  const number = first(instance, "InstanceNumber");
  const rows = first(instance, "Rows");
  const columns = first(instance, "Columns");
  cell(row, number);
  cell(row, rows && columns ? `${columns} × ${rows}` : "");
  cell(row, uid);
  const url = `${DICOMWEB}${seriesPath(study, series)}/instances/${enc(uid)}/rendered`;
  const actions = document.createElement("div");
  actions.className = "row-actions";
  actions.append(
    button("View", () => openImage(url, `Image ${number ?? ""} (${uid})`),
      `View image ${number ?? uid}`),
    link("Tags", `#/tags/${enc(study)}/${enc(series)}/${enc(uid)}`,
      `Tags of image ${number ?? uid}`),
  );
  cell(row, actions);
  return row;
}

function openImage(url, caption) {
  $("image").hidden = false;
  $("image-picture").alt = caption;
  $("image-caption").textContent = caption;
  $("image-picture").src = url;
  $("image-close").focus();
}

export function closeImage() {
  $("image").hidden = true;
  $("image-picture").removeAttribute("src");
}

// -- delete -------------------------------------------------------------------------------

async function deleteStudy() {
  const study = current;
  const ok = await confirmDelete(`Delete the study ${$("study-summary").textContent}? ` +
    "Its images are removed from the archive for good.");
  if (!ok) return;
  try {
    await sendJson("DELETE", `${DICOMWEB}${studyPath(study)}`);
    say("study-status", "The study was deleted.");
    location.hash = "#/studies";
  } catch (error) {
    say("study-status", `Delete failed: ${error.message}`, true);
  }
}

async function deleteSeries(study, series, description) {
  const ok = await confirmDelete(`Delete ${description}? Its images are removed from the ` +
    "archive for good.");
  if (!ok) return;
  try {
    await sendJson("DELETE", `${DICOMWEB}${seriesPath(study, series)}`);
    await showStudy(study);
    say("study-status", `${description} was deleted.`);
  } catch (error) {
    say("study-status", `Delete failed: ${error.message}`, true);
  }
}

// -- remotes ------------------------------------------------------------------------------

export async function loadRemotes() {
  const select = $("remote");
  try {
    const remotes = await getJson(`${API}/remotes`);
    select.replaceChildren(
      ...remotes.map((r) => {
        const option = document.createElement("option");
        option.value = r.name;
        option.textContent = `${r.name} (${r.ae_title} at ${r.host}:${r.port})`;
        return option;
      }),
    );
    const none = remotes.length === 0;
    $("send-button").disabled = none;
    $("echo-button").disabled = none;
    if (none) say("send-status", "No remote AE is configured.");
    return remotes;
  } catch (error) {
    say("send-status", `Remotes unavailable: ${error.message}`, true);
    return [];
  }
}

export async function echo(name, statusId) {
  say(statusId, `Testing ${name}…`);
  try {
    const result = await sendJson("POST", `${API}/remotes/${enc(name)}/echo`);
    if (result.ok) say(statusId, `${name} answered the C-ECHO in ${result.milliseconds} ms.`);
    else say(statusId, `${name} did not answer: ${result.error}`, true);
  } catch (error) {
    say(statusId, `Test failed: ${error.message}`, true);
  }
}

export function describeJob(job) {
  const counts = `${job.completed} sent, ${job.failed} failed, ${job.warning} with warnings`;
  if (job.state === "running" || job.state === "queued") {
    const left = job.remaining === null || job.remaining === undefined ? "" : `, ${job.remaining} to go`;
    return `Sending to ${job.remote}: ${counts}${left}.`;
  }
  if (job.state === "done") return `Done: ${counts}.`;
  return `Failed: ${job.error || "unknown error"} (${counts}).`;
}

function showJob(job) {
  const finished = job.completed + job.failed + job.warning;
  const total = job.state === "running" ? finished + (job.remaining ?? 0) : finished;
  const progress = $("send-progress");
  progress.max = Math.max(total, 1);
  progress.value = job.state === "running" ? finished : progress.max;
  progress.dataset.state = job.state;
  say("send-status", describeJob(job), job.state === "failed");
}

// Jobs started from this page, for the archive page's list (no endpoint lists every job).
export const startedJobs = [];

async function send(event) {
  event.preventDefault();
  const name = $("remote").value;
  const study = current;
  if (!name || !study) return;
  $("send-button").disabled = true;
  $("send-progress-box").hidden = false;
  $("send-progress").value = 0;
  say("send-status", `Starting to send to ${name}…`);
  try {
    let job = await sendJson("POST", `${API}/remotes/${enc(name)}/move`, { StudyInstanceUID: study });
    startedJobs.push({ id: job.job, study, summary: $("study-heading").textContent });
    showJob(job);
    while (job.state === "queued" || job.state === "running") {
      await new Promise((resolve) => setTimeout(resolve, JOB_POLL_MS));
      job = await getJson(`${API}/jobs/${enc(job.job)}`);
      showJob(job);
    }
  } catch (error) {
    say("send-status", `Sending failed: ${error.message}`, true);
  } finally {
    $("send-button").disabled = false;
  }
}

export function setUpStudy() {
  $("send-form").addEventListener("submit", send);
  $("echo-button").addEventListener("click", () => echo($("remote").value, "send-status"));
  $("image-close").addEventListener("click", closeImage);
  $("delete-study").addEventListener("click", deleteStudy);
}


