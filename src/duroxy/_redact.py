"""Secrets kept out of what duroxy shows: store URLs and DSNs with their passwords masked.

``redact(text)`` masks, anywhere in a text (a URL, an error message, a log line):

* the password of a URL's user info: ``postgresql://user:secret@host/db`` becomes
  ``postgresql://user:***@host/db``;
* a ``password`` parameter of a URL's query: ``?password=secret`` becomes
  ``?password=***``;
* a ``password`` keyword of a key/value DSN: ``host=db password=secret`` (or
  ``password='a secret'``) becomes ``host=db password=***``.

Every banner, log line of ``duroxy worker``, error message and JSON output of the
command line goes through it; so do the PostgreSQL store's own error messages.
"""

from __future__ import annotations

import re

__all__ = ["MASK", "redact"]

MASK = "***"

# scheme://user:password@host : the password runs to the last "@" before the path's
# first "/" (a password may hold "@" when not percent-encoded); an empty one is masked
# too, so that the output never tells whether there was one.
_USERINFO = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s:/@]*:)(?P<pw>[^\s/]*)"
                       r"(?P<at>@)")
# password=... in a query string (up to & or #) or a key/value DSN (a quoted value, or up
# to whitespace); password, passwd, pwd, and the same keys with any prefix (sslpassword).
_KEYVALUE = re.compile(
    r"(?P<head>\b(?:[a-z_]*password|passwd|pwd)\s*=\s*)"
    r"(?P<pw>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^\s&#'\"]+)",
    re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with every password in a URL or DSN replaced by ``***``."""
    if "@" not in text and "=" not in text:
        return text
    text = _USERINFO.sub(lambda m: m.group("head") + MASK + m.group("at"), text)
    return _KEYVALUE.sub(lambda m: m.group("head") + MASK, text)
