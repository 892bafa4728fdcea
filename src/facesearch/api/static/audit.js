// facesearch web app: the audit page. Loaded after app.js (its helpers $, esc and api).
// Each record's details are shown as labelled fields; long values are folded (click to expand),
// never cut; ids link to what they refer to where the viewer's role may open it.
"use strict";

// detail key -> label an auditor reads (keys not listed are shown with their underscores as spaces)
// (in the order the fields are shown)
const AUDIT_LABELS = {
  username: "user", role: "role", ok: "succeeded", collections: "collections", collection: "collection",
  gallery: "gallery", subject_id: "subject", cluster_id: "cluster", face_id: "face", image_id: "photo",
  context_record: "under record", view_grant: "view grant", confident: "confident match",
  same_person: "same person", similarity: "similarity", results: "candidates shown",
  include_weaker: "weaker candidates asked for", weaker_withheld: "weaker withheld", suppressed: "opted-out hidden",
  top_k: "top k asked", threshold_override: "threshold override", faces: "faces", images: "photos",
  thumbnails_deleted: "thumbnails deleted", optout_id: "opt-out", gallery_id: "gallery id",
  returned: "records returned", reason: "reason", count: "count", sample: "sample", client: "client",
  probe_sha256: "probe SHA-256",
};

// What an id refers to -> [roles that may open it, its address]. Only the auditor opens this page
// today; the table says where each kind of id leads so that other roles get their links too.
const AUDIT_LINKS = {
  user: [["auditor"], (v) => `/audit?actor=${encodeURIComponent(v)}`],
  case: [["auditor"], (v) => `/audit?case_ref=${encodeURIComponent(v)}`],
  record: [["auditor"], (v) => `#rec-${v}`],
  subject: [["admin", "investigator"], (v) => `/subjects/${v}`],
  cluster: [["admin", "investigator"], (v) => `/clusters/${v}`],
  collection: [["admin", "investigator"], () => "/collections"],
};
const AUDIT_KIND_OF = {username: "user", context_record: "record", subject_id: "subject", cluster_id: "cluster",
  collection: "collection", collections: "collection"};
const FOLD_ITEMS = 6;  // lists longer than this show their first items and fold the rest
const FOLD_CHARS = 48;  // texts longer than this fold after the last whole word that fits

let auditRole = "";

function auditLink(kind, value, text) {
  const link = AUDIT_LINKS[kind];
  const shown = esc(text ?? value);
  if (!link || !link[0].includes(auditRole) || value === null || value === undefined) return shown;
  return `<a href="${esc(link[1](value))}">${shown}</a>`;
}

// A long text: its first whole words, then the rest on click (never cut inside a word or a hash).
function foldText(text) {
  const s = String(text);
  if (s.length <= FOLD_CHARS) return esc(s);
  const cut = s.lastIndexOf(" ", FOLD_CHARS);
  if (cut < 16) return `<details class="fold"><summary>${esc(s.slice(0, 12))}… <span class="more">show all</span></summary><span class="full">${esc(s)}</span></details>`;
  return `<details class="fold"><summary>${esc(s.slice(0, cut))} … <span class="more">show all</span></summary><span class="full">${esc(s)}</span></details>`;
}

function auditValue(key, value) {
  if (value === null || value === undefined) return "—";
  if (typeof value === "boolean") return value ? "yes" : "no";
  const kind = AUDIT_KIND_OF[key];
  if (typeof value === "number") {
    return kind ? auditLink(kind, value) : esc(Number.isInteger(value) ? value.toLocaleString() : value.toFixed(4));
  }
  if (key === "results" && Array.isArray(value)) {  // [[face id, score], ...]
    return auditList(value.map((r) => Array.isArray(r) ? `face ${r[0]} (${Number(r[1]).toFixed(3)})` : String(r)), null);
  }
  if (Array.isArray(value)) {
    // a pair such as ["photo", 12] reads "photo 12"; an object in a list as "key value, ..."
    const plain = (v) => (Array.isArray(v) ? v.join(" ")
      : typeof v === "object" && v !== null ? Object.entries(v).map(([k, x]) => `${k} ${x}`).join(", ") : v);
    return auditList(value.map(plain), kind);
  }
  if (typeof value === "object") return `<dl class="fields nested">${auditFields(value)}</dl>`;
  if (kind) return auditLink(kind, value);
  return foldText(value);
}

function auditList(items, kind) {
  if (items.length === 0) return "none";
  const show = (v) => (kind ? auditLink(kind, v) : esc(v));
  const head = items.slice(0, FOLD_ITEMS).map(show).join(", ");
  if (items.length <= FOLD_ITEMS) return `${items.length} — ${head}`;
  return `<details class="fold"><summary>${items.length} — ${head}, … <span class="more">${items.length - FOLD_ITEMS} more</span></summary>`
    + `<span class="full">${items.map(show).join(", ")}</span></details>`;
}

// The fields in the order of AUDIT_LABELS (what was done, to what, then the counts); unset ones left out.
function auditFields(details) {
  const order = Object.keys(AUDIT_LABELS);
  const rank = (key) => (order.includes(key) ? order.indexOf(key) : order.length);
  const entries = Object.entries(details).filter(([, v]) => v !== null && v !== undefined);
  entries.sort(([a], [b]) => rank(a) - rank(b));
  return entries.map(([key, value]) =>
    `<div class="field"><dt>${esc(AUDIT_LABELS[key] || key.replaceAll("_", " "))}</dt><dd>${auditValue(key, value)}</dd></div>`).join("");
}

function auditRow(r) {
  const details = r.details && Object.keys(r.details).length ? `<dl class="fields">${auditFields(r.details)}</dl>` : "";
  // the record as stored, for scripts and tests that read the page; people read the fields
  return `<tr id="rec-${r.id}" data-action="${esc(r.action)}" data-details="${esc(JSON.stringify(r.details || {}))}"><td>${r.id}</td><td class="nowrap">${esc(r.at.replace("T", " ").slice(0, 19))}</td>`
    + `<td>${auditLink("user", r.actor)}</td><td>${esc(r.action)}</td><td>${foldText(r.purpose)}</td>`
    + `<td class="nowrap">${r.case_ref ? auditLink("case", r.case_ref) : ""}</td><td class="details">${details}</td></tr>`;
}

async function initAudit() {
  const page = $("#audit-page");
  if (!page) return;
  auditRole = page.dataset.role;
  const table = $("#audit-table");
  const form = $("#audit-filter");
  // filters come from the address (links to a user or a case are filtered views) and go back to it
  for (const [name, value] of new URLSearchParams(location.search)) {
    if (form.elements[name]) form.elements[name].value = value;
  }
  const load = async () => {
    const params = new URLSearchParams([...new FormData(form)].filter(([, v]) => v));
    history.replaceState(null, "", params.toString() ? `/audit?${params}` : "/audit");
    $("#export").href = `/api/audit/export?${params}`;
    try {
      const rows = await api("GET", `/api/audit?${params}`);
      table.querySelector("tbody").innerHTML = rows.map(auditRow).join("");
      $("#audit-count").className = "meta";
      $("#audit-count").textContent = `${rows.length.toLocaleString()} record(s)${params.toString() ? " matching the filters" : ""}, newest first.`;
    } catch (err) {
      table.querySelector("tbody").innerHTML = "";
      $("#audit-count").className = "error";
      $("#audit-count").textContent = err.message;
    }
  };
  form.addEventListener("submit", (e) => { e.preventDefault(); load(); });
  $("#clear-filter").addEventListener("click", () => { form.reset(); load(); });
  $("#verify-chain").addEventListener("click", async () => {
    const c = await api("GET", "/api/audit/verify");
    const el = $("#chain-status");
    el.className = c.ok ? "ok" : "error";
    el.textContent = c.ok ? `Chain intact: ${c.records} records verified.` : `CHAIN BROKEN: ${c.problems.map((p) => `record ${p[0]}: ${p[1]}`).join("; ")}`;
  });
  await load();
}

document.addEventListener("DOMContentLoaded", initAudit);
