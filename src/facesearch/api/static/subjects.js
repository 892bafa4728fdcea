// facesearch web app: subjects, galleries, subject search, gallery matching and decisions.
// Loaded after app.js (whose helpers $, esc, api, rateWords, searchMemory and weakerOffer it uses). No framework, no CDN.
"use strict";

function parseAttributes(text) {
  const out = {};
  for (const line of String(text || "").split("\n")) {
    const at = line.indexOf(":");
    if (at < 1) continue;
    out[line.slice(0, at).trim()] = line.slice(at + 1).trim();
  }
  return out;
}

function chanceWords(c) {
  return c.false_match_words || (c.false_match_rate == null ? "false-match rate unknown" : rateWords(c));
}

// ---- the subjects page ---------------------------------------------------------------------------
async function initSubjectsPage() {
  const page = $("#subjects-page");
  if (!page) return;
  const filter = $("#gallery-filter-select");
  const loadGalleries = async () => {
    const galleries = await api("GET", "/api/galleries");
    const keep = filter.value;
    filter.innerHTML = `<option value="">all galleries</option>` + galleries.map((g) => `<option>${esc(g.name)}</option>`).join("");
    filter.value = keep;
    $("#gallery-names").innerHTML = galleries.map((g) => `<option value="${esc(g.name)}">`).join("");
    for (const sel of [$("#match-a"), $("#match-b")]) {
      const was = sel.value;
      sel.innerHTML = galleries.map((g) => `<option>${esc(g.name)}</option>`).join("");
      if (was) sel.value = was;
    }
    return galleries;
  };
  const loadSubjects = async () => {
    const q = filter.value ? `?gallery=${encodeURIComponent(filter.value)}` : "";
    const rows = await api("GET", `/api/subjects${q}`);
    $("#subjects-table tbody").innerHTML = rows.map((s) => `<tr data-subject-id="${s.id}"><td>${s.id}</td><td><a href="/subjects/${s.id}">${esc(s.label)}</a></td><td>${esc(s.gallery)}</td><td>${s.faces}</td></tr>`).join("");
  };
  filter.addEventListener("change", loadSubjects);

  const form = $("#new-subject");
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const fd = new FormData(form);
    const gallery = String(fd.get("gallery")).trim();
    try {
      const galleries = await api("GET", "/api/galleries");
      if (!galleries.some((g) => g.name === gallery)) await api("POST", "/api/galleries", {name: gallery});
      const subject = await api("POST", "/api/subjects", {gallery, label: String(fd.get("label")).trim(),
        attributes: parseAttributes(fd.get("attributes"))});
      location.href = `/subjects/${subject.id}`;
    } catch (err) {
      const p = $("#new-subject-result");
      p.className = "error"; p.setAttribute("role", "alert"); p.textContent = err.message;
    }
  });

  const match = $("#match-form");
  match.addEventListener("submit", async (e) => {
    e.preventDefault();
    const fd = new FormData(match);
    const why = {purpose: fd.get("purpose"), case_ref: fd.get("case_ref")};
    $("#match-button").disabled = true;
    try {
      const r = await api("POST", "/api/galleries/match", {gallery_a: fd.get("gallery_a"), gallery_b: fd.get("gallery_b"), ...why});
      $("#match-meta").className = "meta";
      $("#match-meta").textContent = `${r.pairs_compared.toLocaleString()} pairs compared (${r.fusion} fusion). ${r.threshold_rule}. ${r.warnings.join(" ")}`;
      const table = $("#match-table");
      table.hidden = false;
      table.querySelector("tbody").innerHTML = r.pairs.map((p) => `<tr data-a="${p.subject_a}" data-b="${p.subject_b}">
        <td>${p.rank}</td><td><a href="/subjects/${p.subject_a}">${esc(p.label_a)}</a></td><td><a href="/subjects/${p.subject_b}">${esc(p.label_b)}</a></td>
        <td>${p.similarity.toFixed(3)}</td><td class="details">${esc(chanceWords(p))}</td>
        <td class="decision">${p.decision ? esc(p.decision + "ed") : `<button type="button" data-decide="confirm" data-score="${p.similarity}">Confirm</button> <button type="button" class="link" data-decide="reject" data-score="${p.similarity}">Reject</button>`}</td></tr>`).join("");
      table.onclick = async (ev) => {
        const b = ev.target.closest("button[data-decide]");
        if (!b) return;
        const row = b.closest("tr");
        try {
          const d = await api("POST", `/api/subjects/${row.dataset.a}/decisions`, {decision: b.dataset.decide,
            other_subject_id: Number(row.dataset.b), score: Number(b.dataset.score), ...why});
          row.querySelector(".decision").textContent = `${d.decision}ed by ${d.decided_by}`;
        } catch (err) { row.querySelector(".decision").textContent = err.message; }
      };
    } catch (err) {
      $("#match-meta").className = "error"; $("#match-meta").textContent = err.message;
    } finally { $("#match-button").disabled = false; }
  });
  initImport(async () => { await loadGalleries(); await loadSubjects(); });
  // the lists load after every handler is in place: a form sent before they arrive is still handled here
  await loadGalleries();
  await loadSubjects();
}

// ---- a folder of people: POST /api/galleries/{name}/import, then its report as a table -------------------
function initImport(reload) {
  const form = $("#import-form");
  if (!form) return;
  const input = $("#import-folder");
  const chosen = () => [...input.files].filter((f) => !(f.webkitRelativePath || f.name).split("/").some((p) => p.startsWith(".")));
  input.addEventListener("change", () => {
    const files = chosen();
    const people = new Set(files.map((f) => (f.webkitRelativePath || f.name).split("/")).filter((p) => p.length > 2).map((p) => p[1]));
    $("#import-chosen").textContent = files.length ? `${files.length} file(s) in ${people.size} person folder(s) chosen.` : "";
  });
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const out = $("#import-result");
    const gallery = $("#import-gallery").value.trim();
    const fd = new FormData();
    for (const f of chosen()) {
      fd.append("files", f);
      fd.append("paths", f.webkitRelativePath || f.name);  // TOP/PERSON/photo.jpg: the person is the folder
    }
    $("#import-button").disabled = true;
    out.className = "meta"; out.removeAttribute("role"); out.textContent = "Importing… (every photo is read for its face)";
    try {
      const r = await api("POST", `/api/galleries/${encodeURIComponent(gallery)}/import`, fd);
      showImportReport(r);
      input.value = ""; $("#import-chosen").textContent = "";
      await reload();
    } catch (err) {
      out.className = "error"; out.setAttribute("role", "alert"); out.textContent = `Not imported: ${err.message}`;
      $("#import-table").hidden = true; $("#import-ignored").hidden = true;
    } finally { $("#import-button").disabled = false; }
  });
}

function showImportReport(r) {
  const s = r.summary;
  const out = $("#import-result");
  const problems = s.no_face + s.unreadable;
  const updated = r.people.filter((p) => p.attributes_updated).length;
  out.className = problems ? "notice" : "ok";  // a report, not a failure: the table says which photos
  out.setAttribute("role", "status");
  out.textContent = `Gallery ${r.gallery}${r.gallery_created ? " (new)" : ""}: ${s.people} people — ${s.created} created, `
    + `${s.people - s.created} already in the gallery (found by name`
    + `${updated ? `, ${updated} with attributes updated` : ""}); ${s.enrolled} photo(s) enrolled`
    + (s.already_enrolled ? `, ${s.already_enrolled} enrolled before (skipped)` : "")
    + `; ${s.no_face} without a usable face; ${s.unreadable} unreadable.` + (s.suppressed ? ` ${s.suppressed} suppressed (opt-out).` : "");
  // the reason without the name it may start with (the file's, or "<bytes>" for an upload)
  const reason = (name, why) => String(why).replace(new RegExp(`^(${[name, "<bytes>"].map((n) => n.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")).join("|")}): `), "");
  const files = (list) => list.length ? `<ul class="files">${list.map(([name, why]) => `<li><strong>${esc(name.split("/").pop())}</strong>: ${esc(reason(name, why))}</li>`).join("")}</ul>` : "—";
  $("#import-table tbody").innerHTML = r.people.map((p) => `<tr data-subject-id="${p.subject_id}" data-folder="${esc(p.folder)}">
    <td>${esc(p.label)}${p.label !== p.folder ? ` <span class="meta">(folder ${esc(p.folder)})</span>` : ""}</td>
    <td><a href="/subjects/${p.subject_id}">subject ${p.subject_id}</a> · ${p.created ? "created" : "already there"}</td>
    <td class="enrolled">${p.enrolled.length}${p.already_enrolled ? ` <span class="meta">(+${p.already_enrolled} before)</span>` : ""}</td>
    <td class="no-face">${files(p.no_face)}</td><td class="unreadable">${files(p.unreadable)}</td>
    <td>${[p.attributes_updated ? "attributes updated" : "", p.suppressed ? `${p.suppressed} suppressed (opt-out)` : "", ...p.warnings].filter(Boolean).map(esc).join("; ")}</td></tr>`).join("");
  $("#import-table").hidden = false;
  $("#import-ignored").hidden = !r.ignored.length;
  $("#import-ignored").textContent = r.ignored.length ? `Not imported (not in a person's folder): ${r.ignored.join(", ")}.` : "";
}

// ---- one subject ------------------------------------------------------------------------------------
async function initSubjectPage() {
  const page = $("#subject-page");
  if (!page) return;
  const id = page.dataset.subjectId;
  let why = {purpose: "", case_ref: ""};

  const load = async () => {
    const s = await api("GET", `/api/subjects/${id}`);
    $("#subject-title").textContent = s.label;
    $("#subject-meta").textContent = `Subject ${s.id} · gallery ${s.gallery} · ${s.faces} enrolled face(s) · added by ${s.created_by} at ${s.created_at.replace("T", " ")}`;
    $("#subject-attributes").innerHTML = Object.entries(s.attributes).map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`).join("");
    $("#enrolled").innerHTML = s.enrolled.map((f) => `<div class="cand" data-subject-face-id="${f.id}">
      ${f.thumbnail_url ? `<img src="${f.thumbnail_url}" alt="enrolled face ${f.id}">` : `<div class="nothumb">no thumbnail</div>`}
      <div class="src">${esc(f.source.split("/").pop())}</div><div class="fmr">quality ${f.quality.toFixed(2)}${f.quality_issues.length ? " (" + esc(f.quality_issues.join(", ")) + ")" : ""}</div>
      <button type="button" class="link" data-remove-face="${f.id}">remove</button></div>`).join("");
    $("#links").innerHTML = s.links.map((l) => l.kind === "face"
      ? `<div class="cand above" data-link-face="${l.id}">${l.thumbnail_url ? `<img src="${l.thumbnail_url}" alt="face ${l.id}">` : ""}
          <div class="score">face ${l.id}${l.collection ? " · " + esc(l.collection) : ""}</div>
          <div class="fmr">confirmed by ${esc(l.decided_by)}${l.score != null ? ` at ${l.score.toFixed(3)}` : ""}</div>
          ${l.photo_url ? `<a href="${photoPage(l.id, l.photo_url)}">open photo</a>` : ""}</div>`
      : `<div class="cand above" data-link-subject="${l.id}"><div class="score"><a href="/subjects/${l.id}">${esc(l.label || "subject " + l.id)}</a></div>
          <div class="fmr">subject in ${esc(l.gallery || "?")}; confirmed by ${esc(l.decided_by)}</div></div>`).join("");
    $("#links-empty").hidden = s.links.length > 0;
    return s;
  };

  $("#enrolled").addEventListener("click", async (e) => {
    const faceId = e.target.dataset?.removeFace;
    if (!faceId || !confirm("Remove this enrolled face (its embedding and thumbnail)?")) return;
    await api("DELETE", `/api/subject-faces/${faceId}?reason=${encodeURIComponent("removed from subject page")}`);
    await load();
  });

  $("#enrol-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const fd = new FormData();
    for (const f of $("#enrol-files").files) fd.append("files", f);
    const out = $("#enrol-result");
    $("#enrol-button").disabled = true;
    try {
      const r = await api("POST", `/api/subjects/${id}/faces`, fd);
      out.className = r.failed.length ? "error" : "ok";
      out.textContent = `Enrolled ${r.added.length} face(s).` + (r.failed.length ? ` Not enrolled: ${r.failed.map((f) => `${f[0]}: ${f[1]}`).join("; ")}.` : "")
        + (r.suppressed ? ` ${r.suppressed} suppressed (opt-out).` : "") + (r.warnings.length ? " " + r.warnings.join(" ") : "");
      $("#enrol-files").value = "";
      await load();
    } catch (err) { out.className = "error"; out.textContent = err.message; }
    finally { $("#enrol-button").disabled = false; }
  });

  await load();  // after the enrol handler is in place (a photo sent before the subject loads is still handled)
  const me = await api("GET", "/api/me");
  const picks = $("#subject-collections");
  if (!me.collections.length) picks.insertAdjacentHTML("beforeend", "<p>No collection granted to you yet.</p>");
  for (const name of me.collections) {
    picks.insertAdjacentHTML("beforeend", `<label class="check"><input type="checkbox" name="collections" value="${esc(name)}" checked> ${esc(name)}</label>`);
  }

  const form = $("#subject-search-form");
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const fd = new FormData(form);
    why = {purpose: fd.get("purpose"), case_ref: fd.get("case_ref")};
    $("#subject-include-weaker").value = "";  // asked for once, by the button: the next search is minimal again
    $("#subject-search-button").disabled = true;
    try {
      const r = await api("POST", `/api/subjects/${id}/search`, {...why, collections: fd.getAll("collections"), fusion: fd.get("fusion"),
        include_weaker: fd.get("include_weaker") === "true"});
      // kept in this tab: the photo page shows the score, and goes back to these results unsearched
      const back = `/subjects/${id}?results=${encodeURIComponent(r.view_token || "")}`;
      searchMemory.save(r.view_token, {result: r, ...why, back});
      if (r.view_token) history.replaceState(null, "", back);
      renderSubjectResults(r);
    } catch (err) {
      $("#subject-results").hidden = false;
      $("#subject-verdict").className = "verdict error"; $("#subject-verdict").textContent = err.message;
      $("#subject-candidates").innerHTML = "";
      weakerOffer.hide("subject-");
    } finally { $("#subject-search-button").disabled = false; }
  });

  weakerOffer.init("subject-", form, $("#subject-include-weaker"));  // as on the search page: only when asked (audited)

  const saved = searchMemory.load(new URLSearchParams(location.search).get("results"));
  if (saved) {  // back from a photo: the results as they were shown, not searched again
    why = {purpose: saved.purpose, case_ref: saved.case_ref};
    $("#subject-purpose").value = saved.purpose || "";
    $("#subject-case").value = saved.case_ref || "";
    renderSubjectResults(saved.result);
  }

  $("#subject-results").addEventListener("click", async (e) => {  // the leads and the weaker candidates
    const b = e.target.closest("button[data-decide]");
    if (!b) return;
    const card = b.closest(".cand");
    const note = card.querySelector("input.note")?.value || "";
    try {
      const d = await api("POST", `/api/subjects/${id}/decisions`, {decision: b.dataset.decide, face_id: Number(card.dataset.faceId),
        score: Number(card.dataset.score), note, ...why});
      card.dataset.decision = d.decision;
      card.querySelector(".decision").textContent = `${d.decision === "confirm" ? "Confirmed" : "Rejected"} by ${d.decided_by}`;
      await load();
    } catch (err) { card.querySelector(".decision").textContent = err.message; }
  });

  $("#remove-subject").addEventListener("click", async () => {
    if (!confirm("Remove this subject, its enrolled faces, thumbnails, attributes and decisions for good?")) return;
    const r = await api("DELETE", `/api/subjects/${id}?reason=${encodeURIComponent("removed from subject page")}`);
    $("#remove-result").textContent = `Removed: ${r.faces.length} enrolled face(s), ${r.thumbnails_deleted} thumbnail(s).`;
    location.href = "/subjects";
  });
}

function renderSubjectResults(r) {
  $("#subject-results").hidden = false;
  const verdict = $("#subject-verdict");
  verdict.className = "verdict " + (r.confident_match ? "leads" : "none");
  // the subject is the probe: its page can always search again, so the button is always live
  const {above, below} = weakerOffer.show("subject-", r, true);
  verdict.textContent = r.confident_match
    ? `${above.length} candidate lead(s) above the threshold — needs human review`
    : "No confident match: nobody in the searched collections scores above the threshold.";
  $("#subject-result-meta").textContent = `Searched ${r.faces_searched.toLocaleString()} faces in ${r.collections.join(", ") || "no collection"} (${r.fusion} fusion). ${r.threshold_rule}. ${r.warnings.join(" ")}`;
  $("#subject-candidates").innerHTML = above.map(subjectCandidateCard).join("");
  $("#subject-weaker-candidates").innerHTML = below.map(subjectCandidateCard).join("");
}

function subjectCandidateCard(c) {
  return `
    <div class="cand ${c.above_threshold ? "above" : "below"}" data-face-id="${c.face_id}" data-score="${c.similarity}" data-decision="${c.decision || ""}">
      ${c.thumbnail_url ? `<img src="${c.thumbnail_url}" alt="face ${c.face_id}">` : `<div class="nothumb">no thumbnail kept</div>`}
      <div class="score">${c.similarity.toFixed(3)} ${c.above_threshold ? "· above threshold" : "· below threshold"}</div>
      <div class="fmr">${esc(chanceWords(c))}</div>
      <div class="src">${esc(c.collection)} · face ${c.face_id} · <a href="${photoPage(c.face_id, c.photo_url)}">photo</a></div>
      <div class="decision">${c.decision ? (c.decision === "confirm" ? "Confirmed" : "Rejected") : ""}</div>
      <input class="note" placeholder="note (audited)" aria-label="note for face ${c.face_id}">
      <button type="button" data-decide="confirm">Confirm</button> <button type="button" class="link" data-decide="reject">Reject</button>
    </div>`;
}

document.addEventListener("DOMContentLoaded", () => { initSubjectsPage(); initSubjectPage(); });
