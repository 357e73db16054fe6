// The studies and patients lists: a search form whose values live in the page's address
// (so that a search can be bookmarked and shared), columns sorted by the server (pypacs'
// QIDO-RS orderby extension), pages of PAGE_SIZE with the total the server counts.
import {
  $,
  button,
  cell,
  count,
  displayDate,
  first,
  getAnswer,
  link,
  personName,
  qidoUrl,
  say,
  text,
  values,
} from "./dicom.js";

export const PAGE_SIZE = 50;

// One list: its QIDO-RS resource, its form's fields, its columns (key to sort by, header
// text, how a cell is shown), and how a row opens.
const LISTS = {
  studies: {
    resource: "/studies",
    noun: ["study", "studies"],
    fields: ["StudyDescription", "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
      "NumberOfStudyRelatedInstances"],
    columns: [
      ["PatientName", "Patient name", (s) => personName(s, "PatientName")],
      ["PatientID", "Patient ID", (s) => text(s, "PatientID")],
      ["StudyDate", "Study date", (s) => displayDate(first(s, "StudyDate"))],
      ["StudyDescription", "Description", (s) => text(s, "StudyDescription")],
      ["ModalitiesInStudy", "Modalities", (s) => values(s, "ModalitiesInStudy").join(" ")],
      ["AccessionNumber", "Accession number", (s) => text(s, "AccessionNumber")],
      ["NumberOfStudyRelatedSeries", "Series", (s) => first(s, "NumberOfStudyRelatedSeries")],
      ["NumberOfStudyRelatedInstances", "Instances",
        (s) => first(s, "NumberOfStudyRelatedInstances")],
    ],
    uid: "StudyInstanceUID",
    open: (s) => link(personName(s, "PatientName") || "(no name)",
      `#/study/${encodeURIComponent(first(s, "StudyInstanceUID"))}`,
      `Open study of ${personName(s, "PatientName") || "unnamed patient"}, ` +
        displayDate(first(s, "StudyDate"))),
  },
  patients: {
    resource: "/patients",
    noun: ["patient", "patients"],
    fields: [],
    columns: [
      ["PatientName", "Patient name", (p) => personName(p, "PatientName")],
      ["PatientID", "Patient ID", (p) => text(p, "PatientID")],
      ["PatientBirthDate", "Birth date", (p) => displayDate(first(p, "PatientBirthDate"))],
      ["PatientSex", "Sex", (p) => text(p, "PatientSex")],
      ["NumberOfPatientRelatedStudies", "Studies",
        (p) => first(p, "NumberOfPatientRelatedStudies")],
    ],
    uid: "PatientID",
    open: (p) => link(personName(p, "PatientName") || "(no name)",
      `#/studies?PatientID=${encodeURIComponent(text(p, "PatientID"))}`,
      `Studies of ${personName(p, "PatientName") || "unnamed patient"}`),
  },
};

// The address's parameters → QIDO-RS matching keys (PS3.18 8.3.4): a name is a prefix
// search unless it has wildcards; a date range is from-to.
function matchingKeys(state) {
  const params = {};
  const name = (state.get("PatientName") || "").trim();
  if (name) params.PatientName = /[*?]/.test(name) ? name : `${name}*`;
  for (const key of ["PatientID", "AccessionNumber", "ModalitiesInStudy"]) {
    const value = (state.get(key) || "").trim();
    if (value) params[key] = key === "ModalitiesInStudy" ? value.toUpperCase() : value;
  }
  const from = (state.get("from") || "").replaceAll("-", "");
  const to = (state.get("to") || "").replaceAll("-", "");
  if (from || to) params.StudyDate = from === to ? from : `${from}-${to}`;
  return params;
}

// The form's values → the address (#/studies?...): empty fields are left out.
function formState(form, list) {
  const state = new URLSearchParams();
  for (const element of form.elements) {
    if (element.name && element.value.trim()) state.set(element.name, element.value.trim());
  }
  const sort = new URLSearchParams(location.hash.split("?")[1] || "").get("sort");
  if (sort && LISTS[list].columns.some(([key]) => sort.replace(/^-/, "") === key)) {
    state.set("sort", sort);
  }
  return state;
}

function fillForm(form, state) {
  for (const element of form.elements) {
    if (element.name) element.value = state.get(element.name) || "";
  }
}

export function go(list, state) {
  const query = state.toString();
  const target = `#/${list}${query ? `?${query}` : ""}`;
  if (location.hash === target) window.dispatchEvent(new HashChangeEvent("hashchange"));
  else location.hash = target;
}

let asked = 0; // the latest search asked for: an older answer arriving late is dropped

// Show one list for the address's state: the form filled from it, the page it names.
export async function showList(list, state) {
  const spec = LISTS[list];
  const form = $(`${list}-form`);
  fillForm(form, state);
  const offset = Math.max(0, Number.parseInt(state.get("offset") || "0", 10) || 0);
  const sort = state.get("sort") || "";
  headers(list, sort);
  const params = { ...(list === "studies" ? matchingKeys(state) : patientKeys(state)) };
  if (sort) params.orderby = sort;
  Object.assign(params, { limit: String(PAGE_SIZE), offset: String(offset), total: "true" });
  const ticket = ++asked;
  const status = $(`${list}-status`);
  say(status, "Searching…");
  try {
    const answer = await getAnswer(qidoUrl(spec.resource, params, spec.fields),
      "application/dicom+json");
    if (ticket !== asked) return;
    const rows = answer.body.map((obj) => row(spec, obj));
    $(`${list}-table`).tBodies[0].replaceChildren(...rows);
    $(`${list}-table`).hidden = rows.length === 0;
    pager(list, state, offset, rows.length, answer.total);
    say(status, describe(spec, offset, rows.length, answer), answer.warnings.length > 0);
    // For bench/page.py and anyone timing the page (User Timing, performance.mark).
    performance.mark(`pypacs-${list}-shown`);
  } catch (error) {
    if (ticket !== asked) return;
    $(`${list}-table`).tBodies[0].replaceChildren();
    $(`${list}-table`).hidden = true;
    $(`${list}-pager`).hidden = true;
    say(status, `Search failed: ${error.message}`, true);
  }
}

function patientKeys(state) {
  const params = {};
  const name = (state.get("PatientName") || "").trim();
  if (name) params.PatientName = /[*?]/.test(name) ? name : `${name}*`;
  const id = (state.get("PatientID") || "").trim();
  if (id) params.PatientID = id;
  return params;
}

function row(spec, obj) {
  const tr = document.createElement("tr");
  tr.dataset.uid = text(obj, spec.uid);
  if (spec === LISTS.studies) tr.dataset.study = tr.dataset.uid;
  spec.columns.forEach(([, , show], i) => cell(tr, i === 0 ? spec.open(obj) : show(obj)));
  return tr;
}

// "Showing 51–100 of 123 studies." The total is the server's count (X-Total-Count); a
// server that does not count leaves "of N" out.
function describe(spec, offset, shown, answer) {
  const [one, many] = spec.noun;
  let sentence;
  if (shown === 0) {
    sentence = offset === 0 ? `No ${one} found.` : `No ${one} past the first ${offset}.`;
  } else if (answer.total !== null && offset === 0 && shown === answer.total) {
    sentence = `${count(shown, one, many)} found.`;
  } else {
    const of = answer.total !== null ? ` of ${count(answer.total, one, many)}` : "";
    sentence = `Showing ${offset + 1}–${offset + shown}${of}.`;
  }
  if (answer.warnings.length) {
    sentence = `${sentence} The server cut the results: ${answer.warnings.join(" ")}`;
  }
  return sentence;
}

function pager(list, state, offset, shown, total) {
  const more = total !== null ? offset + shown < total : shown === PAGE_SIZE;
  $(`${list}-pager`).hidden = offset === 0 && !more;
  $(`${list}-previous`).disabled = offset === 0;
  $(`${list}-next`).disabled = !more;
  $(`${list}-previous`).onclick = () => page(list, state, Math.max(0, offset - PAGE_SIZE));
  $(`${list}-next`).onclick = () => page(list, state, offset + PAGE_SIZE);
}

function page(list, state, offset) {
  const next = new URLSearchParams(state);
  if (offset) next.set("offset", String(offset));
  else next.delete("offset");
  go(list, next);
}

// Column headers are buttons: one press sorts ascending, the next descending (aria-sort
// says which, WAI-ARIA 1.2 "aria-sort").
function headers(list, sort) {
  const spec = LISTS[list];
  const tr = $(`${list}-table`).tHead.rows[0];
  const key = sort.replace(/^-/, "");
  const descending = sort.startsWith("-");
  tr.replaceChildren(
    ...spec.columns.map(([column, label]) => {
      const th = document.createElement("th");
      th.scope = "col";
      const sorted = column === key;
      th.setAttribute("aria-sort", sorted ? (descending ? "descending" : "ascending") : "none");
      const b = document.createElement("button");
      b.type = "button";
      b.className = "sort";
      b.dataset.key = column;
      b.textContent = label;
      const arrow = document.createElement("span");
      arrow.setAttribute("aria-hidden", "true");
      arrow.textContent = sorted ? (descending ? " ▼" : " ▲") : "";
      b.append(arrow);
      b.addEventListener("click", () => {
        const state = new URLSearchParams(location.hash.split("?")[1] || "");
        state.set("sort", sorted && !descending ? `-${column}` : column);
        state.delete("offset");
        go(list, state);
      });
      th.append(b);
      return th;
    }),
  );
}

export function setUpList(list) {
  const form = $(`${list}-form`);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    go(list, formState(form, list));
  });
  form.addEventListener("reset", (event) => {
    event.preventDefault();
    go(list, new URLSearchParams());
  });
}
