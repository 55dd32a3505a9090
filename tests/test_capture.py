"""Hostile values are stored, never crash the call, and never leak secrets."""

from __future__ import annotations

import math
import sys
import threading
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import actiontrace
from actiontrace import ActionFilter, action, flow


@pytest.fixture
def tracer() -> actiontrace.ActionTracer:
    return actiontrace.configure()


@action(concept="cap::Echo")
def echo(value: Any) -> Any:
    return value


def stored(tracer: actiontrace.ActionTracer) -> actiontrace.ActionRecord:
    recs = tracer.find_actions(ActionFilter(concept_uri="cap::Echo"))
    assert recs, "no record stored"
    return recs[-1]


class BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("repr exploded")


class HugeRepr:
    def __repr__(self) -> str:
        return "x" * 5_000_000


class TestHostileValues:
    def test_two_megabyte_string_truncated_with_marker(self, tracer: actiontrace.ActionTracer) -> None:
        """A 2 MB string is cut to the size limit, visibly, and the call is unaffected."""
        big = "a" * 2_000_000
        assert echo(big) is big
        rec = stored(tracer)
        value = rec.inputs["value"]
        assert value.startswith("aaaa") and "[truncated: 2000002 bytes]" in value
        assert len(msgspec.json.encode(value)) <= 64 * 1024  # the value, cut to the limit
        assert "[truncated: 2000002 bytes]" in rec.outputs

    def test_self_referencing_list(self, tracer: actiontrace.ActionTracer) -> None:
        """A list containing itself is stored with a cycle marker."""
        loop: list[Any] = [1]
        loop.append(loop)
        assert echo(loop) is loop
        assert stored(tracer).inputs == {"value": [1, "[cycle]"]}

    def test_repr_that_raises(self, tracer: actiontrace.ActionTracer) -> None:
        """An object whose repr raises is stored as a placeholder naming its type."""
        obj = BadRepr()
        assert echo(obj) is obj
        assert stored(tracer).inputs == {"value": "<unrepresentable BadRepr>"}

    def test_huge_repr_is_cut(self, tracer: actiontrace.ActionTracer) -> None:
        """An unknown object's repr is kept short."""
        echo(HugeRepr())
        value = stored(tracer).inputs["value"]
        assert value.startswith("xxx") and len(value) <= 210

    def test_lone_surrogates(self, tracer: actiontrace.ActionTracer) -> None:
        """Strings that are not valid UTF-8 are stored with the surrogate escaped."""
        echo("a\ud800b")
        assert stored(tracer).inputs == {"value": "a\\ud800b"}

    def test_big_ints_nan_bytes(self, tracer: actiontrace.ActionTracer) -> None:
        """Integers beyond 64 bits survive, NaN/inf become null, bytes become base64."""
        echo([2**100, -(2**70), math.nan, math.inf, b"\x00\xff"])
        assert stored(tracer).inputs == {"value": [2**100, -(2**70), None, None, "AP8="]}

    def test_non_string_keys(self, tracer: actiontrace.ActionTracer) -> None:
        """Mappings with int, None, float and tuple keys are stored with string keys."""
        echo({1: "int", None: "none", 2.5: "float", (1, 2): "tuple", True: "bool"})  # noqa: F601 - True == 1 on purpose
        value = stored(tracer).inputs["value"]
        assert value["1"] == "bool"  # True == 1: the dict itself merged them
        assert value["None"] == "none" and value["2.5"] == "float" and value["(1, 2)"] == "tuple"

    def test_nesting_beyond_recursion_limit(self, tracer: actiontrace.ActionTracer) -> None:
        """Nesting deeper than the interpreter's recursion limit is cut with a marker."""
        deep: list[Any] = []
        cur = deep
        for _ in range(sys.getrecursionlimit() + 500):
            nxt: list[Any] = []
            cur.append(nxt)
            cur = nxt
        assert echo(deep) is deep
        text = msgspec.json.encode(stored(tracer).inputs).decode()
        assert "[max depth]" in text

    def test_value_mutated_by_another_thread(self, tracer: actiontrace.ActionTracer) -> None:
        """A dict mutated concurrently with capture never breaks the call."""
        shared: dict[int, int] = {i: i for i in range(1000)}
        stop = threading.Event()

        def mutate() -> None:
            i = 1000
            while not stop.is_set():
                shared[i] = i
                shared.pop(i - 1000, None)
                i += 1

        t = threading.Thread(target=mutate)
        t.start()
        try:
            with flow("cap::Web::req"):
                for _ in range(200):
                    assert echo(shared) is shared
        finally:
            stop.set()
            t.join()
        assert len(tracer.find_actions(ActionFilter(concept_uri="cap::Echo"))) == 200

    def test_structs_and_dataclasses_keep_fields(self, tracer: actiontrace.ActionTracer) -> None:
        """Values msgspec knows (dataclasses, Structs, sets) are kept as it encodes them."""
        import dataclasses

        @dataclasses.dataclass
        class Point:
            x: int
            password: str

        echo({"p": Point(1, "pw"), "s": {3}})
        assert stored(tracer).inputs == {"value": {"p": {"x": 1, "password": "[REDACTED]"}, "s": [3]}}

    @pytest.mark.parametrize("where", ["memory", "sqlite"])
    def test_nested_keys_secret_once_lowered_as_text(self, where: str, tmp_path: Any) -> None:
        """A nested key that is a secret name only when lowered as text, not as bytes (a
        Kelvin sign for the K, a non-ASCII name given to ``redact``), is redacted in
        storage like its ASCII spelling."""
        url = f"sqlite:///{tmp_path}/t.db" if where == "sqlite" else None
        tracer = (actiontrace.configure(url=url) if url
                  else actiontrace.configure(storage=actiontrace.InMemoryTraceStorage()))

        @action(concept="cap::Echo", redact=["contraseña"])
        def echo_named(value: Any) -> Any:
            return value

        try:
            echo_named({"cfg": {"API_\u212aEY": "s3cret", "CONTRASEÑA": "x", "n": 1}})
            rec = stored(tracer)
            want = {"cfg": {"API_\u212aEY": "[REDACTED]", "CONTRASEÑA": "[REDACTED]", "n": 1}}
            assert rec.inputs == {"value": want} and rec.outputs == want
        finally:
            tracer.shutdown()
            actiontrace.configure()

    def test_size_limit_is_configurable(self) -> None:
        """configure(max_value_bytes=...) changes the truncation limit."""
        tracer = actiontrace.configure(max_value_bytes=1024)
        try:
            echo("b" * 5000)
            assert "[truncated: 5002 bytes]" in stored(tracer).inputs["value"]
        finally:
            actiontrace.configure(max_value_bytes=64 * 1024)


@action(concept="cap::Echo")
def echo_many(a: Any, b: Any = None, c: Any = None, d: Any = None, e: Any = None,
              f: Any = None, small: int = 7) -> None:
    return None


LIMIT = 64 * 1024


def encoded_len(value: Any) -> int:
    return len(msgspec.json.encode(value))


class TestTruncation:
    def test_one_value_cut_to_the_limit(self, storage: Any) -> None:
        """A 1 MB argument keeps (nearly) the whole 64 KiB limit, not a share of it."""
        tracer = actiontrace.configure(storage=storage)
        echo("z" * 1_000_000)
        rec = stored(tracer)
        for value in (rec.inputs["value"], rec.outputs):
            assert value.startswith("zzz") and value.endswith("[truncated: 1000002 bytes]")
            assert LIMIT - 64 <= encoded_len(value) <= LIMIT

    def test_each_parameter_gets_the_limit(self, tracer: actiontrace.ActionTracer) -> None:
        """Two large arguments are each cut to the limit; small ones are kept whole."""
        echo_many("x" * 200_000, list(range(100_000)))
        rec = stored(tracer)
        assert LIMIT - 64 <= encoded_len(rec.inputs["a"]) <= LIMIT
        assert LIMIT - 64 <= encoded_len(rec.inputs["b"]) <= LIMIT
        assert rec.inputs["b"].startswith("[0,1,2,")
        assert rec.inputs["small"] == 7

    def test_whole_inputs_bounded(self, tracer: actiontrace.ActionTracer) -> None:
        """Six large arguments share the inputs' bound of 4 x the limit, fairly."""
        from actiontrace.recording._capture import INPUTS_BOUND

        big = ["y" * 100_000] * 6
        echo_many(*big)
        rec = stored(tracer)
        assert encoded_len(rec.inputs) <= INPUTS_BOUND * LIMIT
        sizes = [encoded_len(rec.inputs[k]) for k in "abcdef"]
        assert max(sizes) - min(sizes) <= 8
        assert min(sizes) > INPUTS_BOUND * LIMIT // 6 - 200
        assert all(rec.inputs[k].endswith("[truncated: 100002 bytes]") for k in "abcdef")
        assert rec.inputs["small"] == 7

    def test_escaped_characters_fit(self, tracer: actiontrace.ActionTracer) -> None:
        """Characters that encode to several bytes still end within the limit."""
        echo("\x01\u20ac" * 200_000)
        value = stored(tracer).inputs["value"]
        assert encoded_len(value) <= LIMIT and "[truncated:" in value


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
    | st.text() | st.binary(max_size=16),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8) | st.integers(), children, max_size=4),
    max_leaves=20,
)
hostile_text = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF, categories=None))


def _plain_json(value: Any) -> bool:
    """True if JSON can hold ``value`` exactly (so the stored form must equal it)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):
        return all(not 0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, bytes):
        return False
    if isinstance(value, list):
        return all(_plain_json(v) for v in value)
    if isinstance(value, dict):
        redactor = actiontrace._state.settings.redactor
        return all(
            isinstance(k, str) and _plain_json(k) and not redactor.is_secret(k) and _plain_json(v)
            for k, v in value.items()
        )
    return True


class TestArbitraryValues:
    @given(value=json_values)
    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    def test_any_json_like_value_is_stored(self, tracer: actiontrace.ActionTracer, value: Any) -> None:
        """Any JSON-like value: the call returns it, a record is stored, and values that
        JSON can hold exactly come back equal."""
        before = len(tracer.find_actions(ActionFilter(concept_uri="cap::Echo")))
        assert echo(value) is value
        rec = stored(tracer)
        assert len(tracer.find_actions(ActionFilter(concept_uri="cap::Echo"))) == before + 1
        msgspec.json.encode(rec.inputs)  # stored values are valid JSON
        if _plain_json(value):
            assert rec.inputs == {"value": value}
            assert rec.outputs == value

    @given(text=hostile_text)
    @settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    def test_any_text_is_stored(self, tracer: actiontrace.ActionTracer, text: str) -> None:
        """Any string, surrogates and control characters included, is stored."""
        assert echo(text) is text
        got = stored(tracer).inputs["value"]
        if _plain_json(text):
            assert got == text
        else:
            assert got.encode("utf-8")  # cleaned, valid UTF-8


_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1),
                     st.floats(allow_nan=False), st.text(max_size=20))
_KEYS = st.one_of(st.text(max_size=12), st.sampled_from(["token", "X-Api-Key", "pass", "user"]))


class TestFlatMappings:
    """capture_value's shortcut for small flat mappings stores what the general path does."""

    @staticmethod
    def general(value: Any, redactor: Any) -> bytes:
        from actiontrace.recording._capture import encode, finish

        return finish(encode(value), redactor)

    @given(st.dictionaries(_KEYS, _SCALARS, max_size=16))
    @settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
    def test_same_bytes_as_the_general_path(self, value: dict[str, Any]) -> None:
        """Secret keys redacted, the rest encoded as it is: byte for byte the same."""
        from actiontrace._state import settings as capture_settings
        from actiontrace.recording._capture import capture_value

        redactor = capture_settings.redactor
        assert capture_value(value, redactor) == self.general(value, redactor)

    def test_only_flat_small_mappings_take_it(self) -> None:
        """Nested values, non-str keys, long or oversized mappings go the general way."""
        from actiontrace._state import settings as capture_settings
        from actiontrace.recording._capture import capture_flat

        redactor = capture_settings.redactor
        assert capture_flat({"a": 1, "token": "x"}, redactor) == b'{"a":1,"token":"[REDACTED]"}'
        assert capture_flat({"a": {"token": "x"}}, redactor) is None
        assert capture_flat({1: "x"}, redactor) is None
        assert capture_flat({f"k{i}": i for i in range(17)}, redactor) is None
        assert capture_flat({"a": "x" * (capture_settings.max_value_bytes + 1)}, redactor) is None

    def test_redactor_answers_are_kept_and_bounded(self) -> None:
        """is_secret answers the same from its memo, for str keys only, at most 4,096 of them."""
        from actiontrace.recording._redact import _KNOWN_MAX, Redactor

        redactor = Redactor(["token"])
        names = [f"n{i}" for i in range(_KNOWN_MAX + 10)] + ["MyToken", "x-token"]
        first = [redactor.is_secret(n) for n in names]
        assert [redactor.is_secret(n) for n in names] == first
        assert [redactor.answers[n] for n in names] == first  # kept or not, the same answer
        assert first[-2:] == [True, True] and not any(first[:-2])
        assert redactor.is_secret(1) is False and redactor.is_secret(None) is False
        assert len(redactor.answers) == _KNOWN_MAX

    def test_str_subclass_names_are_decided_not_kept(self) -> None:
        """A str subclass name is answered like its text, and kept nowhere."""
        from actiontrace.recording._redact import Redactor

        class Name(str):
            pass

        redactor = Redactor(["token"])
        assert redactor.is_secret(Name("Api-Token")) is True
        assert redactor.is_secret(Name("user")) is False
        assert len(redactor.answers) == 0


_FIELD_KEYS = st.one_of(_KEYS, st.sampled_from(["event", "level", "timestamp"]), st.integers())
_FIELD_VALUES = st.one_of(_SCALARS, hostile_text, st.text(min_size=60, max_size=80),
                          st.lists(_SCALARS, max_size=2), st.dictionaries(_KEYS, _SCALARS, max_size=2))


class TestFields:
    """capture_fields (a log event's fields in one pass) stores what capture_value does."""

    @given(st.dictionaries(_FIELD_KEYS, _FIELD_VALUES, max_size=20))
    @settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
    def test_same_bytes_as_capture_value(self, event: dict[Any, Any]) -> None:
        """Skipped keys left out, the rest in order: byte for byte capture_value's."""
        from actiontrace._state import settings as capture_settings
        from actiontrace.recording._capture import capture_fields, capture_value

        redactor = capture_settings.redactor
        skip = frozenset({"event", "level", "timestamp"})
        expected = capture_value({k: v for k, v in event.items() if k not in skip}, redactor)
        assert capture_fields(event, skip, redactor) == expected

    def test_secret_and_unencodable_fields(self) -> None:
        """Secret keys redacted; a lone surrogate or a long value takes the general path."""
        from actiontrace._state import settings as capture_settings
        from actiontrace.recording._capture import capture_fields

        redactor = capture_settings.redactor
        skip = frozenset({"event"})
        assert capture_fields({"event": "e", "token": "t", "n": 1}, skip, redactor) == \
            b'{"token":"[REDACTED]","n":1}'
        assert capture_fields({"s": "\ud800"}, skip, redactor) == b'{"s":"\\\\ud800"}'
        long = capture_fields({"s": "x" * (capture_settings.max_value_bytes + 10)}, skip, redactor)
        assert b"truncated" in long


# Text made of the default names' pieces, both cases, `-` and `_`: where matches happen.
_PIECES = st.sampled_from(["tok", "en", "TOK", "EN", "api", "-", "_", "key", "KEY", "pass",
                           "word", "wd", "cookie", "Secret", "x", "é", '"', ":", "{", "\n"])
_DOCS = st.lists(st.lists(_PIECES, max_size=12).map("".join).map(str.encode), max_size=12)
_NAMES = st.lists(st.text(alphabet="ab_-\n\x00é", min_size=1, max_size=4), max_size=4)


class TestMayContainEach:
    @settings(max_examples=300, deadline=None)
    @given(docs=_DOCS)
    def test_agrees_with_may_contain(self, docs: list[bytes]) -> None:
        """The batch check names exactly the documents the one-document check flags."""
        from actiontrace.recording._redact import DEFAULT_REDACT, Redactor

        red = Redactor(DEFAULT_REDACT)
        assert red.may_contain_each(docs) == [i for i, d in enumerate(docs)
                                              if red.may_contain(d)]

    @settings(max_examples=300, deadline=None)
    @given(names=_NAMES, docs=st.lists(st.binary(max_size=10) | st.text(
        alphabet="aAbB_-\n\x00é", max_size=10).map(str.encode), max_size=8))
    def test_agrees_for_any_names(self, names: list[str], docs: list[bytes]) -> None:
        """With names holding `-`, `_`, newlines or NUL (the separator moves), or none."""
        from actiontrace.recording._redact import Redactor

        red = Redactor(names)
        assert red.may_contain_each(docs) == [i for i, d in enumerate(docs)
                                              if red.may_contain(d)]
