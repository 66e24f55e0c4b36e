"""Schemathesis hooks of the API contract gate (tests/openapi/run.sh).

- The account forms (`POST /account/*`) carry a CSRF token that must equal the `agora_csrf`
  cookie: when a generated form's `csrf` is a well-formed token (32 hexadecimal digits, what the
  gateway mints), the request gets that cookie too, as a browser's would. A form with any other
  `csrf` goes without it and is refused (403), as it should be.
- Every request is counted per operation into the file named by `AGORA_CASE_COUNTS`, so that
  the gate can show the number of cases per operation and fail when one got none.
"""

import os
import re
import threading

import schemathesis

CSRF_TOKEN = re.compile(r"[0-9a-f]{32}")
_COUNTS = os.environ.get("AGORA_CASE_COUNTS")
_LOCK = threading.Lock()


@schemathesis.hook
def before_call(context, case, kwargs):
    if case.method.upper() != "POST" or not case.path.startswith("/account/"):
        return
    token = case.body.get("csrf") if isinstance(case.body, dict) else None
    if isinstance(token, str) and CSRF_TOKEN.fullmatch(token):
        case.cookies = {**(case.cookies or {}), "agora_csrf": token}


@schemathesis.hook
def after_call(context, case, response):
    if not _COUNTS:
        return
    with _LOCK, open(_COUNTS, "a", encoding="utf-8") as counts:
        counts.write(f"{case.method.upper()} {case.path}\n")
