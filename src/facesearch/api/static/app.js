// facesearch web app: a thin layer over the JSON API. No framework, no CDN.
"use strict";

const csrf = () => document.querySelector('meta[name="csrf-token"]').content;
const $ = (sel) => document.querySelector(sel);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));

async function api(method, url, body) {
  const init = {method, headers: {"X-CSRF-Token": csrf()}, credentials: "same-origin"};
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) { init.body = JSON.stringify(body); init.headers["Content-Type"] = "application/json"; }
  const res = await fetch(url, init);
  if (res.status === 401) { location.href = "/login"; throw new Error("not logged in"); }
  const data = res.headers.get("content-type")?.includes("json") ? await res.json() : await res.text();
  if (!res.ok) throw new Error(typeof data === "object" ? formatDetail(data.detail) : data);
  return data;
}

function formatDetail(detail) {
  if (Array.isArray(detail)) return detail.map((d) => `${(d.loc || []).slice(-1)[0]}: ${d.msg}`).join("; ");
  return detail;
}

function videoTime(seconds) {
  const m = Math.floor(seconds / 60), s = (seconds - 60 * m).toFixed(1).padStart(4, "0");
  return `${m}:${s}`;
}

// The page of a face's photo, under the view grant its API URL carries (?view=...): the grant of the
// audited search or view that showed the face. A photo page without one is refused by the API.
function photoPage(faceId, photoUrl) {
  const query = String(photoUrl || "").split("?")[1] || "";
  return `/photo/${faceId}${query ? "?" + query : ""}`;
}

function rateWords(c) {
  // The server words the estimate from the pack's calibration: one wording everywhere.
  return c.false_match_words || "false-match rate unknown (uncalibrated pack)";
}

// Boxes over a shown image, placed in percent of its natural size (they follow any resizing).
// boxes: [x1, y1, x2, y2] in the image's pixels; chosen: the index drawn as "this face";
// onPick(i), when given, makes every box a button that picks that face.
function drawBoxes(img, boxes, {chosen = -1, label = (i) => `face ${i + 1} of ${boxes.length}`, onPick = null} = {}) {
  const wrap = img.parentElement;
  wrap.querySelectorAll(".box, .pick").forEach((el) => el.remove());
  const place = () => {
    const w = img.naturalWidth || 1, h = img.naturalHeight || 1;
    boxes.forEach((b, i) => {
      const el = document.createElement(onPick ? "button" : "div");
      el.className = (onPick ? "pick" : "box") + (i === chosen ? " this" : "");
      if (onPick) { el.type = "button"; el.title = label(i); el.addEventListener("click", () => onPick(i)); }
      else el.setAttribute("role", "img");
      el.setAttribute("aria-label", label(i));
      // positions through the CSSOM: the content security policy allows no inline style attribute
      Object.assign(el.style, {left: `${100 * b[0] / w}%`, top: `${100 * b[1] / h}%`,
        width: `${100 * (b[2] - b[0]) / w}%`, height: `${100 * (b[3] - b[1]) / h}%`});
      wrap.appendChild(el);
    });
  };
  if (img.complete && img.naturalWidth) place(); else img.addEventListener("load", place, {once: true});
}

// The searches of this browser tab, by view grant: the photo page shows a candidate's score from
// them, and "back to the results" shows them again without searching again (no new audit record).
const searchMemory = {
  key: (token) => `fs-search:${token}`,
  save(token, state) {
    if (!token) return;
    try { sessionStorage.setItem(this.key(token), JSON.stringify(state)); }
    catch { try { sessionStorage.setItem(this.key(token), JSON.stringify({...state, probe_image: null})); } catch { /* full: not kept */ } }
  },
  load(token) {
    try { return token ? JSON.parse(sessionStorage.getItem(this.key(token)) || "null") : null; } catch { return null; }
  },
};

// Weaker candidates (below the threshold: most likely strangers), the same on every search page: counted,
// and shown only when asked by the button, which searches again with include_weaker=true stated in the
// request (and so recorded in the audit log). p: the prefix of the ids of templates/_weaker.html.
const weakerOffer = {
  // the button sets the form's hidden include_weaker field for one search and sends the form again
  init(p, form, field) {
    $(`#${p}show-weaker`).addEventListener("click", () => { field.value = "true"; form.requestSubmit(); });
  },
  // says how many were withheld (or that they are shown); the candidates split: {above, below}
  show(p, r, live) {
    const count = r.weaker_count ?? r.weaker_withheld ?? 0;
    $(`#${p}weaker`).hidden = !(count > 0) || r.include_weaker;
    $(`#${p}weaker-text`).textContent = `${count} weaker candidate(s) below the threshold are not shown: `
      + "most likely they are other people.";
    $(`#${p}show-weaker`).hidden = !live;  // after "back to the results" a page may be unable to search again
    $(`#${p}weaker-again`).hidden = live;
    $(`#${p}weaker-shown`).hidden = !r.include_weaker;
    const above = r.candidates.filter((c) => c.above_threshold);
    const below = [...r.candidates.filter((c) => !c.above_threshold), ...(r.weaker || [])];  // (a list of its own, if the API gives one)
    $(`#${p}weaker-group`).hidden = below.length === 0;
    return {above, below};
  },
  hide(p) {
    for (const id of ["weaker", "weaker-shown", "weaker-group"]) $(`#${p}${id}`).hidden = true;
  },
};

// ---- login -------------------------------------------------------------------------------------
function initLogin() {
  const form = $("#login-form");
  if (!form) return;
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const fd = new FormData(form);
    const res = await fetch("/api/login", {method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({username: fd.get("username"), password: fd.get("password")})});
    if (!res.ok) { $("#login-error").textContent = "Wrong username or password."; return; }
    const me = await res.json();
    location.href = me.role === "auditor" ? "/audit" : "/";
  });
}

function initLogout() {
  const b = $("#logout");
  if (b) b.addEventListener("click", async () => { await api("POST", "/api/logout"); location.href = "/login"; });
}

// ---- collections -------------------------------------------------------------------------------------
async function initCollections() {
  const table = $("#collections-table");
  if (!table) return;
  const load = async () => {
    const rows = await api("GET", "/api/collections");
    table.querySelector("tbody").innerHTML = rows.map((c) => `<tr><td>${esc(c.name)}</td><td>${c.images}</td><td>${c.faces}</td><td>${esc(c.legal_basis)}</td><td>${c.keep_thumbnails ? "kept" : "embeddings only"}</td></tr>`).join("");
    const select = $("#upload-collection");
    if (select) select.innerHTML = rows.map((c) => `<option>${esc(c.name)}</option>`).join("");
  };
  await load();
  const create = $("#new-collection");
  if (!create) return;
  const fail = (err) => {
    const p = document.createElement("p");
    p.className = "error job"; p.setAttribute("role", "alert"); p.textContent = err.message;
    $("#jobs").prepend(p);
  };
  create.addEventListener("submit", async (e) => {
    e.preventDefault();
    const fd = new FormData(create);
    try {
      await api("POST", "/api/collections", {name: fd.get("name"), legal_basis: fd.get("legal_basis"),
        retention_days: fd.get("retention_days") ? Number(fd.get("retention_days")) : null,
        keep_thumbnails: fd.get("keep_thumbnails") === "on"});
      create.reset(); await load();
    } catch (err) { fail(err); }
  });
  const watch = async (job) => {
    const box = document.createElement("p");
    box.className = "job"; box.dataset.jobId = job.id;
    $("#jobs").prepend(box);
    for (;;) {
      const j = await api("GET", `/api/jobs/${job.id}`);
      box.textContent = `${j.kind} into ${j.collection}: ${j.state} — ${j.done}/${j.total} files, ${j.images_indexed} photos, ${j.faces_indexed} faces${j.failed.length ? `, ${j.failed.length} failed` : ""}${j.error ? " — " + j.error : ""}`;
      box.dataset.state = j.state;
      if (j.state === "done" || j.state === "failed") break;
      await new Promise((r) => setTimeout(r, 500));
    }
    await load();
  };
  $("#upload-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const fd = new FormData();
    for (const f of $("#upload-files").files) fd.append("files", f);
    const name = $("#upload-collection").value;
    try { watch(await api("POST", `/api/collections/${encodeURIComponent(name)}/photos`, fd)); $("#upload-files").value = ""; }
    catch (err) { fail(err); }
  });
  $("#folder-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const name = $("#upload-collection").value;
    const path = new FormData($("#folder-form")).get("path");
    try { watch(await api("POST", `/api/collections/${encodeURIComponent(name)}/ingest-folder`, {path})); }
    catch (err) { fail(err); }
  });
}

// ---- admin ----------------------------------------------------------------------------------------------
async function initAdmin() {
  // users, grants and API keys: accounts.js
  if (!$("#erase-like")) return;
  const say = (sel, text) => { $(sel).textContent = text; };
  $("#erase-like").addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!confirm("Erase every matching face for good?")) return;
    try { const r = await api("POST", "/api/erase/like", new FormData(e.target)); say("#erase-like-result", `Erased ${r.faces.length} face(s), ${r.images.length} photo(s), ${r.thumbnails_deleted} thumbnail(s).`); }
    catch (err) { say("#erase-like-result", err.message); }
  });
  $("#optout-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    try { const r = await api("POST", "/api/optouts", new FormData(e.target)); say("#optout-result", `Opt-out ${r.id} registered (suppression threshold ${r.threshold.toFixed(3)}).`); e.target.reset(); }
    catch (err) { say("#optout-result", err.message); }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  initLogin(); initLogout(); initCollections(); initAdmin();
});
