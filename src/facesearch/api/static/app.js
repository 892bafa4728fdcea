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

// ---- search ----------------------------------------------------------------------------------------
async function initSearch() {
  const form = $("#search-form");
  if (!form) return;
  const me = await api("GET", "/api/me");
  const picks = $("#collection-picks");
  if (!me.collections.length) picks.insertAdjacentHTML("beforeend", "<p>No collection granted to you yet.</p>");
  for (const name of me.collections) {
    picks.insertAdjacentHTML("beforeend", `<label class="check"><input type="checkbox" name="collections" value="${esc(name)}" checked> ${esc(name)}</label>`);
  }
  const input = $("#probe");
  const drop = $("#drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault(); drop.classList.remove("over");
    if (e.dataTransfer.files.length) { input.files = e.dataTransfer.files; showProbe(); }
  });
  input.addEventListener("change", showProbe);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const fd = new FormData(form);
    if (!fd.get("face")) fd.delete("face");
    if (fd.get("include_weaker") !== "true") fd.delete("include_weaker");
    $("#include-weaker").value = "";  // asked for once, by the button: the next search is minimal again
    $("#search-button").disabled = true;
    try { renderResults(await api("POST", "/api/search", fd)); }
    catch (err) { renderError(err); }
    finally { $("#search-button").disabled = false; }
  });
  // Weaker candidates (below the threshold: most likely strangers) only when asked: the same search
  // again, with include_weaker=true stated in the request and recorded in the audit log.
  $("#show-weaker").addEventListener("click", () => {
    $("#include-weaker").value = "true";
    form.requestSubmit();
  });
}

function showProbe() {
  const file = $("#probe").files[0];
  const view = $("#probe-view");
  $("#face-index").value = "";
  if (!file) { view.innerHTML = ""; return; }
  view.innerHTML = `<img id="probe-img" alt="probe" src="${URL.createObjectURL(file)}">`;
}

function drawProbeFaces(result) {
  const img = $("#probe-img");
  if (!img || !result.probe_faces || result.probe_faces.length < 2) return;
  const wrap = $("#probe-view");
  wrap.querySelectorAll(".pick").forEach((el) => el.remove());
  const place = () => {
    const sx = img.clientWidth / img.naturalWidth, sy = img.clientHeight / img.naturalHeight;
    result.probe_faces.forEach((b, i) => {
      const el = document.createElement("button");
      el.type = "button";
      el.className = "pick" + (result.probe && result.probe.chosen === i ? " chosen" : "");
      el.title = `search face ${i}`;
      Object.assign(el.style, {left: `${b[0] * sx}px`, top: `${b[1] * sy}px`, width: `${(b[2] - b[0]) * sx}px`, height: `${(b[3] - b[1]) * sy}px`});
      el.addEventListener("click", () => { $("#face-index").value = i; $("#search-form").requestSubmit(); });
      wrap.appendChild(el);
    });
  };
  if (img.complete) place(); else img.addEventListener("load", place, {once: true});
}

function renderError(err) {
  $("#results").hidden = false;
  $("#verdict").className = "verdict error";
  $("#verdict").textContent = err.message;
  $("#candidates").innerHTML = "";
  $("#result-meta").textContent = "";
}

function renderResults(r) {
  $("#results").hidden = false;
  const verdict = $("#verdict");
  verdict.className = "verdict " + (r.confident_match ? "leads" : "none");
  verdict.textContent = r.confident_match
    ? `${r.candidates.filter((c) => c.above_threshold).length} candidate lead(s) above the threshold — needs human review`
    : "No confident match: nobody in the searched collections scores above the threshold.";
  const probe = r.probe ? `Probe: ${r.probe.rule}; quality ${r.probe.quality.toFixed(2)}${r.probe.quality_issues.length ? " (" + r.probe.quality_issues.join(", ") + ")" : ""}. ` : "";
  const rule = r.threshold_rule.charAt(0).toUpperCase() + r.threshold_rule.slice(1);
  $("#result-meta").textContent = `${probe}Searched ${r.faces_searched.toLocaleString()} faces in ${r.collections.join(", ") || "no collection"}. ${rule}. ${r.warnings.join(" ")}`;
  drawProbeFaces(r);
  const weaker = $("#weaker");
  weaker.hidden = !(r.weaker_withheld > 0) || r.include_weaker;
  $("#weaker-text").textContent = `${r.weaker_withheld} weaker candidate(s) below the threshold are not shown: `
    + "most likely they are other people.";
  $("#weaker-shown").hidden = !r.include_weaker;
  $("#candidates").innerHTML = r.candidates.map((c) => `
    <a class="cand ${c.above_threshold ? "above" : "below"}" href="${photoPage(c.face_id, c.photo_url)}" data-face-id="${c.face_id}">
      ${c.thumbnail_url ? `<img src="${c.thumbnail_url}" alt="face ${c.face_id}">` : `<div class="nothumb">no thumbnail kept</div>`}
      <div class="score">${c.similarity.toFixed(3)} ${c.above_threshold ? "· above threshold" : "· below threshold"}</div>
      <div class="fmr">${esc(rateWords(c))}</div>
      ${c.media === "video" ? `<div class="when">video at ${videoTime(c.timestamp_s)} · track ${c.track_id}${c.track_span ? ` (on screen ${videoTime(c.track_span[0])}–${videoTime(c.track_span[1])})` : ""}</div>` : ""}
      <div class="src">${esc(c.collection)} · face ${c.face_id}</div>
    </a>`).join("");
}

// ---- verify (1:1) ------------------------------------------------------------------------------------
function initVerify() {
  const form = $("#verify-form");
  if (!form) return;
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const out = $("#verify-result");
    out.hidden = false;
    out.className = "verdict";
    out.textContent = "Comparing…";
    try {
      const r = await api("POST", "/api/verify", new FormData(form));
      out.classList.add(r.same_person ? "leads" : "none");
      out.textContent = `${r.same_person ? "Same person: a lead for human review" : "Not the same person (no evidence of a match)"} — similarity ${r.similarity.toFixed(3)}; ${r.false_match_words}.`;
      $("#verify-meta").textContent = r.threshold_rule.charAt(0).toUpperCase() + r.threshold_rule.slice(1) + ".";
    } catch (err) {
      out.classList.add("error");
      out.textContent = err.message;
    }
  });
}

// ---- photo -------------------------------------------------------------------------------------------
async function initPhoto() {
  const page = $("#photo-page");
  if (!page) return;
  const id = page.dataset.faceId;
  // the view grant of the search, subject or cluster that led here: the API records this look under it
  const view = new URLSearchParams(location.search).get("view") || "";
  let face;
  try { face = await api("GET", `/api/faces/${id}?view=${encodeURIComponent(view)}`); }
  catch (err) { $("#photo-meta").className = "error"; $("#photo-meta").textContent = err.message; return; }
  $("#photo-meta").textContent = face.media === "video"
    ? `Collection ${face.collection} · video ${face.image_id} · frame at ${videoTime(face.timestamp_s)} (face track ${face.track_id}) · quality ${face.quality.toFixed(2)}`
    : `Collection ${face.collection} · image ${face.image_id} · ${face.image_faces.length} face(s) · quality ${face.quality.toFixed(2)}`;
  const img = $("#photo");
  img.addEventListener("load", () => {
    const sx = img.clientWidth / img.naturalWidth, sy = img.clientHeight / img.naturalHeight;
    // positions through the CSSOM: the content security policy allows no inline style attribute
    $("#boxes").replaceChildren(...face.image_faces.map((f) => {
      const el = document.createElement("div");
      el.className = "box" + (String(f.face_id) === id ? " this" : "");
      Object.assign(el.style, {left: `${f.box[0] * sx}px`, top: `${f.box[1] * sy}px`,
        width: `${(f.box[2] - f.box[0]) * sx}px`, height: `${(f.box[3] - f.box[1]) * sy}px`});
      return el;
    }));
  });
  // The photo view is audited under the grant (the purpose and case of the search that led here).
  img.src = face.photo_url;
  const eraseImage = $("#erase-image");
  if (eraseImage) {
    eraseImage.addEventListener("click", async () => {
      if (!confirm("Erase this photo and all its faces for good?")) return;
      const r = await api("POST", "/api/erase", {images: [face.image_id], reason: "erased from photo view"});
      $("#erase-result").textContent = `Erased ${r.faces.length} face(s) and ${r.images.length} photo(s).`;
      img.remove(); $("#boxes").innerHTML = "";
    });
    $("#erase-face").addEventListener("click", async () => {
      if (!confirm("Erase this face for good?")) return;
      const r = await api("POST", "/api/erase", {faces: [Number(id)], reason: "erased from photo view"});
      $("#erase-result").textContent = `Erased ${r.faces.length} face(s).`;
    });
  }
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

// ---- audit ------------------------------------------------------------------------------------------------
async function initAudit() {
  const table = $("#audit-table");
  if (!table) return;
  const form = $("#audit-filter");
  const load = async () => {
    const params = new URLSearchParams([...new FormData(form)].filter(([, v]) => v));
    $("#export").href = `/api/audit/export?${params}`;
    const rows = await api("GET", `/api/audit?${params}`);
    table.querySelector("tbody").innerHTML = rows.map((r) => `<tr data-action="${esc(r.action)}"><td>${r.id}</td><td>${esc(r.at.replace("T", " ").slice(0, 19))}</td><td>${esc(r.actor)}</td><td>${esc(r.action)}</td><td>${esc(r.purpose)}</td><td>${esc(r.case_ref)}</td><td class="details">${esc(summarize(r))}</td></tr>`).join("");
  };
  form.addEventListener("submit", (e) => { e.preventDefault(); load(); });
  $("#verify-chain").addEventListener("click", async () => {
    const c = await api("GET", "/api/audit/verify");
    const el = $("#chain-status");
    el.className = c.ok ? "ok" : "error";
    el.textContent = c.ok ? `Chain intact: ${c.records} records verified.` : `CHAIN BROKEN: ${c.problems.map((p) => `record ${p[0]}: ${p[1]}`).join("; ")}`;
  });
  await load();
}

function summarize(r) {
  const d = r.details || {};
  if (r.action === "search") return `${(d.results || []).length} result(s) from ${(d.collections || []).join(", ")}; ${d.suppressed || 0} suppressed; probe ${String(d.probe_sha256 || "").slice(0, 12)}…`;
  if (r.action === "erase") return `${(d.faces || []).length} face(s), ${(d.images || []).length} photo(s) erased`;
  return JSON.stringify(d).slice(0, 160);
}

document.addEventListener("DOMContentLoaded", () => {
  initLogin(); initLogout(); initSearch(); initVerify(); initPhoto(); initCollections(); initAdmin(); initAudit();
});
