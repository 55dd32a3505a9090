"""Secret names: which parameter and key names are stored as ``"[REDACTED]"``."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

__all__ = ["DEFAULT_REDACT", "REDACTED", "Redactor"]

REDACTED = "[REDACTED]"
DEFAULT_REDACT = (
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "authorization",
    "cookie",
)


_KNOWN_MAX = 4096  # names whose answer a Redactor keeps


class Redactor:
    """Decide which names are secrets, and blank them out at any depth.

    A name is secret when any configured word is a case-insensitive substring of it,
    with ``-`` and ``_`` taken as the same (HTTP headers: ``X-Api-Key``, ``Set-Cookie``).
    """

    __slots__ = ("_pattern", "answers", "names")

    def __init__(self, names: Iterable[str]) -> None:
        self.names = tuple(dict.fromkeys(_norm(n) for n in names if n))
        # Answers of is_secret by name: the same keys come back on every request (a
        # flow's inputs, log fields, a reaction's record). A Redactor never changes its
        # names, so the answers hold; at most _KNOWN_MAX are kept (callgrind, per call:
        # 8,700 instructions for the lowering and the scan, 2,200 from here).
        # ``answers[name]`` (an exact str) is is_secret without the method call: a dict
        # lookup in C, the name decided by ``__missing__`` the first time (callgrind, per
        # known key: ~970 instructions through is_secret, ~400 so).
        self.answers = _Answers(self.names)
        if self.names:
            alternatives = b"|".join(
                re.escape(n.encode()).replace(b"_", b"[-_]") for n in self.names
            )
            self._pattern: re.Pattern[bytes] | None = re.compile(alternatives)
        else:
            self._pattern = None

    def extended(self, extra: Iterable[str]) -> Redactor:
        """Return a redactor that also treats ``extra`` names as secrets."""
        return Redactor((*self.names, *extra))

    def is_secret(self, name: object) -> bool:
        """Return True if ``name`` matches a redacted word."""
        if type(name) is str:
            return self.answers[name]
        if not isinstance(name, str):
            return False
        return _matches(self.names, name)  # a str subclass: decided, not kept

    def may_contain(self, data: bytes) -> bool:
        """Cheap pre-check: could the encoded ``data`` hold a secret mapping key?"""
        return self._pattern is not None and self._pattern.search(data.lower()) is not None

    def apply(self, obj: Any) -> Any:
        """Return ``obj`` (decoded JSON) with the values of secret keys replaced."""
        if isinstance(obj, dict):
            return {
                k: (REDACTED if self.is_secret(k) else self.apply(v)) for k, v in obj.items()
            }
        if isinstance(obj, list):
            return [self.apply(v) for v in obj]
        return obj


class _Answers(dict[str, bool]):
    """``is_secret``'s answers by exact str name; a name not known yet is decided and
    kept, while fewer than ``_KNOWN_MAX`` are."""

    __slots__ = ("names",)

    def __init__(self, names: tuple[str, ...]) -> None:
        super().__init__()
        self.names = names

    def __missing__(self, name: str) -> bool:
        secret = _matches(self.names, name)
        if len(self) < _KNOWN_MAX:
            self[name] = secret
        return secret


def _matches(names: tuple[str, ...], name: str) -> bool:
    low = _norm(name)
    return any(n in low for n in names)


def _norm(name: str) -> str:
    return name.lower().replace("-", "_")
