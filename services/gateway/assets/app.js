/* Agora web UI — plain JavaScript, no dependencies. */
(function () {
  "use strict";

  var STATUS_POLL_MS = 5000;
  var BADGE_STATES = ["up", "down", "degraded", "unknown"];

  /* ---------- Live service status badges ---------- */

  function setBadge(el, status) {
    var state = BADGE_STATES.indexOf(status) >= 0 ? status : "unknown";
    BADGE_STATES.forEach(function (s) {
      el.classList.remove("badge-" + s);
    });
    el.classList.add("badge");
    el.classList.add("badge-" + state);
    if (el.textContent !== state) {
      el.textContent = state;
    }
    el.setAttribute("title", "Service status: " + state);
  }

  function initStatusPolling() {
    var badges = document.querySelectorAll("[data-service-status]");
    if (!badges.length || !window.fetch) {
      return;
    }
    var inFlight = false;

    function poll() {
      if (inFlight || document.hidden) {
        return;
      }
      inFlight = true;
      Agora.call("GET", "/api/status")
        .then(function (r) {
          // Gateway unreachable or a bad answer: keep the last known badges.
          var data = r.ok ? r.body : null;
          if (!data) {
            return;
          }
          var byName = {};
          ((data && data.services) || []).forEach(function (svc) {
            if (svc && typeof svc.name === "string") {
              byName[svc.name] = svc.status;
            }
          });
          badges.forEach(function (el) {
            var name = el.getAttribute("data-service-status");
            // A service missing from the answer is unknown to the gateway.
            setBadge(el, Object.prototype.hasOwnProperty.call(byName, name) ? byName[name] : "unknown");
          });
        })
        .then(function () {
          inFlight = false;
        });
    }

    poll();
    window.setInterval(poll, STATUS_POLL_MS);
    document.addEventListener("visibilitychange", function () {
      if (!document.hidden) {
        poll();
      }
    });
  }

  /* ---------- Jokes page ---------- */

  function initJokes() {
    var button = document.getElementById("new-joke");
    var output = document.getElementById("joke");
    if (!button || !output || !window.fetch) {
      return;
    }
    var select = document.getElementById("category");
    var errorBox = document.getElementById("joke-error");
    var requestSeq = 0;

    function showError(message) {
      if (errorBox) {
        errorBox.textContent = message;
        errorBox.hidden = false;
      }
    }

    function clearError() {
      if (errorBox) {
        errorBox.hidden = true;
        errorBox.textContent = "";
      }
    }

    function loadJoke() {
      var seq = ++requestSeq;
      var url = "/joke";
      var category = select ? select.value : "";
      if (category) {
        url += "?category=" + encodeURIComponent(category);
      }
      // The button stays enabled: a click during a load simply starts a newer
      // request, and older answers are ignored (see requestSeq).
      button.classList.add("is-loading");
      button.setAttribute("aria-busy", "true");
      output.classList.add("is-loading");
      output.setAttribute("aria-busy", "true");

      Agora.call("GET", url).then(function (r) {
        if (seq !== requestSeq) {
          return; // a newer request superseded this one
        }
        if (r.ok && r.body && typeof r.body.joke === "string") {
          clearError();
          output.textContent = r.body.joke;
        } else {
          showError(Agora.problemText(r, "No joke this time"));
        }
        button.classList.remove("is-loading");
        button.removeAttribute("aria-busy");
        output.classList.remove("is-loading");
        output.removeAttribute("aria-busy");
      });
    }

    var form = button.form;
    if (form) {
      form.addEventListener("submit", function (ev) {
        ev.preventDefault();
        loadJoke();
      });
    }
    button.addEventListener("click", function (ev) {
      ev.preventDefault();
      loadJoke();
    });
    if (select) {
      // A new category shows a joke from it straight away.
      select.addEventListener("change", loadJoke);
    }
    if (!output.textContent.trim()) {
      loadJoke(); // the server had no joke to show
    }
  }

  function init() {
    initStatusPolling();
    initJokes();
  }

  Agora.ready(init);
})();
