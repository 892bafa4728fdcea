// facesearch web app: clusters of unknown faces (list, run, merge; one cluster: split, move, remove, name, subject).
// Loaded after app.js (whose helpers $, esc, api, photoPage and searchMemory it uses). No framework, no CDN.
"use strict";

function clusterTitle(c) {
  return c.name ? `${c.name} (cluster ${c.id})` : `Cluster ${c.id}`;
}

function showStatus(el, ok, text) {
  el.className = ok ? "ok" : "error";
  el.setAttribute("role", ok ? "status" : "alert");
  el.textContent = text;
}

function runWords(r) {
  const secs = (r.timings.total ?? 0).toFixed(2);
  const what = r.mode === "none" ? "Nothing to do: no new faces since the last run."
    : r.mode === "incremental" ? `Incremental run: ${r.faces_processed} new face(s) placed in ${secs} s (${r.new_clusters.length} new cluster(s), ${r.grown.length} grown).`
    : `Full run: ${r.faces_processed} face(s) clustered in ${secs} s (${r.reason}).`;
  return `${what} ${r.clusters} cluster(s), ${r.in_clusters} face(s) in clusters, ${r.unassigned} unassigned.`
    + (r.suppressed ? ` ${r.suppressed} face(s) not clustered (opt-out).` : "");
}

// ---- the clusters page -------------------------------------------------------------------------------
async function initClustersPage() {
  const page = $("#clusters-page");
  if (!page) return;
  const select = $("#cluster-collection");
  const selected = new Set();
  const mergeButton = $("#merge-button");
  const refreshSelection = () => {
    mergeButton.disabled = selected.size < 2;
    for (const card of document.querySelectorAll(".cluster-card")) {
      card.classList.toggle("selected", selected.has(Number(card.dataset.clusterId)));
    }
  };

  const load = async () => {
    const name = select.value;
    if (!name) return;  // the collections have not arrived yet
    sessionStorage.setItem("clusters.collection", name);
    history.replaceState(null, "", `/clusters?collection=${encodeURIComponent(name)}`);
    const o = await api("GET", `/api/collections/${encodeURIComponent(name)}/clusters`);
    selected.clear();
    const last = o.last_run ? ` Last run: ${o.last_run.mode}, by ${o.last_run.ran_by} at ${o.last_run.ran_at.replace("T", " ")}.` : " Never clustered.";
    $("#cluster-summary").textContent = `${o.total_clusters} cluster(s); ${o.in_clusters} of ${o.faces} face(s) in clusters, ${o.unassigned} unassigned.${last}`;
    $("#clusters-empty").hidden = o.clusters.length > 0;
    $("#clusters").innerHTML = o.clusters.map((c) => `
      <div class="cluster-card" data-cluster-id="${c.id}" data-size="${c.size}">
        <header>
          <label class="check"><input type="checkbox" data-select="${c.id}" aria-label="select cluster ${c.id}"> select</label>
          <a href="/clusters/${c.id}" class="title">${esc(clusterTitle(c))}</a>
          <span class="size">${c.size} face(s)${c.pinned ? `, ${c.pinned} placed by a person` : ""}</span>
          ${c.subject_id ? `<a class="subject" href="/subjects/${c.subject_id}">subject ${c.subject_id}</a>` : ""}
        </header>
        <div class="samples">${c.sample_thumbnails.map((u, i) => `<a href="/clusters/${c.id}"><img src="${u}" alt="face ${c.samples[i]}" loading="lazy"></a>`).join("")}</div>
      </div>`).join("");
    refreshSelection();
    loadSuggestions(name);  // not awaited: the cluster list (and its buttons) never wait for it
  };
  select.addEventListener("change", load);
  initSuggestions(load);

  $("#clusters").addEventListener("change", (e) => {
    const id = Number(e.target.dataset?.select);
    if (!id) return;
    if (e.target.checked) selected.add(id); else selected.delete(id);
    refreshSelection();
  });

  $("#cluster-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const out = $("#cluster-run");
    if (!select.value) { showStatus(out, false, "Wait for the list of collections, then choose one."); return; }
    $("#cluster-now").disabled = true;
    out.className = "meta"; out.textContent = "Clustering…";
    try {
      const r = await api("POST", `/api/collections/${encodeURIComponent(select.value)}/clusters/run`, {full: $("#cluster-full").checked});
      showStatus(out, true, runWords(r));
      out.dataset.mode = r.mode;
      await load();
    } catch (err) { showStatus(out, false, err.message); }
    finally { $("#cluster-now").disabled = false; }
  });

  $("#merge-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const out = $("#merge-result");
    try {
      const r = await api("POST", "/api/clusters/merge", {cluster_ids: [...selected]});
      showStatus(out, true, `Merged cluster(s) ${r.merged.join(", ")} into cluster ${r.cluster_id} (${r.faces_moved} face(s) moved).`);
      await load();
    } catch (err) { showStatus(out, false, err.message); }
  });

  // the lists load after every handler is in place: a form sent before they arrive is still handled here
  const collections = await api("GET", "/api/collections");
  if (!collections.length) {
    $("#cluster-summary").textContent = "No collection granted to you yet.";
    $("#cluster-now").disabled = true;
    return;
  }
  select.innerHTML = collections.map((c) => `<option>${esc(c.name)}</option>`).join("");
  const wanted = page.dataset.collection || sessionStorage.getItem("clusters.collection");
  if (wanted && collections.some((c) => c.name === wanted)) select.value = wanted;
  await load();
}

// ---- suggestions: "these two clusters may be one person", "this face may belong to cluster N" -----------
function thumbs(urls) {
  return urls.map((u) => `<img src="${u}" alt="" loading="lazy">`).join("");
}

async function loadSuggestions(collection) {
  const list = $("#suggestion-list");
  if (!list) return;
  let s;
  try { s = await api("GET", `/api/collections/${encodeURIComponent(collection)}/clusters/suggestions?limit=20`); }
  catch (err) { showStatus($("#suggestion-result"), false, err.message); return; }
  const merges = s.merges.map((m) => `
    <div class="suggestion" data-kind="merge" data-a="${m.cluster_a}" data-b="${m.cluster_b}">
      <header><strong>Clusters <a href="/clusters/${m.cluster_a}">${m.cluster_a}</a> (${m.size_a} faces) and
        <a href="/clusters/${m.cluster_b}">${m.cluster_b}</a> (${m.size_b} faces) may be one person</strong></header>
      <div class="pair"><div class="samples">${thumbs(m.sample_thumbnails_a)}</div><div class="samples">${thumbs(m.sample_thumbnails_b)}</div></div>
      <p class="meta evidence">Average over all their faces: ${esc(m.average.words)}. Best pair: ${esc(m.best.words)}.</p>
      <button type="button" data-answer="accept">Accept: merge</button> <button type="button" data-answer="reject">Reject</button>
    </div>`);
  const attaches = s.attaches.map((a) => `
    <div class="suggestion" data-kind="attach" data-face="${a.face_id}" data-cluster="${a.cluster_id}">
      <header><strong>Unassigned face ${a.face_id} may belong to cluster <a href="/clusters/${a.cluster_id}">${a.cluster_id}</a>
        (${a.cluster_size} faces)</strong></header>
      <div class="pair"><div class="samples"><img src="${a.thumbnail_url}" alt="face ${a.face_id}" loading="lazy"></div>
        <div class="samples">${thumbs(a.sample_thumbnails)}</div></div>
      <p class="meta evidence">${a.support} of its nearest neighbours are in that cluster. Best: ${esc(a.best.words)}.</p>
      <button type="button" data-answer="accept">Accept: move it in</button> <button type="button" data-answer="reject">Reject</button>
    </div>`);
  list.innerHTML = [...merges, ...attaches].join("");
  $("#suggestions-empty").hidden = merges.length + attaches.length > 0;
}

function initSuggestions(reload) {
  const list = $("#suggestion-list");
  if (!list) return;
  list.addEventListener("click", async (e) => {
    const answer = e.target.dataset?.answer;
    const card = e.target.closest(".suggestion");
    if (!answer || !card) return;
    const accept = answer === "accept";
    const out = $("#suggestion-result");
    try {
      if (card.dataset.kind === "merge") {
        const a = Number(card.dataset.a), b = Number(card.dataset.b);
        const r = await api("POST", "/api/clusters/suggestions/merge", {cluster_a: a, cluster_b: b, accept});
        showStatus(out, true, accept ? `Merged clusters ${a} and ${b} into cluster ${r.cluster_id}.`
          : `Clusters ${a} and ${b} will not be suggested together again.`);
      } else {
        const f = Number(card.dataset.face), c = Number(card.dataset.cluster);
        await api("POST", "/api/clusters/suggestions/attach", {face_id: f, cluster_id: c, accept});
        showStatus(out, true, accept ? `Face ${f} moved into cluster ${c}.`
          : `Face ${f} will not be suggested for cluster ${c} again.`);
      }
      await reload();
    } catch (err) { showStatus(out, false, err.message); }
  });
}

// ---- one cluster ----------------------------------------------------------------------------------------
async function initClusterPage() {
  const page = $("#cluster-page");
  if (!page) return;
  const id = Number(page.dataset.clusterId);
  const selected = new Set();
  const refresh = () => {
    $("#selected-count").textContent = `${selected.size} face(s) selected`;
    for (const b of [$("#split-button"), $("#remove-button")]) b.disabled = selected.size === 0;
    $("#move-button").disabled = selected.size === 0 || !$("#move-target").value;
    for (const card of document.querySelectorAll(".cluster-face")) {
      card.classList.toggle("selected", selected.has(Number(card.dataset.faceId)));
    }
  };

  const load = async () => {
    let c;
    try { c = await api("GET", `/api/clusters/${id}`); } catch (err) {
      $("#cluster-title").textContent = `Cluster ${id}`;
      showStatus($("#cluster-meta"), false, err.message);
      $("#cluster-faces").innerHTML = "";
      return null;
    }
    $("#cluster-title").textContent = clusterTitle(c);
    rememberCluster(c);
    $("#back-link").href = `/clusters?collection=${encodeURIComponent(c.collection)}`;
    $("#cluster-meta").className = "meta";
    $("#cluster-meta").innerHTML = `${c.size} face(s) in collection ${esc(c.collection)}${c.pinned ? `, ${c.pinned} placed by a person` : ""} · created by ${esc(c.created_by)}`
      + (c.subject_id ? ` · <a href="/subjects/${c.subject_id}" id="subject-link">subject ${c.subject_id}</a>` : "");
    if (document.activeElement !== $("#cluster-name")) $("#cluster-name").value = c.name || "";
    selected.clear();
    $("#cluster-faces").innerHTML = c.faces.map((f) => `
      <label class="cand cluster-face" data-face-id="${f.face_id}">
        <input type="checkbox" data-face="${f.face_id}" aria-label="select face ${f.face_id}">
        ${f.thumbnail_url ? `<img src="${f.thumbnail_url}" alt="face ${f.face_id}">` : `<div class="nothumb">no thumbnail kept</div>`}
        <div class="fmr">face ${f.face_id} · quality ${f.quality.toFixed(2)}${f.pinned ? ` · <span class="pin">placed by ${esc(f.assigned_by)}</span>` : ""}</div>
        <a href="${photoPage(f.face_id, f.photo_url)}">photo</a>
      </label>`).join("");
    refresh();
    return c;
  };

  $("#cluster-faces").addEventListener("change", (e) => {
    const faceId = Number(e.target.dataset?.face);
    if (!faceId) return;
    if (e.target.checked) selected.add(faceId); else selected.delete(faceId);
    refresh();
  });
  $("#move-target").addEventListener("input", refresh);

  // words(r) -> HTML made of numbers and fixed text only
  const edit = async (method, url, body, words) => {
    const out = $("#edit-result");
    try {
      const r = await api(method, url, body);
      await load();
      out.className = "ok"; out.setAttribute("role", "status"); out.innerHTML = words(r);
    } catch (err) { showStatus(out, false, err.message); }
  };
  $("#split-button").addEventListener("click", () => edit("POST", `/api/clusters/${id}/split`, {face_ids: [...selected]},
    (r) => `Split ${r.faces.length} face(s) into new cluster ${r.cluster_id}. <a href="/clusters/${r.cluster_id}">Open it</a>`));
  $("#move-button").addEventListener("click", () => {
    const target = Number($("#move-target").value);
    edit("POST", `/api/clusters/${target}/faces`, {face_ids: [...selected]},
      (r) => `Moved ${r.faces.length} face(s) to cluster ${r.cluster_id}.`);
  });
  $("#remove-button").addEventListener("click", () => edit("POST", `/api/clusters/${id}/unassign`, {face_ids: [...selected]},
    (r) => `Removed ${r.faces.length} face(s) from the cluster; later runs leave them out.`));

  $("#name-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const c = await api("PUT", `/api/clusters/${id}/name`, {name: $("#cluster-name").value});
      showStatus($("#name-result"), true, c.name ? `Named "${c.name}".` : "Name cleared.");
      $("#cluster-title").textContent = clusterTitle(c);
    } catch (err) { showStatus($("#name-result"), false, err.message); }
  });

  $("#subject-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const out = $("#subject-result");
    $("#subject-button").disabled = true;
    try {
      const label = $("#subject-label").value.trim();
      const r = await api("POST", `/api/clusters/${id}/subject`, {gallery: $("#subject-gallery").value.trim(), ...(label ? {label} : {})});
      out.className = "ok"; out.setAttribute("role", "status");
      out.innerHTML = `Subject <a href="/subjects/${r.subject_id}" id="new-subject-link">${esc(r.label)}</a> in gallery ${esc(r.gallery)}: ${r.enrolled.length} face(s) enrolled`
        + (r.suppressed ? `, ${r.suppressed} suppressed (opt-out)` : "") + ".";
      await load();
    } catch (err) { showStatus(out, false, err.message); }
    finally { $("#subject-button").disabled = false; }
  });
  // the cluster loads after every handler is in place: a form sent before it arrives is still handled here
  await load();
  try {
    const galleries = await api("GET", "/api/galleries");
    $("#cluster-gallery-names").innerHTML = galleries.map((g) => `<option value="${esc(g.name)}">`).join("");
  } catch (err) { /* the gallery list is a convenience only */ }
}

// What a face's photo page says of the cluster that showed it, kept in this tab under the view grant
// of that look (as a search keeps its results): the cluster and the way back to it.
function rememberCluster(c) {
  const token = new URLSearchParams(String(c.faces[0]?.photo_url || "").split("?")[1] || "").get("view");
  searchMemory.save(token, {back: `/clusters/${c.id}`, cluster: {id: c.id, title: clusterTitle(c), collection: c.collection,
    size: c.size, faces: c.faces.map((f) => ({face_id: f.face_id, pinned: f.pinned, assigned_by: f.assigned_by}))}});
}

document.addEventListener("DOMContentLoaded", () => { initClustersPage(); initClusterPage(); });
