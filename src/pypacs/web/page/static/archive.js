// The archive page: what it holds, what it received over the last hour or day (a chart),
// the remote AEs with a connection test, the sends started from this page, and the
// demographics conflicts to review (administrators).
import { $, API, button, cell, count, enc, getJson, isAdmin, say, size } from "./dicom.js";
import { describeJob, echo, startedJobs } from "./study.js";

export async function showArchive() {
  const parts = [statistics(), ingest($("ingest-span").value), remotes()];
  // The sends and the conflicts are an administrator's (web/roles.py); others do not ask.
  if (isAdmin()) parts.push(jobs(), conflicts());
  await Promise.all(parts);
}

async function statistics() {
  try {
    const s = await getJson(`${API}/statistics`);
    for (const key of ["patients", "studies", "series", "instances"]) {
      $(`stat-${key}`).textContent = String(s[key]);
    }
    $("stat-bytes").textContent = size(s.bytes);
    say("archive-status", "");
  } catch (error) {
    say("archive-status", `Statistics unavailable: ${error.message}`, true);
  }
}

const SVG = "http://www.w3.org/2000/svg";

function svg(name, attributes) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  return element;
}

// A bar per minute or hour; the figure's text says the same for those who do not see it.
async function ingest(span) {
  const chart = $("ingest-chart");
  try {
    const data = await getJson(`${API}/ingest?span=${enc(span)}`);
    const width = 600;
    const height = 120;
    const top = Math.max(1, ...data.buckets.map((b) => b.instances));
    const bar = width / data.buckets.length;
    const picture = svg("svg", { viewBox: `0 0 ${width} ${height + 16}`, role: "img",
      "aria-labelledby": "ingest-summary", class: "chart" });
    data.buckets.forEach((b, i) => {
      const h = (b.instances / top) * height;
      const rect = svg("rect", { x: i * bar + 1, y: height - h, width: Math.max(1, bar - 2),
        height: h, class: "bar" });
      const title = svg("title", {});
      title.textContent = `${b.start}: ${b.instances}`;
      rect.append(title);
      picture.append(rect);
    });
    picture.append(svg("line", { x1: 0, y1: height, x2: width, y2: height, class: "axis" }));
    const label = svg("text", { x: width, y: height + 14, "text-anchor": "end", class: "label" });
    label.textContent = `peak ${top} per ${data.bucket}`;
    picture.append(label);
    chart.replaceChildren(picture);
    const per = data.bucket === "minute" ? "the last hour" : "the last 24 hours";
    $("ingest-summary").textContent =
      `${count(data.instances, "instance", "instances")} received over ${per}.`;
  } catch (error) {
    chart.replaceChildren();
    $("ingest-summary").textContent = `Ingest rate unavailable: ${error.message}`;
  }
}

async function remotes() {
  const body = $("remotes-table").tBodies[0];
  try {
    const list = await getJson(`${API}/remotes`);
    body.replaceChildren(...list.map((r) => {
      const tr = document.createElement("tr");
      tr.dataset.remote = r.name;
      cell(tr, r.name);
      cell(tr, r.ae_title);
      cell(tr, `${r.host}:${r.port}`);
      const status = document.createElement("span");
      status.id = `echo-${r.name}`;
      status.setAttribute("role", "status");
      // C-ECHO from the page is an administrator's (web/roles.py): others see no column.
      const test = button("Test connection", () => echo(r.name, status), `Test connection to ${r.name}`);
      const td = cell(tr, test);
      td.className = "admin-only";
      td.append(" ", status);
      return tr;
    }));
    $("remotes-table").hidden = list.length === 0;
    say("remotes-status", list.length ? "" : "No remote AE is configured.");
  } catch (error) {
    say("remotes-status", `Remotes unavailable: ${error.message}`, true);
  }
}

const JOBS_POLL_MS = 1000;
const unfinishedJob = (job) => job.state === "queued" || job.state === "running";
let jobsTimer = null; // the next look at unfinished sends, while the archive page is shown

async function jobs() {
  clearTimeout(jobsTimer);
  jobsTimer = null;
  const body = $("jobs-table").tBodies[0];
  if (startedJobs.length === 0) {
    body.replaceChildren();
    $("jobs-table").hidden = true;
    say("jobs-status", "No send was started from this page yet.");
    return;
  }
  let unfinished = false;
  const rows = await Promise.all(startedJobs.map(async (started) => {
    const tr = document.createElement("tr");
    tr.dataset.job = started.id;
    cell(tr, started.summary);
    try {
      const job = await getJson(`${API}/jobs/${enc(started.id)}`);
      tr.dataset.state = job.state;
      if (unfinishedJob(job)) unfinished = true;
      const progress = document.createElement("progress");
      const finished = job.completed + job.failed + job.warning;
      progress.max = Math.max(1, finished + (job.remaining ?? 0));
      progress.value = finished;
      // Until the job's first progress is saved, how much is left is unknown: an
      // indeterminate bar (HTML "the progress element", no value attribute).
      if (unfinishedJob(job) && (job.remaining ?? null) === null) progress.removeAttribute("value");
      progress.setAttribute("aria-label", `Progress of the send of ${started.summary}`);
      cell(tr, progress);
      cell(tr, describeJob(job));
    } catch (error) {
      cell(tr, "");
      cell(tr, error.message);
    }
    return tr;
  }));
  body.replaceChildren(...rows);
  $("jobs-table").hidden = false;
  say("jobs-status", "");
  if (unfinished && !$("view-archive").hidden) jobsTimer = setTimeout(jobs, JOBS_POLL_MS);
}

async function conflicts() {
  const body = $("conflicts-table").tBodies[0];
  body.replaceChildren();
  try {
    const data = await getJson(`${API}/conflicts?limit=100`);
    body.replaceChildren(...data.conflicts.map((c) => {
      const tr = document.createElement("tr");
      cell(tr, c.patient_id);
      cell(tr, c.attribute);
      cell(tr, c.stored ?? "");
      cell(tr, c.received ?? "");
      cell(tr, c.sop_instance_uid);
      cell(tr, c.seen_at.replace("T", " ").slice(0, 19));
      return tr;
    }));
    $("conflicts-table").hidden = data.total === 0;
    say("conflicts-status", data.total === 0 ? "No conflict to review." :
      `${count(data.total, "conflict", "conflicts")} to review` +
        (data.total > data.conflicts.length ? `; the newest ${data.conflicts.length} shown.` : "."));
  } catch (error) {
    say("conflicts-status", `Conflicts unavailable: ${error.message}`, true);
  }
}

export function setUpArchive() {
  $("ingest-span").addEventListener("change", () => ingest($("ingest-span").value));
  $("archive-refresh").addEventListener("click", showArchive);
}
