// facesearch web app: the search page (1:N search and 1:1 compare). Loaded after app.js (its
// helpers $, esc, api, drawBoxes, searchMemory, photoPage, rateWords and videoTime).
"use strict";

let probeImage = null;  // the chosen photo as a data URL, kept with the search for "back to the results"

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
    try {
      const r = await api("POST", "/api/search", fd);
      r.picked = fd.has("face");
      searchMemory.save(r.view_token, {result: r, purpose: fd.get("purpose"), case_ref: fd.get("case_ref"),
        collections: fd.getAll("collections"), probe_image: probeImage});
      if (r.view_token) history.replaceState(null, "", `/?results=${encodeURIComponent(r.view_token)}`);
      renderResults(r, true);
    } catch (err) { renderError(err); }
    finally { $("#search-button").disabled = false; }
  });
  // Weaker candidates (below the threshold: most likely strangers) only when asked: the same search
  // again, with include_weaker=true stated in the request and recorded in the audit log.
  $("#show-weaker").addEventListener("click", () => {
    $("#include-weaker").value = "true";
    form.requestSubmit();
  });
  restoreSearch(new URLSearchParams(location.search).get("results"));
}

// Back from a photo: the results of that search again, from this tab's memory (not searched again).
function restoreSearch(token) {
  const saved = searchMemory.load(token);
  if (!saved) return;
  $("#purpose").value = saved.purpose || "";
  $("#case_ref").value = saved.case_ref || "";
  document.querySelectorAll("#collection-picks input[name=collections]").forEach((box) => {
    box.checked = (saved.collections || []).includes(box.value);
  });
  probeImage = saved.probe_image;
  if (probeImage) $("#probe-view").innerHTML = `<img id="probe-img" alt="the photo searched with" src="${probeImage}">`;
  renderResults(saved.result, false);
  $("#restored").hidden = false;
}

function showProbe() {
  const file = $("#probe").files[0];
  const view = $("#probe-view");
  $("#face-index").value = "";
  $("#restored").hidden = true;
  probeImage = null;
  if (!file) { view.innerHTML = ""; return; }
  view.innerHTML = `<img id="probe-img" alt="the photo to search with" src="${URL.createObjectURL(file)}">`;
  const reader = new FileReader();
  reader.addEventListener("load", () => { probeImage = reader.result; });
  reader.readAsDataURL(file);
}

// Which face of the probe photo was searched, in the words of this page (pick it on the photo).
function probeWords(r) {
  const p = r.probe;
  if (!p) return "";
  const quality = `quality ${p.quality.toFixed(2)}${p.quality_issues.length ? " (" + p.quality_issues.join(", ") + ")" : ""}`;
  if (p.faces_in_image < 2) return `Face looked for: the only one in the photo; ${quality}.`;
  const which = r.picked ? `the one you picked (face ${p.chosen + 1}, green box)` : "the largest, most central one (green box)";
  return `The photo shows ${p.faces_in_image} faces. Face looked for: ${which}; ${quality}. `
    + "To search for someone else in it, pick their face on the photo.";
}

function drawProbeFaces(result, live) {
  const img = $("#probe-img");
  if (!img || !result.probe_faces || result.probe_faces.length < 2) return;
  const chosen = result.probe ? result.probe.chosen : -1;
  const label = (i) => `${i === chosen ? "searched: " : "search for "}face ${i + 1} of ${result.probe_faces.length}`;
  // after "back to the results" the photo is a picture only: picking needs the file chosen again
  drawBoxes(img, result.probe_faces, {chosen, label, onPick: live ? (i) => {
    $("#face-index").value = i; $("#search-form").requestSubmit();
  } : null});
}

function renderError(err) {
  $("#results").hidden = false;
  $("#verdict").className = "verdict error";
  $("#verdict").setAttribute("role", "alert");
  $("#verdict").textContent = err.message;
  $("#candidates").innerHTML = "";
  $("#result-meta").textContent = "";
  $("#probe-meta").textContent = "";
  $("#weaker").hidden = true;
  $("#weaker-shown").hidden = true;
}

function candidateCard(c, r) {
  const status = c.above_threshold ? "above the threshold" : "below the threshold";
  const frames = c.track_faces && c.track_faces.length > 1
    ? `<div class="frames">best of ${c.track_hits || 1} matching frame(s), ${c.track_faces.length} in the track</div>` : "";
  const video = c.media === "video" ? `<div class="when">video at ${videoTime(c.timestamp_s)}`
    + `${c.track_span ? ` · on screen ${videoTime(c.track_span[0])}–${videoTime(c.track_span[1])}` : ""}</div>${frames}` : "";
  return `<a class="cand ${c.above_threshold ? "above" : "below"}" href="${photoPage(c.face_id, c.photo_url)}" data-face-id="${c.face_id}"
      aria-label="candidate ${c.rank}: similarity ${c.similarity.toFixed(3)}, ${status}, in ${esc(c.collection)}; open the photo">
      ${c.thumbnail_url ? `<img src="${c.thumbnail_url}" alt="face ${c.face_id}">` : `<div class="nothumb">no thumbnail kept</div>`}
      <div class="score">${c.similarity.toFixed(3)} · ${status}</div>
      <div class="fmr">${esc(rateWords(c))}</div>${video}
      <div class="src">${esc(c.collection)} · face ${c.face_id}</div>
    </a>`;
}

function renderResults(r, live) {
  $("#results").hidden = false;
  const verdict = $("#verdict");
  verdict.removeAttribute("role");
  verdict.className = "verdict " + (r.confident_match ? "leads" : "none");
  const above = r.candidates.filter((c) => c.above_threshold);
  verdict.textContent = r.confident_match
    ? `${above.length} candidate lead(s) above the threshold — needs human review`
    : "No confident match: nobody in the searched collections scores above the threshold.";
  $("#probe-meta").textContent = probeWords(r);
  const rule = r.threshold_rule.charAt(0).toUpperCase() + r.threshold_rule.slice(1);
  // one count of the faces searched, said once: the rule and the estimates use the same number
  $("#result-meta").textContent = `Searched ${r.faces_searched.toLocaleString()} faces in ${r.collections.join(", ") || "no collection"}. ${rule}. ${r.warnings.join(" ")}`;
  drawProbeFaces(r, live);
  const weakerCount = r.weaker_count ?? r.weaker_withheld ?? 0;
  const weaker = $("#weaker");
  weaker.hidden = !(weakerCount > 0) || r.include_weaker;
  $("#weaker-text").textContent = `${weakerCount} weaker candidate(s) below the threshold are not shown: `
    + "most likely they are other people.";
  $("#show-weaker").hidden = !live;
  $("#weaker-again").hidden = live;
  $("#weaker-shown").hidden = !r.include_weaker;
  // above the threshold first; weaker ones (only when asked for) after them, in their own group
  const below = [...r.candidates.filter((c) => !c.above_threshold), ...(r.weaker || [])];  // (a list of its own, if the API gives one)
  $("#candidates").innerHTML = above.map((c) => candidateCard(c, r)).join("");
  $("#weaker-candidates").innerHTML = below.map((c) => candidateCard(c, r)).join("");
  $("#weaker-group").hidden = below.length === 0;
  renderTracks([...above, ...below], r);
  // a thumbnail whose grant has expired (an hour) says so instead of showing a broken image
  document.querySelectorAll("#results .cand img").forEach((img) => img.addEventListener("error", () => {
    const note = document.createElement("div");
    note.className = "nothumb";
    note.textContent = "no longer viewable: search again";
    img.replaceWith(note);
  }, {once: true}));
}

// A video candidate is one face track (its best face); the track's other faces only on demand, as
// a look of their own: POST /api/views with the search's purpose and case (audited, then granted).
function renderTracks(candidates, r) {
  const tracks = candidates.filter((c) => c.track_faces && c.track_faces.length > 1);
  const box = $("#tracks");
  box.hidden = tracks.length === 0;
  box.replaceChildren(...tracks.map((c) => {
    const others = c.track_faces.filter((f) => f !== c.face_id);
    const row = document.createElement("div");
    row.className = "track";
    row.dataset.faceId = c.face_id;
    const say = document.createElement("p");
    say.className = "meta";
    say.textContent = `Candidate ${c.rank} (face ${c.face_id}) is one of ${c.track_faces.length} faces of one person's `
      + `track in a video (${c.collection}). `;
    const button = document.createElement("button");
    button.type = "button";
    button.className = "link";
    button.textContent = `Show the other ${others.length} face(s) of this track`;
    button.setAttribute("aria-label", `Show the other ${others.length} face(s) of the track of candidate ${c.rank} (recorded in the audit log)`);
    const faces = document.createElement("div");
    faces.className = "grid track-faces";
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        const saved = searchMemory.load(r.view_token) || {};
        const grant = await api("POST", "/api/views", {face_ids: others, purpose: saved.purpose || $("#purpose").value,
          case_ref: saved.case_ref || $("#case_ref").value});
        faces.innerHTML = others.map((f) => {
          const urls = grant.faces[f] || grant.faces[String(f)] || {};
          return `<a class="cand" href="${photoPage(f, urls.photo_url)}" data-face-id="${f}" aria-label="face ${f} of the track; open its frame">`
            + `<img src="${urls.thumbnail_url}" alt="face ${f} of the track"><div class="src">face ${f}</div></a>`;
        }).join("");
        faces.querySelectorAll("img").forEach((img) => img.addEventListener("error", () => {
          const note = document.createElement("div");
          note.className = "nothumb";
          note.textContent = "no thumbnail kept";
          img.replaceWith(note);
        }, {once: true}));
        button.hidden = true;
      } catch (err) {
        say.className = "error";
        say.textContent = err.message;
        button.disabled = false;
      }
    });
    say.appendChild(button);
    row.append(say, faces);
    return row;
  }));
}

// ---- compare (1:1) ------------------------------------------------------------------------------------
function initVerify() {
  const form = $("#verify-form");
  if (!form) return;
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const out = $("#verify-result");
    out.hidden = false;
    out.className = "verdict";
    out.removeAttribute("role");
    out.textContent = "Comparing…";
    $("#verify-faces").hidden = true;
    try {
      const r = await api("POST", "/api/verify", new FormData(form));
      out.classList.add(r.same_person ? "leads" : "none");
      out.textContent = `${r.same_person ? "Same person: a lead for human review" : "Not the same person (no evidence of a match)"} — similarity ${r.similarity.toFixed(3)}; ${r.false_match_words}.`;
      $("#verify-meta").textContent = r.threshold_rule.charAt(0).toUpperCase() + r.threshold_rule.slice(1) + ".";
      showComparedFaces(r);
    } catch (err) {
      out.classList.add("error");
      out.setAttribute("role", "alert");
      out.textContent = err.message;
    }
  });
}

// Both photos as compared, each with its faces boxed and the compared one marked.
function showComparedFaces(r) {
  const files = [$("#verify-a").files[0], $("#verify-b").files[0]];
  const names = ["First photo", "Second photo"];
  $("#verify-faces").replaceChildren(...r.faces.map((f, k) => {
    const fig = document.createElement("figure");
    fig.className = "compared";
    const wrap = document.createElement("div");
    wrap.className = "photo-wrap";
    const img = document.createElement("img");
    img.alt = `${names[k]}: ${f.faces_in_image} face(s), face ${f.chosen + 1} compared`;
    img.src = URL.createObjectURL(files[k]);
    wrap.appendChild(img);
    const caption = document.createElement("figcaption");
    const which = f.faces_in_image > 1 ? `face ${f.chosen + 1} of ${f.faces_in_image} compared (yellow box)` : "its only face compared";
    caption.textContent = `${names[k]}: ${which}; quality ${f.quality.toFixed(2)}`;
    fig.append(wrap, caption);
    const boxes = f.face_boxes && f.face_boxes.length ? f.face_boxes : [f.box];
    drawBoxes(img, boxes, {chosen: f.face_boxes && f.face_boxes.length ? f.chosen : 0,
      label: (i) => `${names[k]}, face ${i + 1}${i === f.chosen ? " (compared)" : ""}`});
    return fig;
  }));
  $("#verify-faces").hidden = false;
}

document.addEventListener("DOMContentLoaded", () => { initSearch(); initVerify(); });
