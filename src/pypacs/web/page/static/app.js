// The pypacs web page: QIDO-RS searches, series with thumbnails, images rendered by
// WADO-RS, a study as a ZIP, and sending a study to a remote AE through the admin API.
// Every value from the server goes into the page as text (textContent), never as HTML.
"use strict";

const DICOMWEB = "/dicom-web";
const API = "/api";
const JOB_POLL_MS = 300;
const PAGE_SIZE = 50;

// DICOM JSON is keyed by tag (PS3.18 F.2).
const TAG = {
  SOPInstanceUID: "00080018",
  StudyDate: "00080020",
  AccessionNumber: "00080050",
  Modality: "00080060",
  ModalitiesInStudy: "00080061",
  StudyDescription: "00081030",
  SeriesDescription: "0008103E",
  PatientName: "00100010",
  PatientID: "00100020",
  StudyInstanceUID: "0020000D",
  SeriesInstanceUID: "0020000E",
  SeriesNumber: "00200011",
  InstanceNumber: "00200013",
  NumberOfStudyRelatedSeries: "00201206",
  NumberOfStudyRelatedInstances: "00201208",
  NumberOfSeriesRelatedInstances: "00201209",
  Rows: "00280010",
  Columns: "00280011",
};

const STUDY_FIELDS = [
  "StudyDescription",
  "ModalitiesInStudy",
  "NumberOfStudyRelatedSeries",
  "NumberOfStudyRelatedInstances",
];
const SERIES_FIELDS = [
  "Modality",
  "SeriesDescription",
  "SeriesNumber",
  "NumberOfSeriesRelatedInstances",
];
const INSTANCE_FIELDS = ["InstanceNumber", "Rows", "Columns"];

const $ = (id) => document.getElementById(id);

// -- reading DICOM JSON -------------------------------------------------------------------

function values(obj, keyword) {
  const element = obj[TAG[keyword]];
  return element && Array.isArray(element.Value) ? element.Value : [];
}

function first(obj, keyword) {
  const found = values(obj, keyword);
  return found.length ? found[0] : null;
}

// PN: family^given^middle^prefix^suffix (PS3.5 6.2.1), shown as "Family, Given Middle".
function personName(obj, keyword) {
  const value = first(obj, keyword);
  if (value === null) return "";
  const text = typeof value === "string" ? value : value.Alphabetic || value.Ideographic || "";
  const [family = "", given = "", middle = "", prefix = "", suffix = ""] = text.split("^");
  const rest = [prefix, given, middle, suffix].filter(Boolean).join(" ");
  return family && rest ? `${family}, ${rest}` : family || rest;
}

function text(obj, keyword) {
  return values(obj, keyword).map(String).join(", ");
}

function displayDate(da) {
  return /^\d{8}$/.test(da || "") ? `${da.slice(0, 4)}-${da.slice(4, 6)}-${da.slice(6)}` : da || "";
}

// -- talking to the server ----------------------------------------------------------------

async function problemOf(response) {
  // The log-in has expired (or was never made): log in again.
  if (response.status === 401) window.location.assign("/login");
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) return body.error.message;
  } catch (_) {
    // not the JSON error shape: say what the status says
  }
  return `${response.status} ${response.statusText}`;
}

async function getJson(url, accept) {
  return (await getJsonWithWarnings(url, accept)).body;
}

// Warning: 299 <agent> "<text>" (RFC 7234 5.5), as PS3.18 8.3.4 uses it: the texts.
function warningTexts(response) {
  const header = response.headers.get("Warning");
  if (!header) return [];
  return header
    .split(/,(?=\s*\d{3}\s)/)
    .map((item) => item.trim().replace(/^\d{3}\s+\S+\s*:?\s*/, "").replace(/^"|"$/g, ""))
    .filter(Boolean);
}

async function getJsonWithWarnings(url, accept) {
  const response = await fetch(url, { headers: { Accept: accept || "application/json" } });
  if (!response.ok) throw new Error(await problemOf(response));
  const warnings = warningTexts(response);
  if (response.status === 204) return { body: [], warnings };
  return { body: await response.json(), warnings };
}

async function postJson(url, body) {
  const response = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) throw new Error(await problemOf(response));
  return response.json();
}

function qidoUrl(path, params, fields) {
  const query = new URLSearchParams(params);
  for (const field of fields) query.append("includefield", field);
  return `${DICOMWEB}${path}?${query}`;
}

function qido(path, params, fields) {
  return getJson(qidoUrl(path, params, fields), "application/dicom+json");
}

const enc = encodeURIComponent;
const studyPath = (study) => `/studies/${enc(study)}`;
const seriesPath = (study, series) => `${studyPath(study)}/series/${enc(series)}`;

// -- building the page --------------------------------------------------------------------

function cell(row, content) {
  const td = document.createElement("td");
  if (content instanceof Node) td.append(content);
  else td.textContent = content === null || content === undefined ? "" : String(content);
  row.append(td);
  return td;
}

function button(label, onClick, describedBy) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  if (describedBy) b.setAttribute("aria-label", describedBy);
  b.addEventListener("click", onClick);
  return b;
}

// "1 study", "2 studies": counts are printed with the noun that agrees with them.
function count(n, singular, plural) {
  return `${n} ${n === 1 ? singular : plural}`;
}

function say(id, message, isError) {
  const el = $(id);
  el.textContent = message;
  el.classList.toggle("error", Boolean(isError));
}

// -- statistics ---------------------------------------------------------------------------

function size(bytes) {
  const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} bytes` : `${value.toFixed(1)} ${units[unit]}`;
}

async function showStatistics() {
  try {
    const s = await getJson(`${API}/statistics`);
    say(
      "statistics",
      `${count(s.patients, "patient", "patients")}, ${count(s.studies, "study", "studies")}, ` +
        `${count(s.series, "series", "series")}, ${count(s.instances, "instance", "instances")} ` +
        `(${size(s.bytes)})`,
    );
  } catch (error) {
    say("statistics", `Statistics unavailable: ${error.message}`, true);
  }
}

// -- search -------------------------------------------------------------------------------

function compact(dateInput) {
  return dateInput.value ? dateInput.value.replaceAll("-", "") : "";
}

// PS3.18 8.3.4: attribute matching; a name is a prefix search unless it has wildcards.
function searchParams() {
  const params = {};
  const name = $("patient-name").value.trim();
  if (name) params.PatientName = /[*?]/.test(name) ? name : `${name}*`;
  for (const [id, key] of [
    ["patient-id", "PatientID"],
    ["modality", "ModalitiesInStudy"],
    ["accession", "AccessionNumber"],
  ]) {
    const value = $(id).value.trim();
    if (value) params[key] = key === "ModalitiesInStudy" ? value.toUpperCase() : value;
  }
  const from = compact($("date-from"));
  const to = compact($("date-to"));
  if (from || to) params.StudyDate = from === to ? from : `${from}-${to}`;
  return params;
}

// The search shown: its parameters, the offset of its page, the page's studies as the
// server answered them (sorted for display by sortStudies), whether more follow.
const shown = { params: null, offset: 0, studies: [], more: false, warnings: [] };

// PS3.18 8.3.4.4: limit and offset page through the matches. One more than a page is asked
// for, so that the page knows whether another follows; QIDO-RS gives no total, so a total is
// stated only when the last page has been reached.
async function showPage(offset) {
  const body = $("results").tBodies[0];
  say("search-status", "Searching…");
  $("search-button").disabled = true;
  $("previous-page").disabled = true;
  $("next-page").disabled = true;
  try {
    const params = { ...shown.params, limit: String(PAGE_SIZE + 1), offset: String(offset) };
    const answer = await getJsonWithWarnings(
      qidoUrl("/studies", params, STUDY_FIELDS),
      "application/dicom+json",
    );
    shown.offset = offset;
    shown.more = answer.body.length > PAGE_SIZE;
    shown.studies = answer.body.slice(0, PAGE_SIZE);
    shown.warnings = answer.warnings;
    renderResults();
  } catch (error) {
    body.replaceChildren();
    $("results").hidden = true;
    $("pager").hidden = true;
    say("search-status", `Search failed: ${error.message}`, true);
  } finally {
    $("search-button").disabled = false;
  }
}

function describePage() {
  const n = shown.studies.length;
  const first = shown.offset + 1;
  const last = shown.offset + n;
  let text;
  if (n === 0) {
    text = shown.offset === 0 ? "No study found." : `No study found past the first ${shown.offset}.`;
  } else if (shown.more) {
    text = `More than ${last} studies found; showing ${first}–${last}.`;
  } else if (shown.offset === 0) {
    text = `${count(n, "study", "studies")} found.`;
  } else {
    text = `${last} studies found; showing ${first}–${last}.`;
  }
  if (shown.warnings.length) {
    // The server says it left matches out: no count above is then known to be complete.
    text = `${text} The server cut the results: ${shown.warnings.join(" ")}`;
  }
  return text;
}

function renderResults() {
  const body = $("results").tBodies[0];
  const studies = sortStudies(shown.studies, $("sort").value);
  body.replaceChildren(...studies.map(studyRow));
  $("results").hidden = studies.length === 0;
  $("pager").hidden = shown.offset === 0 && !shown.more;
  $("previous-page").disabled = shown.offset === 0;
  $("next-page").disabled = !shown.more;
  say("search-status", describePage(), shown.warnings.length > 0);
}

// QIDO-RS has no sort order (pypacs answers in arrival order): sorting is done here, within
// the page shown, and the page says so.
const SORTS = {
  arrival: null,
  "date-desc": (a, b) => compareText(first(b, "StudyDate"), first(a, "StudyDate")),
  "date-asc": (a, b) => compareText(first(a, "StudyDate"), first(b, "StudyDate")),
  "name-asc": (a, b) => compareText(personName(a, "PatientName"), personName(b, "PatientName")),
  "name-desc": (a, b) => compareText(personName(b, "PatientName"), personName(a, "PatientName")),
};

function compareText(a, b) {
  return String(a ?? "").localeCompare(String(b ?? ""), undefined, { sensitivity: "base" });
}

function sortStudies(studies, order) {
  const compare = SORTS[order];
  return compare ? [...studies].sort(compare) : studies;
}

function search(event) {
  event.preventDefault();
  shown.params = searchParams();
  return showPage(0);
}

function studyRow(study) {
  const row = document.createElement("tr");
  const uid = first(study, "StudyInstanceUID");
  row.dataset.study = uid;
  const name = personName(study, "PatientName");
  cell(row, name);
  cell(row, text(study, "PatientID"));
  cell(row, displayDate(first(study, "StudyDate")));
  cell(row, text(study, "StudyDescription"));
  cell(row, values(study, "ModalitiesInStudy").join(" "));
  cell(row, text(study, "AccessionNumber"));
  cell(row, first(study, "NumberOfStudyRelatedSeries"));
  cell(row, first(study, "NumberOfStudyRelatedInstances"));
  const label = `Open study of ${name || "unnamed patient"}, ${displayDate(first(study, "StudyDate"))}`;
  cell(row, button("Open", () => openStudy(study), label));
  return row;
}

function clearSearch() {
  $("results").tBodies[0].replaceChildren();
  $("results").hidden = true;
  $("pager").hidden = true;
  shown.params = null;
  shown.studies = [];
  say("search-status", "");
}

// -- one study ----------------------------------------------------------------------------

let current = null; // the open study's UID

async function openStudy(study) {
  const uid = first(study, "StudyInstanceUID");
  current = uid;
  $("study").hidden = false;
  $("instances-box").hidden = true;
  closeViewer();
  $("study-heading").textContent = `Study of ${personName(study, "PatientName") || "unnamed patient"}`;
  $("study-summary").textContent = [
    displayDate(first(study, "StudyDate")),
    text(study, "StudyDescription"),
    text(study, "AccessionNumber") && `accession ${text(study, "AccessionNumber")}`,
    `Study Instance UID ${uid}`,
  ]
    .filter(Boolean)
    .join(" · ");
  $("download-zip").href = `${API}${studyPath(uid)}/archive.zip`;
  $("send-progress-box").hidden = true;
  say("send-status", "");
  const body = $("series").tBodies[0];
  body.replaceChildren();
  try {
    const series = await qido(`${studyPath(uid)}/series`, {}, SERIES_FIELDS);
    if (current !== uid) return;
    series.sort((a, b) => (first(a, "SeriesNumber") ?? 0) - (first(b, "SeriesNumber") ?? 0));
    body.replaceChildren(...series.map((s) => seriesRow(uid, s)));
  } catch (error) {
    say("send-status", `Series unavailable: ${error.message}`, true);
  }
  $("study").scrollIntoView({ block: "start" });
}

function thumbnail(study, seriesUid, description) {
  const img = document.createElement("img");
  img.className = "thumbnail";
  img.alt = `Preview of series ${description}`;
  img.loading = "eager";
  img.addEventListener("error", () => {
    const none = document.createElement("span");
    none.className = "no-preview";
    none.textContent = "no preview";
    img.replaceWith(none);
  });
  img.src = `${DICOMWEB}${seriesPath(study, seriesUid)}/thumbnail`;
  return img;
}

function seriesRow(study, series) {
  const row = document.createElement("tr");
  const uid = first(series, "SeriesInstanceUID");
  row.dataset.series = uid;
  const description = text(series, "SeriesDescription");
  cell(row, thumbnail(study, uid, description || uid));
  cell(row, first(series, "SeriesNumber"));
  cell(row, text(series, "Modality"));
  cell(row, description);
  cell(row, first(series, "NumberOfSeriesRelatedInstances"));
  cell(row, button("Images", () => showInstances(study, uid, description), `Images of series ${description}`));
  return row;
}

async function showInstances(study, series, description) {
  const body = $("instances").tBodies[0];
  body.replaceChildren();
  $("instances-box").hidden = false;
  $("instances-heading").textContent = `Images of series ${description}`;
  try {
    const found = await qido(`${seriesPath(study, series)}/instances`, {}, INSTANCE_FIELDS);
    found.sort((a, b) => (first(a, "InstanceNumber") ?? 0) - (first(b, "InstanceNumber") ?? 0));
    body.replaceChildren(...found.map((i) => instanceRow(study, series, i)));
  } catch (error) {
    $("instances-heading").textContent = `Images unavailable: ${error.message}`;
  }
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
  cell(row, button("View", () => openViewer(url, `Image ${number ?? ""} (${uid})`), `View image ${number ?? uid}`));
  return row;
}

function openViewer(url, caption) {
  $("viewer").hidden = false;
  $("viewer-image").alt = caption;
  $("viewer-caption").textContent = caption;
  $("viewer-image").src = url;
  $("viewer").scrollIntoView({ block: "start" });
}

function closeViewer() {
  $("viewer").hidden = true;
  $("viewer-image").removeAttribute("src");
}

// -- remotes ------------------------------------------------------------------------------

async function loadRemotes() {
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
  } catch (error) {
    say("send-status", `Remotes unavailable: ${error.message}`, true);
  }
}

async function echoRemote() {
  const name = $("remote").value;
  say("send-status", `Testing ${name}…`);
  try {
    const result = await postJson(`${API}/remotes/${enc(name)}/echo`);
    if (result.ok) say("send-status", `${name} answered the C-ECHO in ${result.milliseconds} ms.`);
    else say("send-status", `${name} did not answer: ${result.error}`, true);
  } catch (error) {
    say("send-status", `Test failed: ${error.message}`, true);
  }
}

function describeJob(job) {
  const counts = `${job.completed} sent, ${job.failed} failed, ${job.warning} with warnings`;
  if (job.state === "running") {
    const left = job.remaining === null ? "" : `, ${job.remaining} to go`;
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
    let job = await postJson(`${API}/remotes/${enc(name)}/move`, { StudyInstanceUID: study });
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

// -- the log-in ---------------------------------------------------------------------------

async function showAccount() {
  try {
    const who = await getJson(`${API}/session`);
    if (who.method !== "session") return; // no log-in ([auth] mode none, or a token)
    $("account-name").textContent = `${who.name} (${who.role})`;
    $("account").hidden = false;
  } catch (_) {
    // no account to show
  }
}

async function logOut() {
  await fetch(`${API}/session`, { method: "DELETE" });
  window.location.assign("/login");
}

// -- start --------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("search-form").addEventListener("submit", search);
  $("search-form").addEventListener("reset", clearSearch);
  $("previous-page").addEventListener("click", () =>
    showPage(Math.max(0, shown.offset - PAGE_SIZE)),
  );
  $("next-page").addEventListener("click", () => showPage(shown.offset + PAGE_SIZE));
  $("sort").addEventListener("change", () => {
    if (shown.params) renderResults();
  });
  $("send-form").addEventListener("submit", send);
  $("echo-button").addEventListener("click", echoRemote);
  $("viewer-close").addEventListener("click", closeViewer);
  $("log-out").addEventListener("click", logOut);
  showAccount();
  showStatistics();
  loadRemotes();
});
