/* Classification page: submit a job, follow it through its states, draw the top 5. */
(function () {
  "use strict";
  var POLL_MS = 300;
  var RECENT_KEY = "agora.recentClassifications";
  var $ = function (id) { return document.getElementById(id); };

  function showError(message) {
    var box = $("classify-error");
    box.textContent = message;
    box.hidden = !message;
  }

  function recent() {
    try { return JSON.parse(localStorage.getItem(RECENT_KEY) || "[]"); } catch (e) { return []; }
  }
  function remember(job) {
    var list = recent().filter(function (j) { return j.id !== job.id; });
    list.unshift(job);
    localStorage.setItem(RECENT_KEY, JSON.stringify(list.slice(0, 10)));
  }

  function drawBars(data) {
    var ol = $("top5");
    ol.textContent = "";
    (data || []).forEach(function (pair) {
      var li = document.createElement("li");
      li.className = "bar-row";
      var label = document.createElement("span");
      label.className = "bar-label";
      label.textContent = pair[0];
      label.title = pair[0];
      var track = document.createElement("span");
      track.className = "bar-track";
      var bar = document.createElement("span");
      bar.className = "bar";
      bar.style.width = Math.max(0.5, pair[1] * 100).toFixed(1) + "%";
      track.appendChild(bar);
      var value = document.createElement("span");
      value.className = "bar-value";
      value.textContent = (pair[1] * 100).toFixed(1) + "%";
      li.append(label, track, value);
      ol.appendChild(li);
    });
  }

  function setState(state, extra) {
    var p = $("job-state");
    p.className = "state-" + state;
    p.textContent = "Job " + state + (extra ? ": " + extra : "");
    p.dataset.state = state;
  }

  async function follow(job) {
    for (;;) {
      var r = await Agora.call("GET", "/classifications/" + encodeURIComponent(job.id));
      if (!r.ok || !r.body) { setState("failed", Agora.problemText(r, "the job could not be followed")); return; }
      var body = r.body;
      setState(body.task_status, body.task_status === "failed" ? body.error : "");
      job.state = body.task_status;
      if (body.data && body.data.length) { job.top = body.data[0][0]; }
      remember(job);
      renderRecent();
      if (body.task_status === "finished") { drawBars(body.data); return; }
      if (body.task_status === "failed") { drawBars([]); return; }
      await new Promise(function (r) { setTimeout(r, POLL_MS); });
    }
  }

  function renderRecent() {
    var tbody = document.querySelector("#recent tbody");
    tbody.textContent = "";
    recent().forEach(function (j) {
      var tr = document.createElement("tr");
      [j.id.slice(0, 8), j.model, j.image, j.state || "queued", j.top || "—"].forEach(function (text, i) {
        var td = document.createElement("td");
        td.dataset.label = ["Job", "Model", "Image", "State", "Top answer"][i];
        td.textContent = text;
        tr.appendChild(td);
      });
      tbody.appendChild(tr);
    });
  }

  async function init() {
    renderRecent();
    if (!$("model").options.length) {
      // The server could not list the models: ask from here.
      var r = await Agora.call("GET", "/info");
      if (!r.ok || !r.body) { showError(Agora.problemText(r, "The classifier is unavailable")); return; }
      showError("");
      r.body.models.forEach(function (m) { $("model").add(new Option(m, m)); });
      r.body.images.forEach(function (i) { $("image").add(new Option(i, i)); });
    }

    $("classify-form").addEventListener("submit", async function (ev) {
      ev.preventDefault();
      showError("");
      drawBars([]);
      var model = $("model").value;
      var file = $("upload").files[0];
      var image = file ? file.name : $("image").value;
      var body;
      if (file) {
        body = new FormData();
        body.append("model_id", model);
        body.append("file", file);
        $("preview").src = URL.createObjectURL(file);
      } else {
        body = { model_id: model, image_id: image };
        $("preview").src = "/classifications/images/" + encodeURIComponent(image);
      }
      $("preview").hidden = false;
      var r = await Agora.call("POST", "/classifications", body);
      if (r.status !== 202 || !r.body) { showError(Agora.problemText(r, "The image was not classified")); return; }
      var job = { id: r.body.job_id, model: model, image: image, state: "queued" };
      setState("queued");
      remember(job);
      renderRecent();
      follow(job);
    });
  }

  Agora.ready(init);
})();
