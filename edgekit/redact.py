"""Credentials never reach output: stream URLs are masked wherever edgekit prints them, and
whatever a library prints (OpenCV's and FFmpeg's warnings echo the URL they failed on) is
filtered on its way to stderr once a credential has been seen.

The filter sits on file descriptor 2 (a pipe read by one thread that masks and forwards), so
it covers C libraries as well as Python. It is installed only when a URL carrying a secret is
opened, and removed at exit. Standard output is not filtered (it carries the JSON results,
which never hold a URL).
"""

from __future__ import annotations

import atexit
import os
import re
import select
import sys
import threading
from urllib.parse import unquote

# query keys whose values are secrets (RTSP/HTTP cameras take them in the URL too)
_SECRET_KEYS = ("user", "username", "login", "pass", "passwd", "password", "pwd", "token", "key", "apikey",
                "api_key", "auth", "secret", "signature", "sig", "access_token", "credentials")
_QUERY = re.compile(r"(?i)([?&;](?:" + "|".join(_SECRET_KEYS) + r")=)([^&;#\s]*?)(?=[:,.)]?(?:[&;#\s'\"]|$))")
_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*:/{1,2})(?P<rest>[^\s'\"<>]*)")
_USERINFO_ANYWHERE = re.compile(r"[^/\s:@'\"]+:(?!/)[^\s@'\"]+@")  # user:pass@host with no scheme


def _mask_url(m: re.Match[str]) -> str:
    rest = m.group("rest")
    at = rest.rfind("@")  # the last @: a password may hold a raw @ (user:p@ss@host)
    if at >= 0:
        rest = "***@" + rest[at + 1:]
    return m.group("scheme") + _QUERY.sub(r"\1***", rest)


def redact(text: str, loose: bool = False) -> str:
    """Mask user:password@ (percent-encoded or raw, with / or @ in the password) and secret query
    values (?user=..&password=..) in every URL of ``text``; typos like rtsp:/u:p@h included.
    ``loose``: also any user:pass@ without a scheme (for what a user typed; in library output
    it would mask innocent text such as OpenCV's "WARN:0@0.008")."""
    text = _URL.sub(_mask_url, text)
    return _USERINFO_ANYWHERE.sub("***@", text) if loose else text


def secrets_of(uri: str) -> list[str]:
    """The secret parts of a URL, in every form a library may print them (raw, percent-decoded)."""
    out: list[str] = []
    m = _URL.search(uri)
    rest = m.group("rest") if m else uri
    at = rest.rfind("@")
    if at >= 0:
        userinfo = rest[:at]
        out.append(userinfo)
        if ":" in userinfo:
            out.append(userinfo.split(":", 1)[1])
    for qm in _QUERY.finditer(uri):
        out.append(qm.group(2))
    forms = set()
    for s in out:
        pct = re.compile(r"%[0-9A-Fa-f]{2}")
        for form in (s, unquote(s), pct.sub(lambda m: m.group().lower(), s), pct.sub(lambda m: m.group().upper(), s)):
            if len(form) >= 3:  # shorter ones would mask ordinary text; the URL pattern still covers them
                forms.add(form)
    return sorted(forms, key=len, reverse=True)


class _Filter:
    """fd 2 -> pipe -> this thread -> the real stderr, with secrets masked."""

    def __init__(self) -> None:
        self.secrets: list[str] = []
        self.lock = threading.Lock()
        sys.stderr.flush()
        self.real = os.dup(2)
        r, w = os.pipe()
        os.dup2(w, 2)
        os.close(w)
        self.r = r
        self.thread = threading.Thread(target=self._run, name="edgekit-redact", daemon=True)
        self.thread.start()
        atexit.register(self.remove)

    def add(self, secrets: list[str]) -> None:
        with self.lock:
            self.secrets = sorted(set(self.secrets) | set(secrets), key=len, reverse=True)

    def clean(self, data: bytes) -> bytes:
        text = data.decode("utf-8", "replace")
        with self.lock:
            secrets = list(self.secrets)
        for s in secrets:
            text = text.replace(s, "***")
        return redact(text).encode("utf-8")

    def _emit(self, data: bytes) -> None:
        if data:
            try:
                os.write(self.real, self.clean(data))
            except OSError:
                pass

    def _run(self) -> None:
        buf = b""
        while True:
            ready, _, _ = select.select([self.r], [], [], 0.05)
            if not ready:  # idle: a partial line (a status line ends in \r, or nothing) goes out now
                self._emit(buf)
                buf = b""
                continue
            chunk = os.read(self.r, 65536)
            if not chunk:
                self._emit(buf)
                return
            buf += chunk
            cut = max(buf.rfind(b"\n"), buf.rfind(b"\r"))
            if cut >= 0:  # whole lines now; the rest waits so a secret is never split
                self._emit(buf[:cut + 1])
                buf = buf[cut + 1:]

    def remove(self) -> None:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(self.real, 2)  # the pipe's last writer closes: the thread forwards the rest and ends
        self.thread.join(timeout=2)
        os.close(self.r)


_filter: _Filter | None = None
_filter_lock = threading.Lock()


def protect(uri: str) -> None:
    """Mask this URL's secrets in everything printed to stderr from now on (no-op without any)."""
    global _filter
    secrets = secrets_of(uri)
    if not secrets or os.environ.get("EDGEKIT_STDERR_FILTER", "1") == "0":
        return
    with _filter_lock:
        if _filter is None:
            _filter = _Filter()
        _filter.add(secrets)
