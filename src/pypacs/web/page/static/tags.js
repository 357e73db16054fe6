// The tags of one instance: its DICOM JSON metadata (WADO-RS, PS3.18 10.4) as a table of
// tag, keyword, VR and value, sequences expandable, searchable by any of them.
import { $, DICOMWEB, enc, getJson, nameText, say } from "./dicom.js";

let dictionary = null; // "GGGGEEEE" → [keyword, name], from the page's dictionary.json

async function keywords() {
  if (dictionary === null) {
    try {
      dictionary = await getJson("dictionary.json");
    } catch (_) {
      dictionary = {};
    }
  }
  return dictionary;
}

// A repeating group's tag (50xx, 60xx) is listed in the dictionary with its "xx".
function entryOf(tag) {
  return dictionary[tag] || dictionary[`${tag.slice(0, 2)}xx${tag.slice(4)}`] ||
    dictionary[`${tag.slice(0, 4)}xx${tag.slice(6)}`] || null;
}

function valueText(element) {
  if (element.InlineBinary !== undefined) {
    return `(binary data, ${Math.floor((element.InlineBinary.length * 3) / 4)} bytes)`;
  }
  if (element.BulkDataURI !== undefined) return "(bulk data)";
  if (!Array.isArray(element.Value)) return "";
  if (element.vr === "PN") return element.Value.map(nameText).join(" \\ ");
  return element.Value.map((v) => (v === null ? "" : String(v))).join(" \\ ");
}

let rowCount = 0;

// The rows of one data set, a sequence's items after it (hidden until it is expanded).
function rowsOf(dataset, depth, parentId) {
  const rows = [];
  for (const tag of Object.keys(dataset).sort()) {
    const element = dataset[tag];
    const [keyword, name] = entryOf(tag) || ["", "Private or unknown"];
    const tr = document.createElement("tr");
    const id = `tag-row-${++rowCount}`;
    tr.id = id;
    tr.dataset.depth = String(depth);
    if (parentId) tr.dataset.parent = parentId;
    tr.hidden = depth > 0;
    const tagCell = document.createElement("td");
    tagCell.className = "tag";
    tagCell.style.paddingLeft = `${0.5 + depth * 1.25}rem`;
    const shown = `(${tag.slice(0, 4)},${tag.slice(4)})`;
    const keywordCell = document.createElement("td");
    keywordCell.textContent = keyword || "";
    keywordCell.title = name || "";
    const vrCell = document.createElement("td");
    vrCell.textContent = element.vr || "";
    const valueCell = document.createElement("td");
    valueCell.className = "value";
    tr.dataset.search = `${tag} ${shown} ${keyword} ${name} ${valueText(element)}`.toLowerCase();
    if (element.vr === "SQ") {
      const items = Array.isArray(element.Value) ? element.Value : [];
      const toggle = document.createElement("button");
      toggle.type = "button";
      toggle.className = "expand";
      toggle.setAttribute("aria-expanded", "false");
      toggle.textContent = shown;
      toggle.setAttribute("aria-label", `${shown} ${keyword}: show ${items.length} items`);
      toggle.disabled = items.length === 0;
      toggle.addEventListener("click", () => expand(tr, toggle.getAttribute("aria-expanded") !== "true"));
      tagCell.append(toggle);
      valueCell.textContent = `${items.length} ${items.length === 1 ? "item" : "items"}`;
      const nested = [];
      items.forEach((item, i) => {
        const itemRow = document.createElement("tr");
        const itemId = `tag-row-${++rowCount}`;
        itemRow.id = itemId;
        itemRow.className = "item";
        itemRow.dataset.depth = String(depth + 1);
        itemRow.dataset.parent = id;
        itemRow.dataset.search = "";
        itemRow.hidden = true;
        const td = document.createElement("td");
        td.colSpan = 4;
        td.style.paddingLeft = `${0.5 + (depth + 1) * 1.25}rem`;
        td.textContent = `Item ${i + 1}`;
        itemRow.append(td);
        nested.push(itemRow, ...rowsOf(item, depth + 2, itemId));
      });
      tr.append(tagCell, keywordCell, vrCell, valueCell);
      rows.push(tr, ...nested);
    } else {
      tagCell.textContent = shown;
      valueCell.textContent = valueText(element);
      tr.append(tagCell, keywordCell, vrCell, valueCell);
      rows.push(tr);
    }
  }
  return rows;
}

function childrenOf(row) {
  return [...document.querySelectorAll(`#tags-table tr[data-parent="${row.id}"]`)];
}

function expand(row, open) {
  const toggle = row.querySelector("button.expand");
  if (toggle) toggle.setAttribute("aria-expanded", String(open));
  for (const child of childrenOf(row)) {
    child.hidden = !open;
    if (!open || child.classList.contains("item")) expand(child, open);
  }
}

function filter() {
  const wanted = $("tags-search").value.trim().toLowerCase();
  const rows = [...$("tags-table").tBodies[0].rows];
  if (!wanted) {
    for (const row of rows) row.hidden = row.dataset.depth !== "0";
    for (const b of $("tags-table").querySelectorAll("button.expand")) {
      b.setAttribute("aria-expanded", "false");
    }
    say("tags-status", `${rows.filter((r) => r.dataset.depth === "0").length} attributes.`);
    return;
  }
  let found = 0;
  for (const row of rows) row.hidden = true;
  for (const row of rows) {
    if (!row.dataset.search.includes(wanted)) continue;
    found += 1;
    // The row and every sequence and item it is in.
    for (let r = row; r; r = r.dataset.parent ? $(r.dataset.parent) : null) r.hidden = false;
  }
  say("tags-status", found === 0 ? "No attribute matches." :
    `${found} ${found === 1 ? "attribute matches" : "attributes match"}.`);
}

export async function showTags(study, series, instance) {
  $("tags-search").value = "";
  $("tags-table").tBodies[0].replaceChildren();
  $("tags-back").href = `#/study/${enc(study)}`;
  $("tags-uid").textContent = instance;
  say("tags-status", "Loading…");
  try {
    const url = `${DICOMWEB}/studies/${enc(study)}/series/${enc(series)}/instances/${enc(instance)}/metadata`;
    const [metadata] = await Promise.all([getJson(url, "application/dicom+json"), keywords()]);
    rowCount = 0;
    $("tags-table").tBodies[0].replaceChildren(...rowsOf(metadata[0] || {}, 0, null));
    filter();
  } catch (error) {
    say("tags-status", `Tags unavailable: ${error.message}`, true);
  }
}

export function setUpTags() {
  $("tags-search").addEventListener("input", filter);
}


