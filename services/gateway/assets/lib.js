/* Agora web UI: what every page script shares, as window.Agora. Loaded before
   them (all scripts are deferred, so they run in document order). */
(function () {
  "use strict";

  /** The double-submit CSRF header the gateway wants on every write (empty before the cookie is set). */
  function csrfHeader() {
    var m = document.cookie.match(/(?:^|;\s*)agora_csrf=([^;]+)/);
    return m ? { "X-CSRF-Token": m[1] } : {};
  }

  /**
   * One call to the API; never throws. Resolves to {ok, status, body}: status 0
   * when the gateway could not be reached, body null when the answer is not JSON.
   * A `body` that is FormData is sent as it is; any other is sent as JSON.
   */
  async function call(method, url, body, extraHeaders) {
    var init = {
      method: method,
      credentials: "same-origin",
      cache: "no-store",
      headers: { Accept: "application/json, application/problem+json" },
    };
    if (body !== undefined) {
      var json = !(window.FormData && body instanceof FormData);
      init.headers = Object.assign(init.headers, json ? { "Content-Type": "application/json" } : {});
      init.body = json ? JSON.stringify(body) : body;
    }
    if (method !== "GET" && method !== "HEAD") {
      // A write, with or without a body (DELETE), carries the CSRF header.
      init.headers = Object.assign(init.headers, csrfHeader());
    }
    init.headers = Object.assign(init.headers, extraHeaders || {});
    var res;
    try {
      res = await fetch(url, init);
    } catch (e) {
      return { ok: false, status: 0, body: null };
    }
    var parsed = null;
    try {
      var text = await res.text();
      parsed = text ? JSON.parse(text) : null;
    } catch (e) {
      parsed = null;
    }
    return { ok: res.ok, status: res.status, body: parsed };
  }

  /** A sentence for a failed call (what `call` resolved to), from its problem+json document when there is one. */
  function problemText(r, what) {
    if (r.status === 0) {
      return what + ": Agora could not be reached. Check your connection and try again.";
    }
    if (r.status === 401) {
      return what + ": you are not logged in (or your session expired). Log in again.";
    }
    var b = r.body;
    var detail = b && (b.detail || b.title);
    return what + ": " + (detail || "the server answered HTTP " + r.status) + ".";
  }

  /** Runs `init` once the document is parsed. */
  function ready(init) {
    if (document.readyState === "loading") {
      document.addEventListener("DOMContentLoaded", init);
    } else {
      init();
    }
  }

  /* ---------- Unread notifications badge ---------- */

  var NOTIFICATIONS_POLL_MS = 30000;
  var refreshNotifications = function () {};

  /**
   * Fills the navigation's badge with the signed-in user's unread count: one small request every
   * 30 s while the tab is visible, and at once when it becomes visible again. No EventSource per
   * tab: browsers allow six HTTP/1.1 connections per host, and open streams would take them all.
   */
  function initNotificationsBadge() {
    var link = document.querySelector("[data-notifications]");
    var count = link && link.querySelector("[data-unread]");
    if (!count || !window.fetch) {
      return;
    }
    var inFlight = false;
    var stopped = false;

    function show(unread) {
      count.hidden = unread <= 0;
      count.textContent = unread > 99 ? "99+" : String(unread);
      link.setAttribute("aria-label", unread > 0 ? "Notifications: " + unread + " unread" : "Notifications");
    }

    function poll() {
      if (inFlight || stopped || document.hidden) {
        return;
      }
      inFlight = true;
      call("GET", "/notifications?unread=1&limit=1")
        .then(function (r) {
          if (r.ok && r.body && typeof r.body.unread === "number") {
            show(r.body.unread);
          } else if (r.status === 401) {
            // Signed out (in another tab, or the session expired): nothing more to ask.
            stopped = true;
            show(0);
          }
        })
        .then(function () {
          inFlight = false;
        });
    }

    refreshNotifications = poll;
    poll();
    window.setInterval(poll, NOTIFICATIONS_POLL_MS);
    document.addEventListener("visibilitychange", function () {
      if (!document.hidden) {
        poll();
      }
    });
  }

  ready(initNotificationsBadge);

  window.Agora = {
    csrfHeader: csrfHeader,
    call: call,
    problemText: problemText,
    ready: ready,
    /** Asks for the unread count now (after a page marked notifications read, or heard a new one). */
    refreshNotifications: function () {
      refreshNotifications();
    },
  };
})();
