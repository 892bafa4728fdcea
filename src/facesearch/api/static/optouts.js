// facesearch web app: the admin page's opt-out list, with withdrawal (audited by the server).
// Loaded after app.js (whose helpers $, esc and api it uses). No framework, no CDN, no inline script.
"use strict";

async function initOptouts() {
  const table = $("#optouts-table");
  if (!table) return;
  const say = (text) => { $("#optouts-status").textContent = text; };
  const load = async () => {
    const rows = await api("GET", "/api/optouts");
    table.querySelector("tbody").innerHTML = rows.length
      ? rows.map((o) => `<tr data-optout="${o.id}"><td>${o.id}</td><td>${esc(o.reference)}</td><td>${esc(o.created_by)}</td>`
          + `<td>${esc(String(o.created_at).slice(0, 19).replace("T", " "))}</td>`
          + `<td><button class="link" data-withdraw="${o.id}">withdraw</button></td></tr>`).join("")
      : `<tr><td colspan="5" class="meta">No opt-outs.</td></tr>`;
  };
  table.addEventListener("click", async (e) => {
    const id = e.target.dataset?.withdraw;
    if (!id) return;
    const reason = prompt(`Withdraw opt-out ${id}? The person's faces become findable again. Reason (kept in the audit log):`);
    if (reason === null) return;
    try {
      await api("DELETE", `/api/optouts/${encodeURIComponent(id)}?reason=${encodeURIComponent(reason)}`);
      say(`Opt-out ${id} withdrawn.`);
      await load();
    } catch (err) { say(err.message); }
  });
  // app.js registers opt-outs and reports in #optout-result: refresh the list when it does
  const result = $("#optout-result");
  if (result) new MutationObserver(() => load().catch((err) => say(err.message))).observe(result, {childList: true, characterData: true, subtree: true});
  try { await load(); } catch (err) { say(err.message); }
}

document.addEventListener("DOMContentLoaded", () => { initOptouts(); });
