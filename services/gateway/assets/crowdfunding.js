/* Crowdfunding pages: the project list with the proposal form (/crowdfunding),
   and one project's problems, solutions and comments as threads with nested
   replies and live vote counts (/crowdfunding/{id}). Plain JavaScript, no
   dependencies; every piece of user text goes into the DOM as textContent. */
(function () {
  "use strict";

  var PAGE_SIZE = 20;
  var POLL_MS = 5000;          // live counts on a project page
  var PENDING_POLL_MS = 1500;  // while a proposal's threads are still being created
  var SECTION_OF = { PROBLEM: "problems", SOLUTION: "solutions", COMMENT: "comments" };
  var TYPE_LABEL = { PROBLEM: "Problem", SOLUTION: "Solution", COMMENT: "Comment" };

  var $ = function (id) { return document.getElementById(id); };

  /* ---------- Shared helpers ---------- */

  function newKey() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") {
      return window.crypto.randomUUID();
    }
    return Date.now().toString(36) + "-" + Math.random().toString(36).slice(2);
  }

  var call = Agora.call;
  var problemText = Agora.problemText;

  function showAlert(id, message) {
    var box = $(id);
    if (!box) {
      return;
    }
    box.textContent = message || "";
    box.hidden = !message;
  }

  function el(tag, className, text) {
    var e = document.createElement(tag);
    if (className) {
      e.className = className;
    }
    if (text !== undefined && text !== null) {
      e.textContent = String(text);
    }
    return e;
  }

  function relative(iso) {
    var d = new Date(iso);
    if (isNaN(d.getTime())) {
      return String(iso || "");
    }
    var s = Math.round((d.getTime() - Date.now()) / 1000);
    var abs = Math.abs(s);
    if (abs < 45) {
      return "just now";
    }
    var unit = abs < 3600 ? ["minute", 60]
      : abs < 86400 ? ["hour", 3600]
      : abs < 86400 * 30 ? ["day", 86400]
      : abs < 86400 * 365 ? ["month", 86400 * 30]
      : ["year", 86400 * 365];
    var n = Math.round(s / unit[1]);
    if (window.Intl && Intl.RelativeTimeFormat) {
      return new Intl.RelativeTimeFormat(undefined, { numeric: "auto" }).format(n, unit[0]);
    }
    return Math.abs(n) + " " + unit[0] + (Math.abs(n) === 1 ? "" : "s") + " ago";
  }

  function timeEl(iso) {
    var t = el("time", "", relative(iso));
    t.dateTime = iso;
    t.setAttribute("data-relative", "");
    var d = new Date(iso);
    if (!isNaN(d.getTime())) {
      t.title = d.toLocaleString();
    }
    return t;
  }

  /** Refreshes every "5 minutes ago" on the page. */
  function refreshTimes() {
    document.querySelectorAll("time[data-relative]").forEach(function (t) {
      var text = relative(t.dateTime);
      if (t.textContent !== text) {
        t.textContent = text;
      }
    });
  }

  function fillTags(ul, tags) {
    ul.textContent = "";
    (tags || []).forEach(function (tag) {
      ul.appendChild(el("li", "tag", tag));
    });
    ul.hidden = !ul.children.length;
  }

  function plural(n, one, many) {
    return n + " " + (n === 1 ? one : many);
  }

  /* ---------- /crowdfunding: the list ---------- */

  function projectItem(p) {
    var li = el("li", "project-item");
    li.dataset.projectId = p.project_id;
    var h = el("h3", "project-title");
    var a = el("a", "", p.project_name);
    a.href = "/crowdfunding/" + encodeURIComponent(p.project_id);
    h.appendChild(a);
    li.appendChild(h);
    if (p.tagline) {
      li.appendChild(el("p", "project-tagline", p.tagline));
    }
    if (p.tags && p.tags.length) {
      var ul = el("ul", "tag-list");
      ul.setAttribute("aria-label", "Tags");
      fillTags(ul, p.tags);
      li.appendChild(ul);
    }
    var meta = el("p", "project-meta muted small");
    meta.append("Proposed by ", el("strong", "", p.author_name), " \u00b7 ", timeEl(p.created_at));
    li.appendChild(meta);
    return li;
  }

  function initList() {
    var root = $("crowdfunding");
    var list = $("project-list");
    var more = $("more-projects");
    var cursor = root.dataset.nextCursor || null; // where the list the server rendered ends
    var loading = false;

    async function load() {
      if (loading) {
        return;
      }
      loading = true;
      more.disabled = true;
      more.classList.add("is-loading");
      var url = "/projects?limit=" + PAGE_SIZE + (cursor ? "&cursor=" + encodeURIComponent(cursor) : "");
      var r = await call("GET", url);
      loading = false;
      more.disabled = false;
      more.classList.remove("is-loading");
      $("list-loading").hidden = true;
      if (!r.ok || !r.body || !Array.isArray(r.body.projects)) {
        showAlert("list-error", problemText(r, "Projects could not be loaded"));
        more.hidden = false;
        more.textContent = list.children.length ? "More projects" : "Try again";
        return;
      }
      showAlert("list-error", "");
      r.body.projects.forEach(function (p) {
        list.appendChild(projectItem(p));
      });
      cursor = r.body.next_cursor || null;
      more.textContent = "More projects";
      more.hidden = !cursor;
      $("list-empty").hidden = list.children.length > 0;
    }

    more.addEventListener("click", function (ev) {
      ev.preventDefault();
      load();
    });
    if (root.dataset.listed === "true") {
      refreshTimes();
    } else {
      // The server could not list the projects: try from here.
      $("list-loading").hidden = false;
      load();
    }

    var form = $("propose-form");
    if (form) {
      initPropose(form);
    }
  }

  var PROPOSAL_FIELDS = ["project_name", "tagline", "tags", "problems", "solutions"];

  function initPropose(form) {
    var submit = $("propose-submit");

    function setFieldError(field, message) {
      var box = $("error-" + field);
      var input = form.elements[field];
      box.textContent = message || "";
      box.hidden = !message;
      if (message) {
        input.setAttribute("aria-invalid", "true");
      } else {
        input.removeAttribute("aria-invalid");
      }
    }

    function lines(value) {
      return value.split(/\r?\n/).map(function (s) { return s.trim(); }).filter(Boolean);
    }

    /** "problems[1]" + reason → a sentence a person can act on. */
    function fieldMessage(base, index, reason) {
      var label = { tags: "Tag", problems: "Problem", solutions: "Solution" }[base];
      if (label && index !== undefined) {
        return label + " " + (Number(index) + 1) + ": " + reason + ".";
      }
      return reason.charAt(0).toUpperCase() + reason.slice(1) + ".";
    }

    form.addEventListener("submit", async function (ev) {
      ev.preventDefault();
      PROPOSAL_FIELDS.forEach(function (f) { setFieldError(f, ""); });
      showAlert("propose-error", "");
      var body = {
        project_name: form.elements.project_name.value.trim(),
        tagline: form.elements.tagline.value.trim(),
        tags: form.elements.tags.value.split(",").map(function (s) { return s.trim(); }).filter(Boolean),
        problems: lines(form.elements.problems.value),
        solutions: lines(form.elements.solutions.value),
      };
      if (!body.project_name) {
        setFieldError("project_name", "Give the project a name.");
        form.elements.project_name.focus();
        return;
      }
      submit.disabled = true;
      submit.classList.add("is-loading");
      var r = await call("POST", "/projects/propose", body);
      if (r.status === 201 && r.body && r.body.project_id) {
        window.location.assign("/crowdfunding/" + encodeURIComponent(r.body.project_id));
        return;
      }
      submit.disabled = false;
      submit.classList.remove("is-loading");
      var field = r.status === 422 && r.body && typeof r.body.field === "string" ? r.body.field : "";
      var m = /^([a-z_]+)(?:\[(\d+)\])?$/.exec(field);
      if (m && PROPOSAL_FIELDS.indexOf(m[1]) >= 0) {
        var errors = Array.isArray(r.body.errors) ? r.body.errors : [];
        var reason = (errors[0] && errors[0].detail) || String(r.body.detail || "").replace(field + ": ", "");
        setFieldError(m[1], fieldMessage(m[1], m[2], reason));
        form.elements[m[1]].focus();
        return;
      }
      showAlert("propose-error", problemText(r, "The project could not be proposed"));
    });
  }

  /* ---------- /crowdfunding/{id}: one project ---------- */

  function initProject(root) {
    var projectId = root.dataset.projectId;
    var signedIn = root.dataset.signedIn === "true";
    var nodes = Object.create(null); // thread_id → {article, up, down, replies, data, …}
    var voteSeq = 0;                 // bumped by each vote, so older polls do not undo it
    var timer = null;
    var inFlight = false;
    var stopped = false;
    var serverRendered = true;       // the threads in the page until the first answer replaces them

    /* Votes */

    function voteButton(direction) {
      var b = el("button", "vote vote-" + direction);
      b.type = "button";
      b.setAttribute("aria-pressed", "false");
      b.append(el("span", "vote-arrow", direction === "up" ? "\u25b2" : "\u25bc"), el("span", "vote-count", "0"));
      b.firstChild.setAttribute("aria-hidden", "true");
      if (!signedIn) {
        b.disabled = true;
      }
      return b;
    }

    function setVotes(node, up, down, mine) {
      node.data.up_vote = up;
      node.data.down_vote = down;
      node.data.my_vote = mine || "none";
      [["up", node.up, up], ["down", node.down, down]].forEach(function (v) {
        var pressed = node.data.my_vote === v[0];
        var count = v[1].querySelector(".vote-count");
        if (count.textContent !== String(v[2])) {
          count.textContent = String(v[2]);
        }
        v[1].setAttribute("aria-pressed", pressed ? "true" : "false");
        var what = (v[0] === "up" ? "Up" : "Down") + "-votes: " + v[2];
        var hint = !signedIn ? "log in to vote" : pressed ? "click again to withdraw your vote" : "click to vote " + v[0];
        v[1].title = what + " (" + hint + ")";
        v[1].setAttribute("aria-label", what + (pressed ? ", your vote" : ""));
      });
    }

    async function vote(node, direction) {
      if (node.busy) {
        return;
      }
      var want = node.data.my_vote === direction ? "none" : direction;
      node.busy = true;
      node.lastVote = ++voteSeq;
      node.up.disabled = node.down.disabled = true;
      var r = await call("POST", "/threads/" + encodeURIComponent(node.data.thread_id) + "/vote", { direction: want });
      node.busy = false;
      node.up.disabled = node.down.disabled = false;
      if (r.ok && r.body) {
        node.lastVote = ++voteSeq;
        setVotes(node, r.body.up_vote, r.body.down_vote, r.body.direction);
        showAlert("action-error", "");
      } else {
        showAlert("action-error", problemText(r, "Your vote was not counted"));
      }
    }

    /* Replies and new threads */

    async function postThread(body, key) {
      return call("POST", "/projects/" + encodeURIComponent(projectId) + "/threads", body, { "Idempotency-Key": key });
    }

    function replyForm(node) {
      var tid = node.data.thread_id;
      var form = el("form", "form reply-form");
      form.noValidate = true;
      var field = el("div", "field");
      var label = el("label", "visually-hidden", "Your reply");
      var ta = el("textarea");
      ta.id = "reply-" + tid;
      ta.name = "message";
      ta.rows = 2;
      ta.maxLength = 10000;
      ta.placeholder = "Write a reply\u2026";
      label.htmlFor = ta.id;
      field.append(label, ta);
      var err = el("div", "alert alert-error");
      err.setAttribute("role", "alert");
      err.hidden = true;
      var row = el("div", "row");
      var send = el("button", "btn btn-primary btn-small", "Post reply");
      send.type = "submit";
      var cancel = el("button", "btn btn-secondary btn-small", "Cancel");
      cancel.type = "button";
      row.append(send, cancel);
      form.append(field, err, row);
      var key = newKey(); // kept across retries of the same reply, renewed after success

      cancel.addEventListener("click", function () { toggleReply(node, false); });
      form.addEventListener("submit", async function (ev) {
        ev.preventDefault();
        var message = ta.value.trim();
        if (!message) {
          err.textContent = "Write something first.";
          err.hidden = false;
          ta.focus();
          return;
        }
        err.hidden = true;
        send.disabled = true;
        send.classList.add("is-loading");
        var r = await postThread({ thread_type: "COMMENT", message: message, parent_thread_id: tid }, key);
        send.disabled = false;
        send.classList.remove("is-loading");
        if (r.status === 201 && r.body && r.body.thread_id) {
          key = newKey();
          ta.value = "";
          toggleReply(node, false);
          var created = upsert(r.body, {});
          sectionCounts();
          created.article.classList.add("thread-new");
          return;
        }
        err.textContent = problemText(r, "Your reply was not posted");
        err.hidden = false;
      });
      return form;
    }

    function toggleReply(node, open) {
      if (open && !node.form) {
        node.form = replyForm(node);
        node.replyHost.appendChild(node.form);
      }
      if (node.form) {
        node.form.hidden = !open;
      }
      node.replyButton.setAttribute("aria-expanded", open ? "true" : "false");
      if (open) {
        node.form.querySelector("textarea").focus();
      } else {
        node.replyButton.focus();
      }
    }

    /* Threads */

    function threadNode(t) {
      var art = el("article", "thread thread-" + String(t.thread_type).toLowerCase());
      art.id = "thread-" + t.thread_id;
      art.dataset.threadId = t.thread_id;
      art.dataset.threadType = t.thread_type;

      var votes = el("div", "votes");
      votes.setAttribute("role", "group");
      votes.setAttribute("aria-label", "Votes");
      var node = { article: art, data: { thread_id: t.thread_id }, busy: false, lastVote: 0 };
      node.up = voteButton("up");
      node.down = voteButton("down");
      node.up.addEventListener("click", function () { vote(node, "up"); });
      node.down.addEventListener("click", function () { vote(node, "down"); });
      votes.append(node.up, node.down);

      var body = el("div", "thread-body");
      var meta = el("p", "thread-meta");
      if (t.parent_thread_id !== null && t.parent_thread_id !== undefined && t.thread_type !== "COMMENT") {
        meta.append(el("span", "thread-kind", TYPE_LABEL[t.thread_type] || t.thread_type), " ");
      }
      meta.append(el("strong", "thread-author", t.author_name), " \u00b7 ", timeEl(t.created_at));
      var message = el("p", "thread-message", t.message);
      var actions = el("div", "thread-actions");
      node.replyButton = el("button", "link-button", "Reply");
      node.replyButton.type = "button";
      node.replyButton.setAttribute("aria-expanded", "false");
      node.replyButton.setAttribute("aria-controls", "reply-host-" + t.thread_id);
      node.replyButton.addEventListener("click", function () {
        toggleReply(node, !node.form || node.form.hidden);
      });
      if (signedIn) {
        actions.appendChild(node.replyButton);
      }
      node.replyHost = el("div", "reply-host");
      node.replyHost.id = "reply-host-" + t.thread_id;
      node.replies = el("div", "replies");
      body.append(meta, message, actions, node.replyHost, node.replies);
      art.append(votes, body);
      setVotes(node, t.up_vote, t.down_vote, t.my_vote);
      return node;
    }

    /** Adds a thread not seen yet (parents first), or updates the counts of a known one. */
    function upsert(t, byId, seqAtStart, depth) {
      var known = nodes[t.thread_id];
      if (known) {
        // A vote made while this answer was on its way is newer than the answer.
        if (!known.busy && !(seqAtStart !== undefined && known.lastVote > seqAtStart)) {
          setVotes(known, t.up_vote, t.down_vote, t.my_vote);
        }
        return known;
      }
      var node = threadNode(t);
      nodes[t.thread_id] = node;
      var parentId = t.parent_thread_id;
      var parent = parentId !== null && parentId !== undefined ? nodes[parentId] : null;
      if (!parent && parentId !== null && parentId !== undefined && byId[parentId] && (depth || 0) < 200) {
        parent = upsert(byId[parentId], byId, seqAtStart, (depth || 0) + 1);
      }
      var container = parent ? parent.replies : $(SECTION_OF[t.thread_type] || "comments");
      container.appendChild(node.article);
      return node;
    }

    /** Counts each section's top-level threads; `emptyNote` replaces "No … yet." (threads unknown). */
    function sectionCounts(emptyNote) {
      Object.keys(SECTION_OF).forEach(function (type) {
        var id = SECTION_OF[type];
        var n = $(id).children.length;
        $(id + "-count").textContent = String(n);
        var note = document.querySelector('[data-empty-for="' + id + '"]');
        note.textContent = emptyNote || note.dataset.emptyText;
        note.hidden = n > 0;
      });
    }

    function showProject(p) {
      document.title = p.project_name + " \u00b7 Crowdfunding \u00b7 Agora";
      $("project-name").textContent = p.project_name;
      var tagline = $("project-tagline");
      tagline.textContent = p.tagline || "";
      tagline.hidden = !p.tagline;
      fillTags($("project-tags"), p.tags);
      var meta = $("project-meta");
      meta.textContent = "";
      meta.append("Proposed by ", el("strong", "", p.author_name), " \u00b7 ", timeEl(p.created_at));
    }

    function showThreads(p, seqAtStart) {
      var notice = $("threads-notice");
      if (!Array.isArray(p.threads)) {
        var why = p.threads_problem && (p.threads_problem.detail || p.threads_problem.title);
        notice.textContent = "Threads are unavailable right now" + (why ? " (" + why + ")" : "") +
          ". The problems, solutions and votes will appear here as soon as they are back.";
        notice.hidden = false;
        sectionCounts("Unavailable right now.");
        return;
      }
      if (p.threads_pending > 0) {
        notice.textContent = "This proposal's " + plural(p.threads_pending, "problem or solution is", "problems and solutions are") +
          " still being created; they will appear here in a moment.";
        notice.hidden = false;
      } else {
        notice.hidden = true;
      }
      if (serverRendered) {
        // The server's copy has no handlers; the live copy takes its place.
        Object.keys(SECTION_OF).forEach(function (type) { $(SECTION_OF[type]).textContent = ""; });
        serverRendered = false;
      }
      var byId = Object.create(null);
      p.threads.forEach(function (t) { byId[t.thread_id] = t; });
      p.threads.forEach(function (t) { upsert(t, byId, seqAtStart, 0); });
      sectionCounts();
    }

    /* Live updates: poll while the page is visible */

    function schedule(ms) {
      clearTimeout(timer);
      if (!stopped) {
        timer = setTimeout(tick, ms);
      }
    }

    function tick() {
      if (document.hidden) {
        return; // visibilitychange starts again
      }
      refresh();
    }

    async function refresh() {
      if (inFlight || stopped) {
        return;
      }
      inFlight = true;
      var seqAtStart = voteSeq;
      var r = await call("GET", "/projects/" + encodeURIComponent(projectId));
      inFlight = false;
      if (r.status === 404) {
        stopped = true;
        $("project-meta").textContent = "";
        $("project-body").hidden = true;
        var box = $("project-error");
        var all = el("a", "", "all projects");
        all.href = "/crowdfunding";
        box.textContent = "";
        box.append("There is no project " + projectId + ". Browse ", all, " instead.");
        box.hidden = false;
        return;
      }
      if (!r.ok || !r.body) {
        showAlert("project-error", problemText(r, "The project could not be loaded") + " Trying again shortly.");
        schedule(POLL_MS);
        return;
      }
      showAlert("project-error", "");
      showProject(r.body);
      showThreads(r.body, seqAtStart);
      refreshTimes();
      var pending = r.body.threads_pending > 0 || !Array.isArray(r.body.threads);
      schedule(r.body.threads_pending > 0 ? PENDING_POLL_MS : POLL_MS);
      root.dataset.loaded = pending ? "pending" : "true";
    }

    document.addEventListener("visibilitychange", function () {
      if (!document.hidden) {
        clearTimeout(timer);
        refresh();
      }
    });

    /* The project-level form */

    var form = $("new-thread-form");
    if (form) {
      var key = newKey();
      form.addEventListener("submit", async function (ev) {
        ev.preventDefault();
        var message = form.elements.message.value.trim();
        var type = form.elements.thread_type.value;
        if (!message) {
          showAlert("new-thread-error", "Write something first.");
          form.elements.message.focus();
          return;
        }
        showAlert("new-thread-error", "");
        var send = $("new-thread-submit");
        send.disabled = true;
        send.classList.add("is-loading");
        var r = await postThread({ thread_type: type, message: message }, key);
        send.disabled = false;
        send.classList.remove("is-loading");
        if (r.status === 201 && r.body && r.body.thread_id) {
          key = newKey();
          form.elements.message.value = "";
          var created = upsert(r.body, {});
          sectionCounts();
          created.article.classList.add("thread-new");
          created.article.scrollIntoView({ block: "nearest", behavior: "smooth" });
          return;
        }
        showAlert("new-thread-error", problemText(r, "Your " + (TYPE_LABEL[type] || "message").toLowerCase() + " was not posted"));
      });
    }

    refresh();
  }

  function init() {
    var project = $("project");
    if (project && project.dataset.projectId) {
      initProject(project);
    } else if ($("crowdfunding")) {
      initList();
    }
  }

  Agora.ready(init);
})();
