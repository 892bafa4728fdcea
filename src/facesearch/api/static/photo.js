// facesearch web app: the photo of a face, under the view grant of the search, subject or cluster
// view that led here (?view=...). Loaded after app.js (its helpers $, esc, api, drawBoxes,
// searchMemory, videoTime and rateWords). Whatever is refused or gone is said in words: no broken
// image, no script error.
"use strict";

// The server's refusal, said so that the person reading it knows what to do next.
function photoRefusal(message) {
  if (/view grant/i.test(message)) {
    return "This face can be opened only from the search, subject or cluster page that showed it (for an hour), "
      + `and this link carries no valid view grant. Search again to see it. (${message})`;
  }
  if (/may see|not in a collection/i.test(message)) {
    return "This face cannot be shown: it was erased, the person opted out, or its collection is not granted "
      + `to you. (${message})`;
  }
  return message;
}

function photoFail(message) {
  const meta = $("#photo-meta");
  meta.className = "error";
  meta.setAttribute("role", "alert");
  meta.textContent = photoRefusal(message);
  $("#photo-figure").hidden = true;
}

function photoFacts(face, found) {
  const rows = [];
  if (found) {
    const c = found;
    rows.push(["Score", `${c.similarity.toFixed(3)} · ${c.above_threshold ? "above" : "below"} the threshold`
      + (c.rank ? ` · rank ${c.rank}` : "")]);
    if (c.false_match_words || c.false_match_rate == null) rows.push(["False-match estimate", rateWords(c)]);
  }
  rows.push(["Collection", face.collection]);
  rows.push(["Source", face.source_name || "uploaded file (its name is not kept)"]);
  rows.push(["Captured", face.captured_at ? `${face.captured_at} (camera clock, from the photo)` : "not known (the file records no capture time)"]);
  if (face.media === "video") {
    rows.push(["Video frame", `at ${videoTime(face.timestamp_s)}`]);
    if (face.track_span) rows.push(["On screen", `${videoTime(face.track_span[0])}–${videoTime(face.track_span[1])} (face track ${face.track_id})`]);
  } else {
    rows.push(["Faces in the photo", String(face.image_faces.length)]);
  }
  rows.push(["Face quality", `${face.quality.toFixed(2)}${face.quality_issues.length ? " (" + face.quality_issues.join(", ") + ")" : ""}`]);
  return rows.map(([k, v]) => `<div class="field"><dt>${esc(k)}</dt><dd>${esc(v)}</dd></div>`).join("");
}

async function initPhoto() {
  const page = $("#photo-page");
  if (!page) return;
  const id = page.dataset.faceId;
  // the view grant of the search, subject or cluster that led here: the API records this look under it
  const view = new URLSearchParams(location.search).get("view") || "";
  const search = searchMemory.load(view);
  const back = $("#back-to-results");
  if (search) {
    back.href = search.back || `/?results=${encodeURIComponent(view)}`;
    back.hidden = false;
  } else if (history.length > 1) {
    back.textContent = "← Back";
    back.href = "#";
    back.addEventListener("click", (e) => { e.preventDefault(); history.back(); });
    back.hidden = false;
  }
  let face;
  try { face = await api("GET", `/api/faces/${id}?view=${encodeURIComponent(view)}`); }
  catch (err) { photoFail(err.message); return; }
  if (face.media === "video") $("#photo-title").textContent = `Video frame of face ${id}`;
  const found = search ? search.result.candidates.find((c) => String(c.face_id) === id) : null;
  $("#photo-meta").textContent = found
    ? `Candidate ${found.rank} of the search for ${search.case_ref} (${search.purpose}).`
    : `Face ${id}, opened under the view grant that led here.`;
  $("#photo-facts").innerHTML = photoFacts(face, found);
  $("#photo-facts").hidden = false;
  // The photo is fetched, not linked: a refusal or a missing file is a message, never a broken image.
  let blob;
  try {
    const res = await fetch(face.photo_url, {credentials: "same-origin"});
    if (!res.ok) {
      const body = res.headers.get("content-type")?.includes("json") ? await res.json() : {detail: await res.text()};
      throw new Error(formatDetail(body.detail) || `the photo could not be loaded (${res.status})`);
    }
    blob = await res.blob();
  } catch (err) { photoFail(err.message); return; }
  const img = document.createElement("img");
  img.id = "photo";
  img.alt = face.media === "video" ? `video frame at ${videoTime(face.timestamp_s)} with face ${id} boxed`
    : `photo with face ${id} boxed`;
  img.addEventListener("error", () => photoFail("the photo could not be shown (not an image a browser can display)"), {once: true});
  img.src = URL.createObjectURL(blob);
  $("#photo-wrap").replaceChildren(img);
  const ids = face.image_faces.map((f) => String(f.face_id));
  drawBoxes(img, face.image_faces.map((f) => f.box), {chosen: ids.indexOf(id),
    label: (i) => (ids[i] === id ? `face ${id}, the one looked for` : `another face (${ids[i]})`)});
  $("#photo-caption").textContent = face.image_faces.length > 1
    ? `Face ${id} is in the thick yellow box; the other faces of the photo are in grey.`
    : `Face ${id} is in the yellow box.`;
  $("#photo-figure").hidden = false;
  initErase(face, id, img);
}

function initErase(face, id, img) {
  const panel = $("#erase-panel");
  if (!panel) return;  // admins only
  panel.hidden = false;
  $("#erase-image").addEventListener("click", async () => {
    if (!confirm("Erase this photo and all its faces for good?")) return;
    try {
      const r = await api("POST", "/api/erase", {images: [face.image_id], reason: "erased from photo view"});
      $("#erase-result").textContent = `Erased ${r.faces.length} face(s) and ${r.images.length} photo(s).`;
      img.remove();
      $("#photo-wrap").replaceChildren();
    } catch (err) { $("#erase-result").textContent = err.message; }
  });
  $("#erase-face").addEventListener("click", async () => {
    if (!confirm("Erase this face for good?")) return;
    try {
      const r = await api("POST", "/api/erase", {faces: [Number(id)], reason: "erased from photo view"});
      $("#erase-result").textContent = `Erased ${r.faces.length} face(s).`;
    } catch (err) { $("#erase-result").textContent = err.message; }
  });
}

document.addEventListener("DOMContentLoaded", initPhoto);
