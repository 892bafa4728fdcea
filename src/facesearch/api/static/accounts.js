// Accounts: the admin page's user management and everyone's own account page (no inline script).
// Uses api(), esc() and $() from app.js (loaded first). Every action is audited on the server.
"use strict";

async function initUsers() {
  const table = $("#users-table");
  if (!table) return;
  const say = (text) => { $("#user-result").textContent = text; };
  const roles = ["investigator", "auditor", "admin"];
  const load = async () => {
    const users = await api("GET", "/api/users");
    const keys = await Promise.all(users.map((u) => api("GET", `/api/users/${encodeURIComponent(u.username)}/api-keys`)));
    table.querySelector("tbody").innerHTML = users.map((u, i) => {
      const name = esc(u.username);
      const role = `<select data-role-of="${name}" aria-label="role of ${name}">${roles.map((r) => `<option${r === u.role ? " selected" : ""}>${r}</option>`).join("")}</select>`;
      const grants = (u.grants || []).map((c) => `<span class="grant">${esc(c)} <button class="link" data-revoke-grant="${esc(c)}" data-user="${name}" title="revoke">revoke</button></span>`).join(" ") || "-";
      const live = keys[i].filter((k) => !k.revoked);
      const keyCells = live.map((k) => `<span class="key">#${k.id} ${esc(k.label)} <button class="link" data-revoke-key="${k.id}" data-user="${name}">revoke</button></span>`).join(" ") || "-";
      const toggle = u.active ? `<button data-deactivate="${name}" class="link">deactivate</button>` : `<button data-reactivate="${name}" class="link">reactivate</button>`;
      return `<tr data-user="${name}"><td>${name}</td><td>${role}</td><td>${u.active ? "yes" : "no"}</td><td>${grants}</td><td>${keyCells}</td><td>${toggle}</td></tr>`;
    }).join("");
    const cols = await api("GET", "/api/collections");
    $("#grant-collection").innerHTML = cols.map((c) => `<option>${esc(c.name)}</option>`).join("");
  };
  const act = async (promise, text) => {
    try { await promise; say(text); } catch (err) { say(err.message); }
    await load();
  };
  await load();
  table.addEventListener("click", async (e) => {
    const d = e.target.dataset || {};
    const user = encodeURIComponent(d.user || "");
    if (d.deactivate) await act(api("POST", `/api/users/${encodeURIComponent(d.deactivate)}/deactivate`), `Deactivated ${d.deactivate}.`);
    else if (d.reactivate) await act(api("POST", `/api/users/${encodeURIComponent(d.reactivate)}/reactivate`), `Reactivated ${d.reactivate}.`);
    else if (d.revokeGrant) await act(api("DELETE", `/api/collections/${encodeURIComponent(d.revokeGrant)}/grants/${user}`), `Revoked ${d.user}'s grant of ${d.revokeGrant}.`);
    else if (d.revokeKey) await act(api("DELETE", `/api/users/${user}/api-keys/${d.revokeKey}`), `Revoked API key ${d.revokeKey} of ${d.user}.`);
  });
  table.addEventListener("change", async (e) => {
    const name = e.target.dataset?.roleOf;
    if (name) await act(api("POST", `/api/users/${encodeURIComponent(name)}/role`, {role: e.target.value}), `${name} is now ${e.target.value}.`);
  });
  $("#new-user").addEventListener("submit", async (e) => {
    e.preventDefault();
    const fd = new FormData(e.target);
    await act(api("POST", "/api/users", Object.fromEntries(fd)).then(() => e.target.reset()), `Added ${fd.get("username")}.`);
  });
  $("#grant-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const fd = new FormData(e.target);
    await act(api("POST", `/api/collections/${encodeURIComponent(fd.get("collection"))}/grants`, {username: fd.get("username")}), `Granted ${fd.get("collection")} to ${fd.get("username")}.`);
  });
  $("#reset-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const fd = new FormData(e.target);
    await act(api("POST", `/api/users/${encodeURIComponent(fd.get("username"))}/password`, {password: fd.get("password")}).then(() => e.target.reset()), `Password of ${fd.get("username")} reset; their sessions ended.`);
  });
}

async function initAccount() {
  const keysTable = $("#own-keys");
  if (!keysTable) return;
  const load = async () => {
    const keys = await api("GET", "/api/me/api-keys");
    keysTable.querySelector("tbody").innerHTML = keys.map((k) => `<tr><td>${k.id}</td><td>${esc(k.label)}</td><td>${esc(k.created_at)}</td><td>${k.revoked ? "revoked" : "active"}</td></tr>`).join("");
  };
  await load();
  $("#own-password").addEventListener("submit", async (e) => {
    e.preventDefault();
    try { await api("POST", "/api/me/password", Object.fromEntries(new FormData(e.target))); $("#password-result").textContent = "Password changed."; e.target.reset(); }
    catch (err) { $("#password-result").textContent = err.message; }
  });
  $("#own-key").addEventListener("submit", async (e) => {
    e.preventDefault();
    try { const r = await api("POST", "/api/me/api-keys", Object.fromEntries(new FormData(e.target))); $("#key-result").textContent = `Your new key (shown once): ${r.api_key}`; e.target.reset(); await load(); }
    catch (err) { $("#key-result").textContent = err.message; }
  });
}

document.addEventListener("DOMContentLoaded", () => { initUsers(); initAccount(); });
