// The series viewer: one series' images rendered by the server (WADO-RS rendered, PS3.18
// 10.4 and 8.3.5.1), fitted to the element in device pixels, with window/level presets and
// dragging, scrolling by wheel and keys through instances and frames, cine for multi-frame
// instances, the neighbours prefetched into a small cache of object URLs, and the text of an
// SR or the document of an encapsulated PDF for objects without pixels.
//
//   const { mountSeriesViewer } = await import("/viewer.js");
//   const viewer = await mountSeriesViewer(div, { study, series, instances });
//   ...
//   viewer.destroy();
//
// Every value from the server goes into the page as text (textContent), never as HTML.

const DICOMWEB = "/dicom-web";
const CSS = new URL("./viewer.css", import.meta.url).href;
const DRAG_MS = 80; // at most one window request this often while dragging
const RESIZE_MS = 150;
const PREFETCH_AHEAD = 4;
const PREFETCH_BEHIND = 2;
const CACHE_SIZE = 32; // rendered images kept as object URLs
const PAGE_STEP = 10;
const CINE_MS = 100; // a frame's time when Frame Time (0018,1063) does not say

// DICOM JSON is keyed by tag (PS3.18 F.2).
const TAG = {
  SOPClassUID: "00080016",
  SOPInstanceUID: "00080018",
  Modality: "00080060",
  CodeMeaning: "00080104",
  SeriesDescription: "0008103E",
  FrameTime: "00181063",
  InstanceNumber: "00200013",
  NumberOfFrames: "00280008",
  Rows: "00280010",
  Columns: "00280011",
  BitsStored: "00280101",
  PixelRepresentation: "00280103",
  WindowCenter: "00281050",
  WindowWidth: "00281051",
  RescaleIntercept: "00281052",
  RescaleSlope: "00281053",
  ValueType: "0040A040",
  ConceptNameCodeSequence: "0040A043",
  DateTime: "0040A120",
  Date: "0040A121",
  Time: "0040A122",
  PersonName: "0040A123",
  UID: "0040A124",
  TextValue: "0040A160",
  ConceptCodeSequence: "0040A168",
  ContentSequence: "0040A730",
  MeasuredValueSequence: "0040A300",
  NumericValue: "0040A30A",
  MeasurementUnitsCodeSequence: "004008EA",
  DocumentTitle: "00420010",
  MIMETypeOfEncapsulatedDocument: "00420012",
};

const SR_PREFIX = "1.2.840.10008.5.1.4.1.1.88."; // Structured Report Storage (PS3.4 B.5)
const PDF_CLASS = "1.2.840.10008.5.1.4.1.1.104.1"; // Encapsulated PDF Storage

// Window presets: [label, center, width]; null center: the instance's own, "auto": the
// range of the stored values after the Modality LUT.
const CT_PRESETS = [
  ["Default", null, null],
  ["Brain", 40, 80],
  ["Lung", -600, 1500],
  ["Bone", 300, 1500],
  ["Abdomen", 40, 400],
];
const OTHER_PRESETS = [
  ["Default", null, null],
  ["Auto", "auto", null],
];

function values(obj, keyword) {
  const element = obj && obj[TAG[keyword]];
  return element && Array.isArray(element.Value) ? element.Value : [];
}

function first(obj, keyword) {
  const found = values(obj, keyword);
  return found.length ? found[0] : null;
}

function number(obj, keyword, fallback) {
  const value = Number(first(obj, keyword));
  return first(obj, keyword) === null || !Number.isFinite(value) ? fallback : value;
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// The viewer's stylesheet, added once; resolves when it applies (or failed to load), so
// that the first image is asked for at the stage's laid-out size, not a transitional one.
let cssLoaded = null;
function injectCss() {
  if (cssLoaded) return cssLoaded;
  const link = document.createElement("link");
  link.rel = "stylesheet";
  link.href = CSS;
  link.dataset.pypacsViewer = "";
  cssLoaded = new Promise((resolve) => {
    link.addEventListener("load", resolve, { once: true });
    link.addEventListener("error", resolve, { once: true });
  });
  document.head.append(link);
  return cssLoaded;
}

async function getJson(url) {
  const response = await fetch(url, { headers: { Accept: "application/dicom+json" } });
  if (!response.ok) throw new Error(`${url}: ${response.status} ${await response.text()}`);
  return response.status === 204 ? [] : response.json();
}

async function seriesInstances(study, series) {
  const query = new URLSearchParams();
  for (const field of ["00280008", "00280010", "00280011", "00080060", "00420012"]) {
    query.append("includefield", field);
  }
  return getJson(`${DICOMWEB}/studies/${study}/series/${series}/instances?${query}`);
}

function kindOf(instance) {
  const sopClass = String(first(instance, "SOPClassUID") || "");
  if (sopClass.startsWith(SR_PREFIX)) return "sr";
  if (sopClass === PDF_CLASS || first(instance, "MIMETypeOfEncapsulatedDocument") === "application/pdf") {
    return "pdf";
  }
  return "image";
}

// The series as a flat list of what can be shown: every frame of every image instance (in
// Instance Number order), one item per SR or PDF.
function itemsOf(instances) {
  const sorted = [...instances].sort(
    (a, b) => number(a, "InstanceNumber", 0) - number(b, "InstanceNumber", 0),
  );
  const items = [];
  sorted.forEach((instance, position) => {
    const kind = kindOf(instance);
    const frames = kind === "image" ? Math.max(1, number(instance, "NumberOfFrames", 1)) : 1;
    for (let frame = 1; frame <= frames; frame += 1) {
      items.push({ instance, position, kind, frame, frames, uid: first(instance, "SOPInstanceUID") });
    }
  });
  return { items, count: sorted.length };
}

// -- SR text (PS3.3 C.17.3: the content tree of Content Sequence items) -----------------

function conceptName(item) {
  const code = first(item, "ConceptNameCodeSequence");
  return code ? String(first(code, "CodeMeaning") || "") : "";
}

function contentValue(item) {
  switch (first(item, "ValueType")) {
    case "TEXT":
      return String(first(item, "TextValue") || "");
    case "CODE": {
      const code = first(item, "ConceptCodeSequence");
      return code ? String(first(code, "CodeMeaning") || "") : "";
    }
    case "NUM": {
      const measured = first(item, "MeasuredValueSequence");
      if (!measured) return "";
      const units = first(measured, "MeasurementUnitsCodeSequence");
      const unit = units ? ` ${first(units, "CodeMeaning") || ""}` : "";
      return `${first(measured, "NumericValue") ?? ""}${unit}`;
    }
    case "PNAME": {
      const name = first(item, "PersonName");
      return name && name.Alphabetic ? name.Alphabetic : "";
    }
    case "DATE":
    case "TIME":
    case "DATETIME":
    case "UIDREF":
      return String(
        first(item, "Date") || first(item, "Time") || first(item, "DateTime") || first(item, "UID") || "",
      );
    default:
      return "";
  }
}

export function srText(dataset) {
  const lines = [];
  const title = conceptName(dataset);
  if (title) lines.push(title);
  const walk = (items, depth) => {
    for (const item of items) {
      const name = conceptName(item);
      const value = contentValue(item);
      const text = name && value ? `${name}: ${value}` : name || value;
      if (text) lines.push(`${"  ".repeat(depth)}${text}`);
      walk(values(item, "ContentSequence"), depth + 1);
    }
  };
  walk(values(dataset, "ContentSequence"), title ? 1 : 0);
  return lines.join("\n");
}

// -- the viewer --------------------------------------------------------------------------

class SeriesViewer {
  constructor(element, study, series, instances, description) {
    this.element = element;
    this.study = study;
    this.series = series;
    const { items, count } = itemsOf(instances);
    this.items = items;
    this.instanceCount = count;
    this.index = 0;
    this.window = null; // {center, width} asked for, null: the instance's own
    this.cache = new Map(); // url -> Promise of object URL, oldest first
    this.shownUrl = null;
    this.metadata = new Map(); // SOP Instance UID -> Promise of its DICOM JSON
    this.cine = null;
    this.dragTimer = null;
    this.cleanups = [];
    this.build(description);
  }

  // -- layout ----------------------------------------------------------------------------

  build(description) {
    const root = el("div", "pv-viewer");
    root.tabIndex = 0;
    root.setAttribute("role", "application");
    root.setAttribute(
      "aria-label",
      `Series viewer${description ? `: ${description}` : ""}. Arrow keys, Page Up, Page Down, ` +
        "Home and End move through the images; drag to change the window.",
    );
    this.root = root;
    const bar = el("div", "pv-bar");
    this.presets = el("div", "pv-presets");
    this.presets.setAttribute("role", "group");
    this.presets.setAttribute("aria-label", "Window presets");
    this.playButton = el("button", "pv-play", "Play");
    this.playButton.type = "button";
    this.playButton.hidden = true;
    this.playButton.addEventListener("click", () => this.toggleCine());
    this.windowLabel = el("span", "pv-window");
    bar.append(this.presets, this.playButton, this.windowLabel);
    this.stage = el("div", "pv-stage");
    this.image = el("img", "pv-image");
    this.image.alt = "";
    this.image.draggable = false;
    this.placeholder = el("div", "pv-placeholder");
    this.placeholder.hidden = true;
    this.stage.append(this.image, this.placeholder);
    this.counter = el("div", "pv-counter");
    this.counter.setAttribute("aria-live", "polite");
    this.counter.setAttribute("aria-atomic", "true");
    root.append(bar, this.stage, this.counter);
    this.element.replaceChildren(root);
    this.listen();
  }

  on(target, type, handler, options) {
    target.addEventListener(type, handler, options);
    this.cleanups.push(() => target.removeEventListener(type, handler, options));
  }

  listen() {
    this.on(this.root, "keydown", (event) => this.onKey(event));
    this.on(this.stage, "wheel", (event) => this.onWheel(event), { passive: false });
    this.on(this.stage, "pointerdown", (event) => this.onPointerDown(event));
    this.on(this.image, "load", () => this.onImageLoad());
    let resizeTimer = null;
    const observer = new ResizeObserver(() => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(() => this.show(this.index), RESIZE_MS);
    });
    observer.observe(this.stage);
    this.cleanups.push(() => {
      observer.disconnect();
      clearTimeout(resizeTimer);
    });
  }

  destroy() {
    this.stopCine();
    clearTimeout(this.dragTimer);
    for (const cleanup of this.cleanups) cleanup();
    for (const promise of this.cache.values()) promise.then((url) => url && URL.revokeObjectURL(url));
    this.cache.clear();
    this.element.replaceChildren();
  }

  // -- what is shown -------------------------------------------------------------------

  item(index) {
    return this.items[index];
  }

  instanceUrl(item) {
    return `${DICOMWEB}/studies/${this.study}/series/${this.series}/instances/${item.uid}`;
  }

  // The viewport in device pixels (PS3.18 8.3.5.1.3: vw,vh); the server keeps the aspect.
  viewport() {
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(this.stage.clientWidth * ratio));
    const height = Math.max(1, Math.round(this.stage.clientHeight * ratio));
    return `${Math.min(width, 4096)},${Math.min(height, 4096)}`;
  }

  renderedUrl(item, windowed = this.window) {
    const query = new URLSearchParams({ viewport: this.viewport() });
    if (windowed) query.set("window", `${round(windowed.center)},${round(windowed.width)},linear`);
    return `${this.instanceUrl(item)}/frames/${item.frame}/rendered?${query}`;
  }

  // The object URL of a rendered image, fetched once and kept while among the last used.
  fetchImage(url) {
    let promise = this.cache.get(url);
    if (promise) {
      this.cache.delete(url);
      this.cache.set(url, promise);
      return promise;
    }
    promise = fetch(url, { headers: { Accept: "image/jpeg" } }).then(async (response) => {
      if (!response.ok) throw new Error(`${response.status} ${await response.text()}`);
      return URL.createObjectURL(await response.blob());
    });
    promise.catch(() => this.cache.delete(url));
    this.cache.set(url, promise);
    this.evict();
    return promise;
  }

  evict() {
    for (const [url, promise] of this.cache) {
      if (this.cache.size <= CACHE_SIZE) break;
      this.cache.delete(url);
      promise.then((objectUrl) => {
        if (objectUrl !== this.shownUrl) URL.revokeObjectURL(objectUrl);
      }, () => {});
    }
  }

  prefetch(index) {
    for (let step = 1; step <= PREFETCH_AHEAD; step += 1) this.prefetchOne(index + step);
    for (let step = 1; step <= PREFETCH_BEHIND; step += 1) this.prefetchOne(index - step);
  }

  prefetchOne(index) {
    const item = this.item(index);
    if (item && item.kind === "image") this.fetchImage(this.renderedUrl(item)).catch(() => {});
  }

  move(step) {
    this.go(this.index + step);
  }

  go(index) {
    const target = Math.min(this.items.length - 1, Math.max(0, index));
    if (target !== this.index) this.show(target);
  }

  async show(index) {
    const item = this.item(index);
    if (!item) return;
    this.index = index;
    this.updateCounter();
    this.updateControls(item);
    if (item.kind !== "image") {
      this.showPlaceholder(item);
      return;
    }
    const url = this.renderedUrl(item);
    this.prefetch(index);
    try {
      const objectUrl = await this.fetchImage(url);
      if (this.index !== index || this.renderedUrl(item) !== url) return; // moved on meanwhile
      this.placeholder.hidden = true;
      this.image.hidden = false;
      this.shownUrl = objectUrl;
      this.image.dataset.index = String(index);
      this.image.src = objectUrl;
    } catch (error) {
      if (this.index === index) this.showMessage(`The image could not be rendered: ${error.message}`);
    }
  }

  onImageLoad() {
    this.element.dispatchEvent(
      new CustomEvent("pypacs-viewer-shown", { detail: { index: Number(this.image.dataset.index) } }),
    );
  }

  updateCounter() {
    const item = this.item(this.index);
    let text = `${item.position + 1} / ${this.instanceCount}`;
    if (item.frames > 1) text += ` \u00b7 frame ${item.frame} / ${item.frames}`;
    this.counter.textContent = text;
  }

  updateControls(item) {
    this.playButton.hidden = item.frames <= 1;
    if (item.frames <= 1) this.stopCine();
    this.presets.hidden = item.kind !== "image";
    this.windowLabel.textContent =
      item.kind === "image" && this.window
        ? `W ${round(this.window.width)} / L ${round(this.window.center)}`
        : "";
  }

  showMessage(text) {
    this.image.hidden = true;
    this.placeholder.hidden = false;
    this.placeholder.replaceChildren(el("p", "pv-message", text));
  }

  async showPlaceholder(item) {
    this.image.hidden = true;
    this.placeholder.hidden = false;
    if (item.kind === "pdf") {
      const frame = el("iframe", "pv-pdf");
      frame.title = "Encapsulated PDF document";
      // PS3.18 Table 8.7.4-1: the rendered resource of an encapsulated PDF is the PDF.
      const url = `${this.instanceUrl(item)}/rendered`;
      frame.src = url;
      const link = el("a", "pv-open", "Open the PDF");
      link.href = url;
      link.target = "_blank";
      link.rel = "noopener";
      this.placeholder.replaceChildren(frame, link);
      return;
    }
    if (item.kind !== "sr") {
      this.placeholder.replaceChildren(el("p", "pv-message", "This object has no image to show."));
      return;
    }
    this.placeholder.replaceChildren(el("p", "pv-message", "Loading the report\u2026"));
    try {
      const dataset = await this.instanceMetadata(item);
      if (this.item(this.index) !== item) return;
      const text = el("pre", "pv-sr", srText(dataset) || "(this report has no text)");
      this.placeholder.replaceChildren(text);
    } catch (error) {
      this.showMessage(`The report could not be read: ${error.message}`);
    }
  }

  instanceMetadata(item) {
    let promise = this.metadata.get(item.uid);
    if (!promise) {
      promise = getJson(`${this.instanceUrl(item)}/metadata`).then((list) => list[0] || {});
      promise.catch(() => this.metadata.delete(item.uid));
      this.metadata.set(item.uid, promise);
    }
    return promise;
  }

  // -- window / level ------------------------------------------------------------------

  async setPresets() {
    const image = this.items.find((item) => item.kind === "image");
    if (!image) {
      this.presets.hidden = true;
      return;
    }
    const modality = first(image.instance, "Modality") || first(await this.instanceMetadata(image), "Modality");
    const presets = modality === "CT" ? CT_PRESETS : OTHER_PRESETS;
    const buttons = presets.map(([label, center, width]) => {
      const button = el("button", "pv-preset", label);
      button.type = "button";
      button.addEventListener("click", async () => {
        if (center === "auto") this.setWindow(await this.autoWindow(this.item(this.index)));
        else this.setWindow(center === null ? null : { center, width });
        this.root.focus();
      });
      return button;
    });
    this.presets.replaceChildren(...buttons);
  }

  setWindow(windowed) {
    this.window = windowed;
    this.show(this.index);
  }

  // The instance's own window (0028,1050/1051), else the range of its stored values.
  async ownWindow(item) {
    const dataset = await this.instanceMetadata(item);
    const center = number(dataset, "WindowCenter", null);
    const width = number(dataset, "WindowWidth", null);
    if (center !== null && width !== null && width >= 1) return { center, width };
    return this.autoWindow(item);
  }

  // The range stored values can take (Bits Stored, Pixel Representation) through the
  // rescale (PS3.3 C.11.1.1.2).
  async autoWindow(item) {
    const dataset = await this.instanceMetadata(item);
    const bits = number(dataset, "BitsStored", 8);
    const signed = number(dataset, "PixelRepresentation", 0) === 1;
    const low = signed ? -(2 ** (bits - 1)) : 0;
    const high = signed ? 2 ** (bits - 1) - 1 : 2 ** bits - 1;
    const slope = number(dataset, "RescaleSlope", 1);
    const intercept = number(dataset, "RescaleIntercept", 0);
    const a = low * slope + intercept;
    const b = high * slope + intercept;
    return { center: (a + b) / 2, width: Math.max(1, Math.abs(b - a)) };
  }

  // Dragging: horizontal changes the width, vertical the center; the image is asked for at
  // most every DRAG_MS while dragging, and once more on release.
  onPointerDown(event) {
    const item = this.item(this.index);
    if (event.button !== 0 || !item || item.kind !== "image") return;
    event.preventDefault();
    this.root.focus();
    this.stage.setPointerCapture(event.pointerId);
    const start = { x: event.clientX, y: event.clientY };
    // The listeners are in place at once; the window dragged from may still be on its way.
    const base = this.window ? Promise.resolve(this.window) : this.ownWindow(item);
    let last = 0;
    let moved = false;
    const update = async (e) => {
      const from = await base;
      const step = Math.max(0.5, from.width / 256);
      this.window = {
        center: from.center + (e.clientY - start.y) * step,
        width: Math.max(1, from.width + (e.clientX - start.x) * step),
      };
      this.windowLabel.textContent = `W ${round(this.window.width)} / L ${round(this.window.center)}`;
    };
    const apply = async (e) => {
      last = performance.now();
      await update(e);
      this.show(this.index);
    };
    const onMove = (e) => {
      moved = true;
      clearTimeout(this.dragTimer);
      const wait = DRAG_MS - (performance.now() - last);
      if (wait <= 0) apply(e);
      else this.dragTimer = setTimeout(() => apply(e), wait);
    };
    const onUp = (e) => {
      this.stage.removeEventListener("pointermove", onMove);
      this.stage.removeEventListener("pointerup", onUp);
      this.stage.removeEventListener("pointercancel", onUp);
      clearTimeout(this.dragTimer);
      if (moved) apply(e);
    };
    this.stage.addEventListener("pointermove", onMove);
    this.stage.addEventListener("pointerup", onUp);
    this.stage.addEventListener("pointercancel", onUp);
  }

  // -- scrolling -----------------------------------------------------------------------

  onWheel(event) {
    event.preventDefault();
    if (event.deltaY) this.move(event.deltaY > 0 ? 1 : -1);
  }

  onKey(event) {
    const steps = {
      ArrowDown: 1,
      ArrowRight: 1,
      ArrowUp: -1,
      ArrowLeft: -1,
      PageDown: PAGE_STEP,
      PageUp: -PAGE_STEP,
    };
    if (event.key in steps) this.move(steps[event.key]);
    else if (event.key === "Home") this.go(0);
    else if (event.key === "End") this.go(this.items.length - 1);
    else if (event.key === " " && !this.playButton.hidden) this.toggleCine();
    else return;
    event.preventDefault();
  }

  // -- cine: the frames of the current instance in a loop -------------------------------

  toggleCine() {
    if (this.cine) this.stopCine();
    else this.startCine();
  }

  async startCine() {
    const item = this.item(this.index);
    if (!item || item.frames <= 1) return;
    const dataset = await this.instanceMetadata(item).catch(() => ({}));
    const delay = Math.max(20, number(dataset, "FrameTime", CINE_MS));
    const firstIndex = this.index - (item.frame - 1);
    const cine = { timer: null };
    this.cine = cine;
    this.playButton.textContent = "Pause";
    this.playButton.setAttribute("aria-pressed", "true");
    const tick = async () => {
      if (this.cine !== cine) return;
      const current = this.item(this.index);
      const next = current.uid === item.uid && current.frame < item.frames ? this.index + 1 : firstIndex;
      const started = performance.now();
      await this.show(next);
      if (this.cine === cine) {
        cine.timer = setTimeout(tick, Math.max(0, delay - (performance.now() - started)));
      }
    };
    cine.timer = setTimeout(tick, delay);
  }

  stopCine() {
    if (!this.cine) return;
    clearTimeout(this.cine.timer);
    this.cine = null;
    this.playButton.textContent = "Play";
    this.playButton.setAttribute("aria-pressed", "false");
  }
}

function round(value) {
  return Math.round(value * 100) / 100;
}

// Mount a viewer for one series into ``element``; ``instances`` are the series' instances
// as QIDO-RS returns them (fetched here when absent). Resolves to the viewer, whose
// ``destroy()`` releases it.
export async function mountSeriesViewer(element, { study, series, instances, description } = {}) {
  if (!study || !series) throw new Error("mountSeriesViewer needs a study and a series UID");
  const styled = injectCss();
  const found = instances || (await seriesInstances(study, series));
  await styled;
  const viewer = new SeriesViewer(element, study, series, found, description || "");
  if (!viewer.items.length) {
    viewer.showMessage("This series holds no instances.");
    return viewer;
  }
  await viewer.setPresets();
  viewer.show(0);
  return viewer;
}
