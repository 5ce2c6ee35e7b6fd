/* cxrq web client: uploads with progress, live status by long-poll, actions in place.
 * Plain JavaScript, served from this site (strict CSP: no inline script, no eval). Every page
 * works without it: forms post and the server redirects back with a message. */
(function () {
  "use strict";

  var body = document.body;
  var announcer = document.getElementById("announcer");

  function announce(text) {
    if (!announcer) return;
    announcer.textContent = "";
    window.setTimeout(function () { announcer.textContent = text; }, 60);
  }

  function sleep(ms) {
    return new Promise(function (resolve) { window.setTimeout(resolve, ms); });
  }

  function csrfToken(root) {
    var field = (root || document).querySelector("input[name=csrfmiddlewaretoken]");
    return field ? field.value : "";
  }

  function humanSize(bytes) {
    if (bytes >= 1048576) return (bytes / 1048576).toFixed(1) + " MB";
    if (bytes >= 1024) return Math.round(bytes / 1024) + " KB";
    return bytes + " bytes";
  }

  /* The words to show for a refused request: the server's own message when it sent one. */
  function errorText(status, payload) {
    if (payload && payload.error && payload.error.message) return payload.error.message;
    if (status === 403) return "The page has expired (its security token is no longer valid). Reload the page and try again.";
    if (status === 413) return "The file is larger than the server accepts.";
    if (status === 0) return "The server could not be reached. Check the connection and try again.";
    return "The server could not do this (HTTP " + status + "). Try again in a moment.";
  }

  function parseJson(text) {
    try { return JSON.parse(text); } catch (e) { return null; }
  }

  function sessionEnded() {
    var main = document.getElementById("main");
    if (document.getElementById("session-ended")) return;
    var p = document.createElement("p");
    p.id = "session-ended";
    p.className = "message message-error";
    p.setAttribute("role", "alert");
    p.appendChild(document.createTextNode("Your session has ended. "));
    var a = document.createElement("a");
    a.href = "/";
    a.textContent = "Sign in again";
    p.appendChild(a);
    main.insertBefore(p, main.firstChild);
  }

  /* ---------------------------------------------------------------- live status */

  /* The server words the wait (backend/web/selectors.py waiting_text): "No worker is running: …"
   * when none is, else the jobs ahead and the estimate from the workers' measured throughput. */
  function queueText(state) {
    return state.queue ? (state.waiting_text || "") : "";
  }

  /* A job's reference, as the API checks it (backend/jobs/reference.py): 1-64 letters, digits,
   * spaces and . _ - : / #, no space first or last. Empty: no reference. The server checks again. */
  var REFERENCE_CHARS = /^[\p{L}\p{N} ._\-:\/#]*$/u;
  function referenceProblem(value, max) {
    if (value === "") return "";
    var length = Array.from(value).length;
    if (length > max) return "At most " + max + " characters (this has " + length + ").";
    if (value.charAt(0) === " " || value.charAt(value.length - 1) === " ") return "No space at the start or the end.";
    if (!REFERENCE_CHARS.test(value)) return "Only letters, digits, spaces and . _ - : / # are allowed.";
    return "";
  }

  function listMessage(text) {
    var spot = document.getElementById("list-message");
    if (!spot) return null;
    spot.textContent = text || "";
    return spot;
  }

  var rows = {
    /* The list's rows, rendered by the server (GET /jobs/{id}/row): a job uploaded from this
     * page joins "Recent jobs" at once, and a row is renewed when its job changes state. */
    fetchRow: function (url) {
      var back = window.location.pathname + window.location.search;
      return fetch(url + "?next=" + encodeURIComponent(back), {
        credentials: "same-origin", headers: { Accept: "text/html" }, cache: "no-store"
      }).then(function (response) {
        if (response.status === 401) { sessionEnded(); return null; }
        return response.ok ? response.text() : null;
      }).then(function (html) {
        if (html === null) return null;
        var template = document.createElement("template");
        template.innerHTML = html; // rendered and escaped by the server's templates
        return template.content.querySelector("tr");
      }).catch(function () { return null; });
    },
    refresh: function (state) {
      var current = document.querySelectorAll('[data-job-row="' + state.id + '"]');
      if (!current.length || !state.row_url) return Promise.resolve();
      return this.fetchRow(state.row_url).then(function (fresh) {
        if (!fresh) return;
        current.forEach(function (row) {
          if (row.parentNode) row.parentNode.replaceChild(fresh.cloneNode(true), row);
        });
      });
    },
    insert: function (job) {
      var table = document.querySelector("#jobs-table[data-live-list]");
      if (!table) return Promise.resolve();
      if (document.querySelector('[data-job-row="' + job.id + '"]')) return this.refresh(job);
      return this.fetchRow(job.row_url).then(function (fresh) {
        if (!fresh || document.querySelector('[data-job-row="' + job.id + '"]')) return;
        var tbody = table.querySelector("tbody");
        tbody.insertBefore(fresh, tbody.firstChild);
        table.parentNode.hidden = false;
        var none = document.getElementById("no-jobs");
        if (none) none.hidden = true;
      });
    }
  };

  function statusLabel(state) {
    var label = state.status_label || state.status;
    return label.charAt(0).toUpperCase() + label.slice(1);
  }

  var panels = {
    /* Replace every rendered panel of this job with the server's current one. */
    latest: {},
    refresh: function (jobId) {
      var holders = document.querySelectorAll('[data-panel-for="' + jobId + '"]');
      if (!holders.length) return Promise.resolve();
      // Answers can arrive out of order: only the latest request's panel is shown.
      var ticket = (this.latest[jobId] || 0) + 1;
      this.latest[jobId] = ticket;
      var self = this;
      var url = holders[0].getAttribute("data-panel-url");
      return fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" }, cache: "no-store" })
        .then(function (response) {
          if (response.status === 401) { sessionEnded(); return null; }
          return response.ok ? response.text() : null;
        })
        .then(function (html) {
          if (html === null || self.latest[jobId] !== ticket) return;
          holders.forEach(function (holder) {
            var panel = holder.querySelector("[data-job-panel]");
            var wrapper = document.createElement("div");
            wrapper.innerHTML = html; // rendered and escaped by the server's templates
            var fresh = wrapper.querySelector("[data-job-panel]");
            if (!fresh) return;
            if (panel) panel.parentNode.replaceChild(fresh, panel);
            else holder.appendChild(fresh);
          });
        })
        .catch(function () { /* the next status change tries again */ });
    }
  };

  var watcher = {
    ids: {},
    known: {},
    etag: null,
    generation: 0,
    controller: null,
    url: body.getAttribute("data-watch-url"),
    wait: parseInt(body.getAttribute("data-wait") || "25", 10),

    add: function (jobId, status) {
      if (this.ids[jobId]) return;
      this.ids[jobId] = true;
      if (status) this.known[jobId] = status;
      this.restart();
    },

    restart: function () {
      this.generation += 1;
      this.etag = null;
      if (this.controller) this.controller.abort();
      this.loop(this.generation).catch(function () { /* a later change restarts it */ });
    },

    apply: function (state) {
      var previous = this.known[state.id];
      this.known[state.id] = state.status;
      document.querySelectorAll('[data-status-for="' + state.id + '"]').forEach(function (el) {
        el.textContent = statusLabel(state);
        el.className = "status status-" + state.status;
      });
      document.querySelectorAll('[data-queue-for="' + state.id + '"]').forEach(function (el) {
        el.textContent = queueText(state);
      });
      if (state.ended) {
        document.querySelectorAll('[data-job-row="' + state.id + '"] [data-cancel]').forEach(function (form) {
          form.parentNode.removeChild(form);
        });
        delete this.ids[state.id];
      }
      if (previous !== undefined && previous !== state.status) {
        var name = document.querySelector('[data-name-for="' + state.id + '"]');
        announce((name ? name.textContent + ": " : "Job: ") + statusLabel(state));
        panels.refresh(state.id);
        rows.refresh(state);
      }
    },

    loop: async function (generation) {
      var backoff = 1000;
      while (generation === this.generation) {
        var ids = Object.keys(this.ids);
        if (!ids.length) return;
        var started = Date.now();
        var headers = { Accept: "application/json" };
        if (this.etag) headers["If-None-Match"] = this.etag;
        this.controller = typeof AbortController === "function" ? new AbortController() : null;
        var response;
        try {
          response = await fetch(this.url + "?ids=" + ids.join(",") + "&wait=" + this.wait, {
            credentials: "same-origin",
            cache: "no-store",
            headers: headers,
            signal: this.controller ? this.controller.signal : undefined
          });
        } catch (e) {
          if (generation !== this.generation) return;
          await sleep(backoff);
          backoff = Math.min(backoff * 2, 30000);
          continue;
        }
        if (generation !== this.generation) return;
        if (response.status === 401) { sessionEnded(); return; }
        var quick = Date.now() - started < 1000;
        if (response.status === 304) {
          // Without the server's waiting edge (a bare WSGI host) answers come at once: slow down.
          if (quick) await sleep(2000);
          continue;
        }
        if (!response.ok) {
          await sleep(backoff);
          backoff = Math.min(backoff * 2, 30000);
          continue;
        }
        var payload;
        try {
          payload = await response.json();
        } catch (e) {
          // Aborted while reading (a newer watch replaced this one), or a broken answer.
          if (generation !== this.generation) return;
          await sleep(backoff);
          continue;
        }
        if (generation !== this.generation) return;
        backoff = 1000;
        this.etag = response.headers.get("ETag");
        var seen = {};
        var self = this;
        payload.jobs.forEach(function (state) { seen[state.id] = true; self.apply(state); });
        ids.forEach(function (id) { if (!seen[id]) delete self.ids[id]; });
        if (quick) await sleep(300);
      }
    }
  };

  /* ---------------------------------------------------------------- actions in place */

  /* Delete asks first: a modal <dialog> (keyboard: focus starts on "Keep it", Escape keeps the
   * job, focus goes back to the button that asked). Without <dialog> support, or without script,
   * the form goes to the server's confirmation page instead. */
  var dialog = document.getElementById("confirm-delete");
  var opener = null;
  if (dialog && typeof dialog.showModal === "function") {
    var confirmForm = dialog.querySelector("form");
    document.addEventListener("submit", function (event) {
      var form = event.target;
      if (!form.hasAttribute || !form.hasAttribute("data-delete")) return;
      event.preventDefault();
      confirmForm.action = form.action;
      confirmForm.setAttribute("data-job-id", form.getAttribute("data-delete"));
      confirmForm.querySelector("input[name=next]").value = form.querySelector("input[name=next]").value;
      dialog.querySelector("[data-confirm-name]").textContent = form.getAttribute("data-job-name");
      dialog.querySelector("[data-confirm-yes]").disabled = false;
      opener = form.querySelector("button");
      dialog.showModal();
    });
    dialog.querySelector("[data-dialog-close]").addEventListener("click", function () { dialog.close(); });
    dialog.addEventListener("close", function () {
      if (opener && document.contains(opener)) opener.focus();
      opener = null;
    });
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.classList || !form.classList.contains("js-action")) return;
    event.preventDefault();
    var panel = form.closest("[data-job-panel]") || form.closest("[data-job-row]");
    var jobId = form.getAttribute("data-job-id") ||
      (panel ? (panel.getAttribute("data-job-panel") || panel.getAttribute("data-job-row")) : null);
    var deleting = form.hasAttribute("data-confirm-delete");
    var button = form.querySelector("button");
    if (button) button.disabled = true;
    var xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.onload = function () {
      var payload = parseJson(xhr.responseText);
      if (deleting) { opener = null; dialog.close(); }
      if (xhr.status === 401) { sessionEnded(); return; }
      var message = xhr.status >= 200 && xhr.status < 300 ? payload.message : errorText(xhr.status, payload);
      if (payload && payload.job && deleting) {
        // One message: the job's panel says it was deleted where there is one, else the list does.
        watcher.apply(payload.job);
        document.querySelectorAll('[data-job-row="' + jobId + '"]').forEach(function (row) {
          row.parentNode.removeChild(row);
        });
        if (document.querySelector('[data-panel-for="' + jobId + '"]')) {
          panels.refresh(jobId).then(function () {
            var note = document.querySelector('[data-panel-for="' + jobId + '"] [data-deleted-note]');
            if (note) note.focus();
          });
        } else {
          var spot = listMessage(message);
          if (spot) spot.focus();
        }
        return;
      }
      if (payload && payload.job) {
        watcher.apply(payload.job);
        panels.refresh(payload.job.id).then(function () { showMessage(payload.job.id, message); });
      } else {
        if (button) button.disabled = false;
        showMessage(jobId, message);
      }
      announce(message);
    };
    xhr.onerror = function () {
      if (deleting) { opener = null; dialog.close(); }
      if (button) button.disabled = false;
      showMessage(jobId, errorText(0, null));
    };
    xhr.send(new FormData(form));
  });

  function showMessage(jobId, text) {
    var spot = jobId && document.querySelector('[data-message-for="' + jobId + '"]');
    if (spot) spot.textContent = text || "";
    else listMessage(text);
  }

  /* ---------------------------------------------------------------- uploads */

  function setupUpload(form) {
    var input = document.getElementById("images");
    var zone = document.getElementById("dropzone");
    var chosenList = document.getElementById("selected-files");
    var formError = document.getElementById("upload-error");
    var uploads = document.getElementById("uploads");
    var uploadsSection = document.getElementById("uploads-section");
    var maxBytes = parseInt(form.getAttribute("data-max-bytes"), 10);
    var maxSize = form.getAttribute("data-max-size");
    var oneReference = document.getElementById("one-reference");
    var maxReference = parseInt(document.getElementById("reference").getAttribute("maxlength"), 10);
    var chosen = []; // {file, reference, id}
    var counter = 0;
    // With script each chosen file has its own reference field; the single one is for the form without.
    oneReference.hidden = true;
    document.getElementById("reference").disabled = true;

    function tooLarge(file) { return file.size > maxBytes; }

    function wrap(files) {
      return Array.prototype.slice.call(files).map(function (file) {
        counter += 1;
        return { file: file, reference: "", id: "ref-" + counter };
      });
    }

    function checkReference(item, field, error) {
      var problem = referenceProblem(item.reference, maxReference);
      error.textContent = problem;
      error.hidden = !problem;
      if (problem) field.setAttribute("aria-invalid", "true");
      else field.removeAttribute("aria-invalid");
      return !problem;
    }

    function showChosen() {
      chosenList.textContent = "";
      chosenList.hidden = chosen.length === 0;
      chosen.forEach(function (item) {
        var file = item.file;
        var li = document.createElement("li");
        li.className = "chosen-file";
        var name = document.createElement("span");
        name.className = "chosen-name";
        name.textContent = file.name + " (" + humanSize(file.size) + ")";
        li.appendChild(name);
        if (tooLarge(file)) {
          var warn = document.createElement("strong");
          warn.className = "field-error-inline";
          warn.textContent = " too large: the limit is " + maxSize;
          li.appendChild(warn);
        }
        var label = document.createElement("label");
        label.setAttribute("for", item.id);
        label.textContent = "Reference for " + file.name;
        var optional = document.createElement("span");
        optional.className = "muted";
        optional.textContent = " (optional)";
        label.appendChild(optional);
        var field = document.createElement("input");
        field.type = "text";
        field.id = item.id;
        field.value = item.reference;
        field.maxLength = maxReference;
        field.autocomplete = "off";
        field.spellcheck = false;
        field.setAttribute("data-reference-input", "");
        var error = document.createElement("p");
        error.id = item.id + "-error";
        error.className = "field-error";
        error.hidden = true;
        field.setAttribute("aria-describedby", "reference-hint " + error.id);
        field.addEventListener("input", function () {
          item.reference = field.value;
          if (field.hasAttribute("aria-invalid")) checkReference(item, field, error);
        });
        field.addEventListener("change", function () { checkReference(item, field, error); });
        item.check = function () { return checkReference(item, field, error); };
        item.field = field;
        var row = document.createElement("div");
        row.className = "reference-field";
        row.appendChild(label);
        row.appendChild(field);
        row.appendChild(error);
        li.appendChild(row);
        chosenList.appendChild(li);
      });
      formError.hidden = true;
    }

    input.addEventListener("change", function () {
      chosen = wrap(input.files);
      showChosen();
    });
    ["dragenter", "dragover"].forEach(function (name) {
      zone.addEventListener(name, function (e) { e.preventDefault(); zone.classList.add("dragging"); });
    });
    ["dragleave", "drop"].forEach(function (name) {
      zone.addEventListener(name, function (e) { e.preventDefault(); zone.classList.remove("dragging"); });
    });
    zone.addEventListener("drop", function (e) {
      if (!e.dataTransfer || !e.dataTransfer.files.length) return;
      chosen = chosen.concat(wrap(e.dataTransfer.files));
      showChosen();
      announce(chosen.length + (chosen.length === 1 ? " file chosen" : " files chosen"));
    });

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (!chosen.length) {
        formError.textContent = "Choose at least one image to upload.";
        formError.hidden = false;
        input.focus();
        return;
      }
      var invalid = chosen.filter(function (item) { return !item.check(); });
      if (invalid.length) {
        formError.textContent = invalid.length === 1
          ? "A reference is not valid: correct it, or leave it empty."
          : invalid.length + " references are not valid: correct them, or leave them empty.";
        formError.hidden = false;
        invalid[0].field.focus();
        return;
      }
      var priority = form.querySelector("input[name=priority]:checked").value;
      var pending = chosen.map(function (item) {
        return { file: item.file, reference: item.reference, card: newCard(item.file, item.reference) };
      });
      chosen = [];
      input.value = "";
      showChosen();
      uploadsSection.hidden = false;
      announce(pending.length + (pending.length === 1 ? " upload started" : " uploads started"));
      // Two at a time: progress stays meaningful and the browser keeps connections for status.
      var next = 0;
      function worker() {
        if (next >= pending.length) return Promise.resolve();
        var item = pending[next++];
        return send(item.file, item.reference, priority, item.card).then(worker);
      }
      worker();
      worker();
    });

    function newCard(file, reference) {
      var li = document.createElement("li");
      li.className = "upload-card";
      var title = document.createElement("h3");
      title.textContent = reference ? reference + " · " + file.name : file.name;
      li.appendChild(title);
      var line = document.createElement("p");
      line.className = "upload-line";
      var progress = document.createElement("progress");
      progress.max = 100;
      progress.value = 0;
      progress.setAttribute("aria-label", "Upload progress of " + file.name);
      line.appendChild(progress);
      var state = document.createElement("span");
      state.className = "upload-state";
      state.textContent = " Waiting to upload";
      line.appendChild(state);
      li.appendChild(line);
      var error = document.createElement("p");
      error.className = "field-error";
      error.setAttribute("role", "alert");
      error.hidden = true;
      li.appendChild(error);
      uploads.appendChild(li);
      return { root: li, title: title, progress: progress, state: state, error: error, line: line };
    }

    function fail(card, text) {
      card.line.hidden = true;
      card.error.textContent = text;
      card.error.hidden = false;
    }

    function send(file, reference, priority, card) {
      if (tooLarge(file)) {
        fail(card, "Not uploaded: " + humanSize(file.size) + " is over the limit of " + maxSize + ".");
        return Promise.resolve();
      }
      if (file.size === 0) {
        fail(card, "Not uploaded: the file is empty.");
        return Promise.resolve();
      }
      return new Promise(function (resolve) {
        var data = new FormData();
        data.append("csrfmiddlewaretoken", csrfToken(form));
        data.append("priority", priority);
        data.append("reference", reference || "");
        data.append("images", file, file.name);
        var xhr = new XMLHttpRequest();
        xhr.open("POST", form.action);
        xhr.setRequestHeader("Accept", "application/json");
        xhr.upload.addEventListener("progress", function (e) {
          if (!e.lengthComputable) return;
          var percent = Math.round((e.loaded * 100) / e.total);
          card.progress.value = percent;
          card.state.textContent = " Uploading " + percent + "%";
        });
        xhr.addEventListener("load", function () {
          var payload = parseJson(xhr.responseText);
          if (xhr.status === 401) sessionEnded();
          if (xhr.status >= 200 && xhr.status < 300 && payload && payload.job) {
            attach(card, payload.job, payload.deduplicated);
          } else {
            fail(card, "Not accepted: " + errorText(xhr.status, payload));
            announce(file.name + ": not accepted");
          }
          resolve();
        });
        xhr.addEventListener("error", function () {
          fail(card, "Not uploaded: " + errorText(0, null));
          resolve();
        });
        card.state.textContent = " Uploading 0%";
        xhr.send(data);
      });
    }

    function attach(card, job, deduplicated) {
      card.progress.value = 100;
      card.root.setAttribute("data-upload-for", job.id);
      card.title.setAttribute("data-name-for", job.id);
      card.line.hidden = true;
      var link = document.createElement("p");
      var a = document.createElement("a");
      a.href = job.url;
      a.textContent = "Open this job on its own page";
      link.appendChild(a);
      if (deduplicated) {
        var note = document.createElement("span");
        note.className = "muted";
        note.textContent = " (the same image was sent before: this is its job)";
        link.appendChild(note);
      }
      var holder = document.createElement("div");
      holder.setAttribute("data-panel-for", job.id);
      holder.setAttribute("data-panel-url", job.panel_url);
      card.root.appendChild(holder);
      card.root.appendChild(link);
      if (job.reference && card.title.textContent.indexOf(job.reference) !== 0) {
        // The job had a reference already (the same image sent before, or a DICOM accession number).
        card.title.textContent = job.reference + " · " + card.title.textContent;
      }
      panels.refresh(job.id).then(function () {
        if (!job.ended) watcher.add(job.id, job.status);
      });
      rows.insert(job);
      announce(card.title.textContent + ": uploaded, " + statusLabel(job));
    }
  }

  var uploadForm = document.getElementById("upload-form");
  if (uploadForm) setupUpload(uploadForm);

  /* Jobs rendered by the server that have not ended yet: watch them too. */
  document.querySelectorAll("[data-watch]").forEach(function (el) {
    var id = el.getAttribute("data-watch");
    var status = document.querySelector('[data-status-for="' + id + '"]');
    var word = status ? status.className.replace(/.*status-/, "") : undefined;
    watcher.add(id, word);
  });
})();
