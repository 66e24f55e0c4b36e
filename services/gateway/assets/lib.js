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

  window.Agora = { csrfHeader: csrfHeader, call: call, problemText: problemText, ready: ready };
})();
