// IUGC pages: sortable tables, copy buttons, confirmations, the upload progress bar and
// the submission list refreshing itself. Plain JavaScript, no build step.
"use strict";

function sortTable(th) {
  const table = th.closest("table"), body = table.tBodies[0];
  const index = Array.from(th.parentNode.children).indexOf(th);
  const numeric = th.dataset.sort === "num";
  const ascending = !th.classList.contains("asc");
  table.querySelectorAll("th").forEach((h) => h.classList.remove("asc", "desc"));
  th.classList.add(ascending ? "asc" : "desc");
  const key = (row) => {
    const cell = row.children[index];
    const raw = cell.dataset.value !== undefined ? cell.dataset.value : cell.textContent.trim();
    if (!numeric) return raw.toLowerCase();
    const value = parseFloat(raw);
    return Number.isNaN(value) ? null : value;
  };
  const rows = Array.from(body.rows);
  rows.sort((a, b) => {
    const x = key(a), y = key(b);
    if (x === y) return 0;
    if (x === null) return 1;          // missing values last, either way
    if (y === null) return -1;
    return (x < y ? -1 : 1) * (ascending ? 1 : -1);
  });
  rows.forEach((row) => body.appendChild(row));
}

function addCopyButtons() {
  document.querySelectorAll("pre.copyable").forEach((pre) => {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "copy-button";
    button.textContent = "Copy";
    button.addEventListener("click", () => {
      navigator.clipboard.writeText(pre.firstChild.textContent.trim()).then(() => { button.textContent = "Copied"; });
    });
    pre.appendChild(button);
  });
}

function setupUpload(form) {
  const bar = form.querySelector(".progress"), fill = bar.querySelector(".bar"), label = bar.querySelector(".label");
  const message = form.querySelector(".upload-message"), button = form.querySelector("button[type=submit]");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const xhr = new XMLHttpRequest();
    xhr.open("POST", form.action || window.location.href);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.setRequestHeader("X-CSRFToken", form.querySelector("[name=csrf_token]").value);
    xhr.upload.addEventListener("progress", (e) => {
      if (!e.lengthComputable) return;
      const percent = Math.round((100 * e.loaded) / e.total);
      fill.style.width = percent + "%";
      label.textContent = percent < 100 ? percent + "%" : "checking the archive…";
    });
    xhr.addEventListener("load", () => {
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch (e) { body = { error: "the server answered " + xhr.status }; }
      if (xhr.status === 202) {
        message.textContent = "Submission " + body.id + " accepted.";
        window.location.assign(body.url);
      } else {
        message.textContent = body.error || "the upload failed (" + xhr.status + ")";
        message.className = "upload-message error";
        button.disabled = false;
        bar.hidden = true;
      }
    });
    xhr.addEventListener("error", () => {
      message.textContent = "the connection was lost during the upload; try again";
      message.className = "upload-message error";
      button.disabled = false;
    });
    bar.hidden = false;
    button.disabled = true;
    message.textContent = "";
    message.className = "upload-message";
    xhr.send(new FormData(form));
  });
}

function formatRuntime(seconds) {
  return seconds === null || seconds === undefined ? "—" : Math.round(seconds) + " s";
}

function pollSubmissions(root) {
  const url = root.dataset.poll;
  const tick = () => {
    fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then((r) => (r.ok ? r.json() : Promise.reject(r.status)))
      .then((data) => {
        let pending = false;
        data.submissions.forEach((s) => {
          const row = root.querySelector('tr[data-id="' + s.id + '"]');
          if (!row) { if (!s.done) pending = true; return; }
          if (!s.done) pending = true;
          const status = row.querySelector('[data-field="status"] .badge');
          status.textContent = s.status;
          status.className = "badge st-" + s.status;
          row.querySelector('[data-field="queue_position"]').textContent = (s.queue_position || "—") +
            (s.waiting_for && s.waiting_for !== "its turn" ? ", waiting for " + s.waiting_for : "");
          row.querySelector('[data-field="runtime_seconds"]').textContent = formatRuntime(s.runtime_seconds);
          const score = row.querySelector('[data-field="score"]');
          if (s.results_hidden) score.textContent = "hidden until published";
          else score.textContent = s.score === null ? "—" : s.score.toFixed(4);
          const error = row.querySelector('[data-field="error"]');
          const re = s.reevaluation;
          error.textContent = (s.error ? (s.failure ? s.failure + ": " : "") + s.error : "") +
            (re ? "re-evaluation " + re.status + (re.status === "failed" ? " (" + re.failure + ")" : "") + "; this result stands" : "");
          if (s.done) { const cancel = row.querySelector('[data-field="cancel"]'); if (cancel) cancel.textContent = ""; }
        });
        if (pending) window.setTimeout(tick, 2000);
      })
      .catch(() => window.setTimeout(tick, 5000));
  };
  window.setTimeout(tick, 1000);
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("table.sortable th[data-sort]").forEach((th) => th.addEventListener("click", () => sortTable(th)));
  document.querySelectorAll("form[data-confirm]").forEach((form) =>
    form.addEventListener("submit", (e) => { if (!window.confirm(form.dataset.confirm)) e.preventDefault(); }));
  document.querySelectorAll("form[data-upload]").forEach(setupUpload);
  document.querySelectorAll("[data-poll]").forEach(pollSubmissions);
  addCopyButtons();
});
