// Shared by the page's modules: reading DICOM JSON, talking to the server, building rows.
// Every value from the server goes into the page as text (textContent), never as HTML.

export const DICOMWEB = "/dicom-web";
export const API = "/api";

// DICOM JSON is keyed by tag (PS3.18 F.2).
export const TAG = {
  SOPInstanceUID: "00080018",
  StudyDate: "00080020",
  AccessionNumber: "00080050",
  Modality: "00080060",
  ModalitiesInStudy: "00080061",
  StudyDescription: "00081030",
  SeriesDescription: "0008103E",
  PatientName: "00100010",
  PatientID: "00100020",
  PatientBirthDate: "00100030",
  PatientSex: "00100040",
  StudyInstanceUID: "0020000D",
  SeriesInstanceUID: "0020000E",
  SeriesNumber: "00200011",
  InstanceNumber: "00200013",
  NumberOfPatientRelatedStudies: "00201200",
  NumberOfStudyRelatedSeries: "00201206",
  NumberOfStudyRelatedInstances: "00201208",
  NumberOfSeriesRelatedInstances: "00201209",
  Rows: "00280010",
  Columns: "00280011",
};

export const $ = (id) => document.getElementById(id);
export const enc = encodeURIComponent;
export const studyPath = (study) => `/studies/${enc(study)}`;
export const seriesPath = (study, series) => `${studyPath(study)}/series/${enc(series)}`;

export function values(obj, keyword) {
  const element = obj[TAG[keyword] || keyword];
  return element && Array.isArray(element.Value) ? element.Value : [];
}

export function first(obj, keyword) {
  const found = values(obj, keyword);
  return found.length ? found[0] : null;
}

// PN: family^given^middle^prefix^suffix (PS3.5 6.2.1), shown as "Family, Given Middle".
export function nameText(value) {
  if (value === null || value === undefined) return "";
  const text = typeof value === "string" ? value : value.Alphabetic || value.Ideographic || "";
  const [family = "", given = "", middle = "", prefix = "", suffix = ""] = text.split("^");
  const rest = [prefix, given, middle, suffix].filter(Boolean).join(" ");
  return family && rest ? `${family}, ${rest}` : family || rest;
}

export function personName(obj, keyword) {
  return nameText(first(obj, keyword));
}

export function text(obj, keyword) {
  return values(obj, keyword).map(String).join(", ");
}

export function displayDate(da) {
  return /^\d{8}$/.test(da || "") ? `${da.slice(0, 4)}-${da.slice(4, 6)}-${da.slice(6)}` : da || "";
}

// "1 study", "2 studies": counts are printed with the noun that agrees with them.
export function count(n, singular, plural) {
  return `${n} ${n === 1 ? singular : plural}`;
}

export function size(bytes) {
  const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} bytes` : `${value.toFixed(1)} ${units[unit]}`;
}

// -- talking to the server ----------------------------------------------------------------

export async function problemOf(response) {
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

// Warning: 299 <agent> "<text>" (RFC 7234 5.5), as PS3.18 8.3.4 uses it: the texts.
export function warningTexts(response) {
  const header = response.headers.get("Warning");
  if (!header) return [];
  return header
    .split(/,(?=\s*\d{3}\s)/)
    .map((item) => item.trim().replace(/^\d{3}\s+\S+\s*:?\s*/, "").replace(/^"|"$/g, ""))
    .filter(Boolean);
}

// The body, the Warning texts and pypacs' X-Total-Count (null when not sent).
export async function getAnswer(url, accept) {
  const response = await fetch(url, { headers: { Accept: accept || "application/json" } });
  if (!response.ok) throw new Error(await problemOf(response));
  const warnings = warningTexts(response);
  const header = response.headers.get("X-Total-Count");
  const total = header === null ? null : Number(header);
  if (response.status === 204) return { body: [], warnings, total };
  return { body: await response.json(), warnings, total };
}

export async function getJson(url, accept) {
  return (await getAnswer(url, accept)).body;
}

export async function sendJson(method, url, body) {
  const response = await fetch(url, {
    method,
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) throw new Error(await problemOf(response));
  return response.status === 204 ? null : response.json();
}

export function qidoUrl(path, params, fields) {
  const query = new URLSearchParams(params);
  for (const field of fields || []) query.append("includefield", field);
  return `${DICOMWEB}${path}?${query}`;
}

export function qido(path, params, fields) {
  return getJson(qidoUrl(path, params, fields), "application/dicom+json");
}

// -- building the page --------------------------------------------------------------------

export function cell(row, content) {
  const td = document.createElement("td");
  if (content instanceof Node) td.append(content);
  else td.textContent = content === null || content === undefined ? "" : String(content);
  row.append(td);
  return td;
}

export function button(label, onClick, ariaLabel) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  if (ariaLabel) b.setAttribute("aria-label", ariaLabel);
  b.addEventListener("click", onClick);
  return b;
}

export function link(label, href, ariaLabel) {
  const a = document.createElement("a");
  a.href = href;
  a.textContent = label;
  if (ariaLabel) a.setAttribute("aria-label", ariaLabel);
  return a;
}

export function say(id, message, isError) {
  const el = typeof id === "string" ? $(id) : id;
  el.textContent = message;
  el.classList.toggle("error", Boolean(isError));
}

// The signed-in user (GET /api/session), shared by the modules: { name, role, method }.
export const session = { name: "", role: "reader", method: "" };
export const isAdmin = () => session.role === "admin";
export const canWrite = () => session.role === "admin" || session.role === "writer";
