/* Media page: upload a video (drag-and-drop or the file input) with its upload progress,
   follow its conversion by polling GET /videos/{id}, play or download the mp3, delete.
   window.mediaNotified(event) lets a notification stream refresh a video at once. */
(function () {
  "use strict";
  var POLL_MS = 1000;
  var BADGES = { queued: "unknown", converting: "info", done: "up", failed: "down" };
  var $ = function (id) { return document.getElementById(id); };

  /** Videos still converting, by id, whose rows the poller refreshes. */
  var pending = {};
  /** The video the upload box follows after its upload (its conversion progress). */
  var following = null;
  var polling = false;

  function pendingStatus(status) { return status === "queued" || status === "converting"; }

  /* The same sizes and lengths as the server writes (web/media.rs). */
  function humanSize(bytes) {
    if (bytes < 1000) { return bytes + " B"; }
    var units = ["kB", "MB", "GB", "TB"];
    var value = bytes / 1000;
    var unit = 0;
    while (value >= 1000 && unit + 1 < units.length) { value /= 1000; unit += 1; }
    return value.toFixed(1) + " " + units[unit];
  }
  function length(ms) {
    var secs = Math.floor((ms + 500) / 1000);
    var rest = secs % 60;
    return Math.floor(secs / 60) + ":" + (rest < 10 ? "0" : "") + rest;
  }

  /** `2 Dec 2026, 04:30 UTC`, as the server writes times (its `when` filter). */
  function when(rfc3339) {
    var d = new Date(rfc3339);
    if (isNaN(d.getTime())) { return rfc3339; }
    var months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    var two = function (n) { return (n < 10 ? "0" : "") + n; };
    return d.getUTCDate() + " " + months[d.getUTCMonth()] + " " + d.getUTCFullYear() + ", " +
      two(d.getUTCHours()) + ":" + two(d.getUTCMinutes()) + " UTC";
  }

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  /** A video's row, as the server renders it (templates/media.html). */
  function row(v) {
    var li = el("li", "video-item");
    li.id = "video-" + v.video_id;
    li.dataset.videoId = v.video_id;
    li.dataset.status = v.status;
    var head = el("div", "video-head");
    head.append(el("h3", "video-name", v.file_name),
      el("span", "badge badge-" + (BADGES[v.status] || "unknown") + " video-status", v.status));
    li.appendChild(head);
    var meta = el("p", "video-meta muted small");
    var time = el("time", "", when(v.created_at));
    time.dateTime = v.created_at;
    meta.append(humanSize(v.video_size) + (v.duration_ms != null ? " \u00b7 " + length(v.duration_ms) : "") +
      " \u00b7 uploaded ", time);
    li.appendChild(meta);
    if (pendingStatus(v.status)) {
      var bar = el("progress", "video-progress", v.progress + "%");
      bar.max = 100;
      bar.value = v.progress;
      bar.setAttribute("aria-label", "Conversion of " + v.file_name);
      li.appendChild(bar);
    }
    if (v.status === "failed") {
      li.appendChild(el("p", "video-error", v.error || "The conversion failed."));
    }
    var actions = el("div", "video-actions");
    if (v.status === "done" && v.mp3_id) {
      var url = "/download?fid=" + encodeURIComponent(v.mp3_id);
      var audio = el("audio");
      audio.controls = true;
      audio.preload = "none";
      audio.src = url;
      audio.setAttribute("aria-label", "The soundtrack of " + v.file_name);
      li.appendChild(audio);
      var link = el("a", "btn btn-secondary btn-small video-download", "Download mp3");
      link.href = url;
      link.setAttribute("download", "");
      actions.appendChild(link);
    }
    var del = el("button", "btn btn-secondary btn-small video-delete", "Delete");
    del.type = "button";
    del.dataset.videoId = v.video_id;
    actions.appendChild(del);
    li.appendChild(actions);
    return li;
  }

  function showEmpty() {
    $("videos-empty").hidden = $("video-list").children.length > 0;
  }

  /** Puts `v`'s row in the list (replacing the one shown), and follows it while it converts. */
  function show(v) {
    var old = $("video-" + v.video_id);
    // An unchanged row stays, so a playing <audio> is never interrupted.
    if (old && old.dataset.status === v.status && !pendingStatus(v.status)) { return; }
    var fresh = row(v);
    if (old) { old.replaceWith(fresh); } else { $("video-list").prepend(fresh); }
    showEmpty();
    if (pendingStatus(v.status)) { pending[v.video_id] = true; } else { delete pending[v.video_id]; }
    if (following === v.video_id) { followProgress(v); }
    poll();
  }

  function showUploadError(message) {
    var box = $("upload-error");
    box.textContent = message || "";
    box.hidden = !message;
  }

  function setUploadState(text, percent) {
    $("upload-progress-box").hidden = false;
    $("upload-state").textContent = text;
    $("upload-progress").value = percent;
  }

  /** The upload box, once the upload is done: the conversion of what was uploaded. */
  function followProgress(v) {
    if (v.status === "done") {
      setUploadState(v.file_name + ": converted. Its mp3 is below.", 100);
      following = null;
    } else if (v.status === "failed") {
      setUploadState(v.file_name + ": the conversion failed: " + (v.error || "no reason given") + ".", 100);
      following = null;
    } else {
      setUploadState(v.file_name + ": " + (v.status === "queued" ? "waiting for a converter" : "converting") +
        " (" + v.progress + " %)", v.progress);
    }
  }

  /** Refreshes one video; a video that is gone loses its row. */
  async function refresh(id) {
    var r = await Agora.call("GET", "/videos/" + encodeURIComponent(id));
    if (r.ok && r.body) {
      show(r.body);
    } else if (r.status === 404) {
      delete pending[id];
      var gone = $("video-" + id);
      if (gone) { gone.remove(); showEmpty(); }
    }
    return r;
  }

  /** One loop for every converting video, until none is left. */
  async function poll() {
    if (polling) { return; }
    polling = true;
    try {
      while (Object.keys(pending).length) {
        await new Promise(function (resolve) { setTimeout(resolve, POLL_MS); });
        var ids = Object.keys(pending);
        for (var i = 0; i < ids.length; i++) {
          var r = await refresh(ids[i]);
          if (r.status === 401) {
            $("videos-error").textContent = Agora.problemText(r, "Your videos could not be followed");
            $("videos-error").hidden = false;
            pending = {};
          }
        }
      }
    } finally {
      polling = false;
    }
  }

  function upload(file) {
    if (!file) { return; }
    showUploadError("");
    following = null;
    setUploadState("Uploading " + file.name + "\u2026 (0 %)", 0);
    var body = new FormData();
    body.append("file", file, file.name);
    var xhr = new XMLHttpRequest();
    xhr.open("POST", "/upload");
    xhr.setRequestHeader("Accept", "application/json, application/problem+json");
    var csrf = Agora.csrfHeader();
    Object.keys(csrf).forEach(function (name) { xhr.setRequestHeader(name, csrf[name]); });
    xhr.upload.addEventListener("progress", function (ev) {
      if (ev.lengthComputable) {
        var percent = Math.floor((ev.loaded / ev.total) * 100);
        setUploadState("Uploading " + file.name + "\u2026 (" + percent + " %)", percent);
      }
    });
    xhr.addEventListener("load", function () {
      var parsed = null;
      try { parsed = xhr.responseText ? JSON.parse(xhr.responseText) : null; } catch (e) { parsed = null; }
      if (xhr.status === 202 && parsed && parsed.video_id) {
        following = parsed.video_id;
        setUploadState(file.name + ": uploaded, waiting for a converter (0 %)", 0);
        refresh(parsed.video_id);
        return;
      }
      $("upload-progress-box").hidden = true;
      showUploadError(Agora.problemText({ ok: false, status: xhr.status, body: parsed }, file.name + " was not uploaded"));
    });
    xhr.addEventListener("error", function () {
      $("upload-progress-box").hidden = true;
      showUploadError(Agora.problemText({ ok: false, status: 0, body: null }, file.name + " was not uploaded"));
    });
    xhr.send(body);
  }

  async function remove(button) {
    var id = button.dataset.videoId;
    button.disabled = true;
    var r = await Agora.call("DELETE", "/videos/" + encodeURIComponent(id), undefined);
    if (r.status === 204 || r.status === 404) {
      delete pending[id];
      var gone = $("video-" + id);
      if (gone) { gone.remove(); }
      showEmpty();
      return;
    }
    button.disabled = false;
    $("videos-error").textContent = Agora.problemText(r, "The video was not deleted");
    $("videos-error").hidden = false;
  }

  /**
   * The hook for the notification stream: call it with an "mp3 ready" or "conversion failed"
   * notification (an object, or a MessageEvent whose data is its JSON) carrying `video_id`,
   * possibly under `payload`. The video's row is refreshed at once. Answers whether it was one.
   */
  function mediaNotified(event) {
    var data = event && event.data !== undefined ? event.data : event;
    if (typeof data === "string") {
      try { data = JSON.parse(data); } catch (e) { return false; }
    }
    var id = data && (data.video_id || (data.payload && data.payload.video_id));
    if (!id || !$("video-list")) { return false; }
    refresh(String(id));
    return true;
  }
  window.mediaNotified = mediaNotified;

  function init() {
    var root = $("media");
    if (!root) { return; } // a visitor: nothing to drive
    document.querySelectorAll("#video-list .video-item").forEach(function (li) {
      if (pendingStatus(li.dataset.status)) { pending[li.dataset.videoId] = true; }
    });
    poll();

    var input = $("video-file");
    input.addEventListener("change", function () {
      upload(input.files[0]);
      input.value = "";
    });
    $("upload-form").addEventListener("submit", function (ev) { ev.preventDefault(); });

    var zone = $("drop-zone");
    ["dragenter", "dragover"].forEach(function (name) {
      zone.addEventListener(name, function (ev) {
        ev.preventDefault();
        zone.classList.add("is-over");
      });
    });
    ["dragleave", "drop"].forEach(function (name) {
      zone.addEventListener(name, function () { zone.classList.remove("is-over"); });
    });
    zone.addEventListener("drop", function (ev) {
      ev.preventDefault();
      var files = ev.dataTransfer && ev.dataTransfer.files;
      if (files && files.length) { upload(files[0]); }
    });

    $("video-list").addEventListener("click", function (ev) {
      var button = ev.target.closest(".video-delete");
      if (button) { remove(button); }
    });
  }

  Agora.ready(init);
})();
