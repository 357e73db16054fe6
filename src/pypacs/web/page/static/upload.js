// Upload of files or a whole folder from the browser by STOW-RS (PS3.18 10.5): one request
// per file, so that each file gets its own result (stored, already stored, or failed with
// the reason the Store Instances Response gives).
import { $, DICOMWEB, count, problemOf, say } from "./dicom.js";

const PARALLEL = 3;
// Store Instances Response Module (PS3.18 I.1 Table I.1-1) and its reasons (Table I.2-2).
const FAILED_SOP_SEQUENCE = "00081198";
const REFERENCED_SOP_SEQUENCE = "00081199";
const FAILURE_REASON = "00081197";
const WARNING_REASON = "00081196";
const REASONS = {
  0x0110: "processing failure",
  0x0122: "SOP class not supported",
  0x0124: "not authorized",
  0xa700: "out of resources",
  0xa770: "out of resources: not enough room",
  0xa900: "data set does not match its SOP class",
  0xb000: "stored with coercion of data elements",
  0xb007: "data set does not match its SOP class (stored)",
  0xc000: "cannot understand: not a DICOM file, or a broken one",
  0xc122: "referenced transfer syntax not supported",
  0xa7ff: "already stored",
  0xb0ff: "already stored",
};

function reasonText(code) {
  const known = REASONS[code];
  const hex = `0x${code.toString(16).toUpperCase().padStart(4, "0")}`;
  return known ? `${known} (${hex})` : `status ${hex}`;
}

// One file as multipart/related; type="application/dicom" (PS3.18 8.6.1.2).
function multipart(file) {
  const boundary = `pypacs-${crypto.randomUUID()}`;
  const head = `--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`;
  const tail = `\r\n--${boundary}--\r\n`;
  return {
    body: new Blob([head, file, tail]),
    type: `multipart/related; type="application/dicom"; boundary=${boundary}`,
  };
}

function firstValue(obj, tag) {
  const element = obj && obj[tag];
  return element && Array.isArray(element.Value) ? element.Value[0] : undefined;
}

async function store(file) {
  const { body, type } = multipart(file);
  const response = await fetch(`${DICOMWEB}/studies`, {
    method: "POST",
    headers: { "Content-Type": type, Accept: "application/dicom+json" },
    body,
  });
  let answer = null;
  try {
    answer = await response.clone().json();
  } catch (_) {
    answer = null;
  }
  const failed = firstValue(answer, FAILED_SOP_SEQUENCE);
  if (failed) return { ok: false, text: `failed: ${reasonText(firstValue(failed, FAILURE_REASON))}` };
  const stored = firstValue(answer, REFERENCED_SOP_SEQUENCE);
  if (response.ok && stored) {
    const warning = firstValue(stored, WARNING_REASON);
    return { ok: true, text: warning === undefined ? "stored" : `stored: ${reasonText(warning)}` };
  }
  return { ok: false, text: `failed: ${await problemOf(response)}` };
}

function resultRow(file) {
  const tr = document.createElement("tr");
  const name = document.createElement("td");
  name.textContent = file.webkitRelativePath || file.name;
  const result = document.createElement("td");
  result.textContent = "waiting";
  tr.append(name, result);
  return [tr, result];
}

export async function upload(files) {
  const list = [...files];
  if (list.length === 0) return;
  const body = $("upload-results").tBodies[0];
  const rows = list.map(resultRow);
  body.replaceChildren(...rows.map(([tr]) => tr));
  $("upload-results").hidden = false;
  $("upload-progress").max = list.length;
  $("upload-progress").value = 0;
  $("upload-progress-box").hidden = false;
  let done = 0;
  let stored = 0;
  let next = 0;
  say("upload-status", `Uploading ${count(list.length, "file", "files")}…`);
  const worker = async () => {
    while (next < list.length) {
      const i = next++;
      const [tr, cellOf] = rows[i];
      cellOf.textContent = "uploading";
      let outcome;
      try {
        outcome = await store(list[i]);
      } catch (error) {
        outcome = { ok: false, text: `failed: ${error.message}` };
      }
      cellOf.textContent = outcome.text;
      tr.className = outcome.ok ? "ok" : "error";
      done += 1;
      if (outcome.ok) stored += 1;
      $("upload-progress").value = done;
    }
  };
  await Promise.all(Array.from({ length: Math.min(PARALLEL, list.length) }, worker));
  const failed = list.length - stored;
  say("upload-status",
    `${count(stored, "file", "files")} stored, ${count(failed, "file", "files")} failed.`,
    failed > 0);
}

export function setUpUpload() {
  for (const id of ["upload-files", "upload-folder"]) {
    $(id).addEventListener("change", (event) => {
      upload(event.target.files);
      event.target.value = "";
    });
  }
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", async (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    upload(await droppedFiles(event.dataTransfer));
  });
}

// Dropped files, and the files inside dropped folders (File and Directory Entries API).
async function droppedFiles(transfer) {
  const entries = [...transfer.items].map((i) => i.webkitGetAsEntry && i.webkitGetAsEntry())
    .filter(Boolean);
  if (entries.length === 0) return [...transfer.files];
  const files = [];
  const walk = async (entry) => {
    if (entry.isFile) {
      files.push(await new Promise((resolve, reject) => entry.file(resolve, reject)));
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
        if (batch.length === 0) break;
        for (const child of batch) await walk(child);
      }
    }
  };
  for (const entry of entries) await walk(entry);
  return files;
}
