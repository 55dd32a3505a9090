"""Secret names: which parameter and key names are stored as ``"[REDACTED]"``."""

from __future__ import annotations

import bisect
import itertools
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

    __slots__ = ("_name_bytes", "_pattern", "_separator", "answers", "names")

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
        # For may_contain_each: the names as the pattern matches them, and a byte that
        # none of them holds (so that no match spans two documents joined by it).
        self._name_bytes = tuple(n.encode() for n in self.names)
        held = b"".join(self._name_bytes) + b"-_"
        self._separator = next((bytes([c]) for c in (10, *range(32)) if bytes([c]) not in held),
                               None)

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
        """Cheap pre-check: could the encoded ``data`` hold a secret mapping key?

        Bytes lower ASCII letters only, while ``is_secret`` lowers ``str``: a key such as
        ``"API_\u212aEY"`` (a Kelvin sign for the K) is ``api_key`` to it. So a document
        with any non-ASCII byte always gets the full check.
        """
        return self._pattern is not None and (
            not data.isascii() or self._pattern.search(data.lower()) is not None)

    def may_contain_each(self, docs: list[bytes]) -> list[int]:
        """The positions in ``docs`` of the documents ``may_contain`` is true of.

        One scan over all of them (the writer checks a batch's documents at once): the
        documents are joined by a byte no name holds, so no match spans two, lowered
        and with ``-`` read as ``_`` (the pattern's ``[-_]``), and each name is found
        with ``bytes.find``, which skips ahead where the pattern tries every position.
        Callgrind, per seed-shaped document of ~26 bytes: ~4,400 instructions by
        ``may_contain``, a few hundred here (docs/performance.md).
        """
        if self._pattern is None or not docs:
            return []
        sep = self._separator
        if sep is None or len(docs) == 1:
            return [i for i, d in enumerate(docs) if self.may_contain(d)]
        text = sep.join(docs).lower().replace(b"-", b"_")
        ends: list[int] | None = None  # where each document ends in ``text``
        hits: set[int] = set()
        if not text.isascii():  # as may_contain: non-ASCII documents get the full check
            hits.update(i for i, d in enumerate(docs) if not d.isascii())
        for name in self._name_bytes:
            pos = text.find(name)
            while pos >= 0:
                if ends is None:
                    ends = [end + i for i, end in enumerate(itertools.accumulate(map(len, docs)))]
                i = bisect.bisect_right(ends, pos)
                hits.add(i)
                pos = text.find(name, ends[i])
        return sorted(hits)

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
