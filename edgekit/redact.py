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
import time
from urllib.parse import unquote

# query or fragment keys whose values are secrets: any key holding one of these (loginPas, auth_token,
# api-key, passphrase, X-Amz-Signature, X-Amz-Credential ...)
_SECRET_WORDS = ("pass", "pwd", "token", "key", "secret", "sig", "cred", "auth", "user", "login", "session")
_QUERY = re.compile(r"(?i)([?&;#](?:[\w.-]*?(?:" + "|".join(_SECRET_WORDS) + r")[\w.-]*)=)"
                    r"([^&;#\s]*?)(?=[:,.)]?(?:[&;#\s'\"]|$))")
_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*:/{1,2})(?P<rest>[^\s'\"<>]*)")
_USERINFO_ANYWHERE = re.compile(r"[^/\s:@'\"]+:(?!/)[^\s@'\"]+@")  # user:pass@host with no scheme
_SCHEME = re.compile(r"(?i)^\s*[a-z][a-z0-9+.-]*:/{1,2}")


def _mask_url(m: re.Match[str]) -> str:
    rest = m.group("rest")
    at = rest.rfind("@")  # the last @: a password may hold a raw @ (user:p@ss@host)
    if at >= 0:
        rest = "***@" + rest[at + 1:]
    return m.group("scheme") + _QUERY.sub(r"\1***", rest)


def redact(text: str, loose: bool = False) -> str:
    """Mask user:password@ (percent-encoded or raw, with / or @ in the password) and secret query
    or fragment values (?user=..&password=.., #token=..) in every URL of ``text``; typos like
    rtsp:/u:p@h included. ``loose``: also any user:pass@ without a scheme (for what a user typed;
    in library output it would mask innocent text such as OpenCV's "WARN:0@0.008")."""
    text = _URL.sub(_mask_url, text)
    return _USERINFO_ANYWHERE.sub("***@", text) if loose else text


def _split(uri: str) -> tuple[str, str, str]:
    """A whole URI as typed -> (scheme://, userinfo or '', the rest); the userinfo runs to the last
    @, whatever it holds (spaces, quotes, / and @ in a password)."""
    m = _SCHEME.match(uri)
    if not m:
        return "", "", uri
    head, rest = uri[:m.end()], uri[m.end():]
    at = rest.rfind("@")
    return (head, rest[:at], rest[at + 1:]) if at >= 0 else (head, "", rest)


def redact_uri(uri: str) -> str:
    """One URI as the user gave it, for display: its userinfo and secret parameters masked."""
    head, userinfo, rest = _split(uri)
    if not head:
        return redact(uri, loose=True)
    return head + ("***@" if userinfo else "") + _QUERY.sub(r"\1***", rest)


def secrets_of(uri: str) -> list[str]:
    """The secret parts of a URI, in every form a library may print them (raw, percent-decoded)."""
    out: list[str] = []
    _, userinfo, rest = _split(uri)
    if userinfo:
        out.append(userinfo)
        if ":" in userinfo:
            out.append(userinfo.split(":", 1)[1])
    for qm in _QUERY.finditer(rest if userinfo or _SCHEME.match(uri) else uri):
        out.append(qm.group(2))
    forms = set()
    pct = re.compile(r"%[0-9A-Fa-f]{2}")
    for s in out:
        for form in (s, unquote(s), pct.sub(lambda m: m.group().lower(), s), pct.sub(lambda m: m.group().upper(), s)):
            if len(form) >= 3:  # shorter ones would mask ordinary text; the URL pattern still covers them
                forms.add(form)
    return sorted(forms, key=len, reverse=True)


class _Filter:
    """fd 2 -> pipe -> this thread -> the real stderr, with secrets masked.

    Whole lines are forwarded at once; a partial line after 50 ms of quiet (a status line ending
    in \r), unless it ends in what may be the start of a URL or a secret, which waits up to 1 s
    for the rest. A crash report (faulthandler) goes to the real stderr directly. A child process
    started meanwhile inherits the pipe: its output is filtered while this process lives."""

    def __init__(self) -> None:
        self.secrets: list[str] = []
        self.lock = threading.Lock()
        sys.stderr.flush()
        self.real = os.dup(2)
        r, w = os.pipe()
        os.dup2(w, 2)
        os.close(w)
        self.r = r
        self._crash_file = None
        import faulthandler

        if faulthandler.is_enabled():  # it writes to fd 2 from a dying process: the pipe would lose it
            self._crash_file = os.fdopen(os.dup(self.real), "w")
            faulthandler.enable(file=self._crash_file)
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

    def _risky_tail(self, buf: bytes) -> int:
        """Where the last word of a partial line starts, if it may be a URL or secret cut short."""
        cut = max(buf.rfind(b" "), buf.rfind(b"\t")) + 1
        word = buf[cut:].decode("utf-8", "replace")
        with self.lock:
            secrets = list(self.secrets)
        if "://" in word or "@" in word or any(s.startswith(word) for s in secrets if word):
            return cut
        return len(buf)

    def _emit(self, data: bytes) -> None:
        if data:
            try:
                os.write(self.real, self.clean(data))
            except OSError:
                pass

    def _run(self) -> None:
        buf = b""
        held_since: float | None = None
        while True:
            ready, _, _ = select.select([self.r], [], [], 0.05)
            if not ready:  # quiet: a partial line goes out now, but not a URL or secret cut short
                if buf:
                    keep = self._risky_tail(buf)
                    now = time.monotonic()
                    if keep < len(buf) and (held_since is None or now - held_since < 1.0):
                        held_since = held_since or now
                        self._emit(buf[:keep])
                        buf = buf[keep:]
                        continue
                    self._emit(buf)
                    buf, held_since = b"", None
                continue
            try:
                chunk = os.read(self.r, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                self._emit(buf)
                return
            buf += chunk
            cut = max(buf.rfind(b"\n"), buf.rfind(b"\r"))
            if cut >= 0:  # whole lines now; the rest waits so a secret is never split
                self._emit(buf[:cut + 1])
                buf, held_since = buf[cut + 1:], None

    def remove(self) -> None:
        try:
            sys.stderr.flush()
        except (AttributeError, OSError, ValueError):
            pass
        os.dup2(self.real, 2)  # the pipe's last writer closes: the thread forwards the rest and ends
        self.thread.join(timeout=0.3)  # a child still holding the pipe must not delay the exit


_filter: _Filter | None = None
_filter_lock = threading.Lock()


def protect(uri: str) -> bool:
    """Mask this URI's secrets in everything printed to stderr from now on; True when it has any.

    No filter where stderr is closed (nothing is printed then) or EDGEKIT_STDERR_FILTER=0."""
    global _filter
    secrets = secrets_of(uri)
    if not secrets:
        return False
    if os.environ.get("EDGEKIT_STDERR_FILTER", "1") == "0" or sys.stderr is None:
        return True
    with _filter_lock:
        if _filter is None:
            try:
                os.fstat(2)
            except OSError:
                return True
            _filter = _Filter()
        _filter.add(secrets)
    return True
