// servewise console: posts JSON to /api and writes server text with textContent only (never innerHTML).
"use strict";

async function postJSON(url, body) {
  const resp = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error(describeError(data, resp.status));
  return data;
}

function describeError(data, status) {
  const d = data && data.detail;
  if (Array.isArray(d)) return d.map((e) => `${(e.loc || []).slice(1).join(".")}: ${e.msg}`).join("\n");
  return `${status}: ${typeof d === "string" ? d : JSON.stringify(data)}`;
}

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (cls) node.className = cls;
  return node;
}

function formFields(form) {
  const out = {};
  for (const [k, v] of new FormData(form).entries()) if (k !== "proposal_ids") out[k] = v;
  return out;
}

// "replicas=2, max_num_seqs=128" per proposal -> {proposal_id: {knob: value}}; the server re-validates.
function parseEdits(ids) {
  const edits = {};
  for (const input of document.querySelectorAll("input.edits")) {
    const pid = input.dataset.proposal;
    if (!ids.includes(pid) || !input.value.trim()) continue;
    edits[pid] = {};
    for (const part of input.value.split(",")) {
      const [knob, raw] = part.split("=").map((x) => x && x.trim());
      if (!knob || raw === undefined || raw === "") throw new Error(`${pid}: expected knob=value, got "${part.trim()}"`);
      let value = raw;
      try { value = JSON.parse(raw); } catch (_) { /* a plain string such as a GPU id */ }
      edits[pid][knob] = value;
    }
  }
  return edits;
}

function wireStartRun() {
  const button = document.getElementById("start-run");
  if (!button) return;
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      const data = await postJSON(button.dataset.api, {});
      window.location.assign(`/runs/${encodeURIComponent(data.run_id)}`);
    } catch (err) {
      document.getElementById("start-error").textContent = err.message;
      button.disabled = false;
    }
  });
}

function wireDecisions() {
  const error = document.getElementById("decide-error");
  const approve = document.getElementById("approve-form");
  const reject = document.getElementById("reject-form");
  const submit = async (form, body) => {
    for (const b of document.querySelectorAll(".decide button")) b.disabled = true;
    error.textContent = "";
    try {
      await postJSON(form.dataset.api, body);
      window.location.reload();
    } catch (err) {
      error.textContent = err.message;
      for (const b of document.querySelectorAll(".decide button")) b.disabled = false;
    }
  };
  if (approve) approve.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const ids = [...document.querySelectorAll("input[name=proposal_ids]:checked")].map((i) => i.value);
    if (ids.length === 0) { error.textContent = "select at least one proposal (or reject)"; return; }
    let edits;
    try { edits = parseEdits(ids); } catch (err) { error.textContent = err.message; return; }
    submit(approve, { ...formFields(approve), proposal_ids: ids, edits });
  });
  if (reject) reject.addEventListener("submit", (ev) => { ev.preventDefault(); submit(reject, formFields(reject)); });
}

async function loadFindings() {
  const box = document.getElementById("findings");
  if (!box) return;
  try {
    const resp = await fetch(box.dataset.api);
    const data = await resp.json();
    if (!resp.ok) throw new Error(describeError(data, resp.status));
    box.replaceChildren();
    if (data.findings.length === 0) { box.append(el("p", "No findings: every analyzer passed.", "hint")); return; }
    const table = el("table");
    table.className = "findings";
    const head = table.createTHead().insertRow();
    for (const h of ["severity", "deployment", "finding", "summary", "evidence"]) head.append(el("th", h));
    const body = table.createTBody();
    for (const f of data.findings) {
      const row = body.insertRow();
      const evidence = f.evidence.filter((e) => e.value !== null).map((e) => `${e.signal}=${Number(e.value.toPrecision(4))}`).join(", ");
      for (const text of [f.severity, `${f.ref.namespace}/${f.ref.name}`, f.kind, f.summary, evidence]) {
        row.insertCell().textContent = text;
      }
    }
    box.append(table, el("p", `window ${data.window}, analysed ${new Date(data.analysed_at * 1000).toLocaleTimeString()}`, "hint"));
  } catch (err) {
    box.replaceChildren(el("p", `analysis failed: ${err.message}`, "error"));
  }
}

function wireChat() {
  const form = document.getElementById("chat-form");
  if (!form) return;
  const transcript = document.getElementById("transcript");
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const input = form.elements.message;
    const message = input.value;
    transcript.append(el("div", `> ${message}`, "me"));
    input.value = "";
    try {
      const data = await postJSON(form.dataset.api, { message });
      transcript.append(el("pre", data.answer));
    } catch (err) {
      transcript.append(el("pre", err.message, "error"));
    }
  });
}

function autoRefresh() {
  const head = document.querySelector("[data-refresh]");
  if (head) setTimeout(() => window.location.reload(), Number(head.dataset.refresh) * 1000);
}

document.addEventListener("DOMContentLoaded", () => {
  wireStartRun();
  wireDecisions();
  loadFindings();
  wireChat();
  autoRefresh();
});
