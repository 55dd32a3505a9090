"""Generated code (``actiontrace.recording._codegen``): wrappers and binders, compiled in the open."""

from __future__ import annotations

import linecache
import re
import traceback
from typing import Any

import pytest

import actiontrace
from actiontrace import action
from actiontrace._model import ActionFilter
from actiontrace.recording import _codegen
from actiontrace.recording._redact import Redactor


@pytest.fixture
def tracer() -> actiontrace.ActionTracer:
    return actiontrace.configure()


def _spec(wrapper: Any) -> Any:
    return wrapper.__actiontrace_spec__


class TestAnalysis:
    def test_one_analysis_for_binder_and_wrapper(self) -> None:
        """The signature's source fragments: parameters, fields, values, defaults."""

        def f(a: int, /, b: int = 2, *rest: int, password: str = "x", **kw: Any) -> None: ...

        sig = _codegen.analyse(f, False, Redactor(["password"]))
        assert sig is not None
        assert sig.params == "a, /, b=_at_d1, *rest, password=_at_d3, **kw"
        assert sig.fields == ["a", "b", "rest", "password", "kw"]
        assert sig.values == ["a", "b", "[*rest]", "'[REDACTED]'", "kw"]
        assert sig.defaults == {"_at_d1": 2, "_at_d3": "x"}

    def test_unrebuildable_signatures(self) -> None:
        """A signature inspect cannot read, or a clashing name, gives the generic wrapper."""

        class Unreadable:
            __signature__ = "not a signature"  # inspect.signature raises TypeError

            def __call__(self) -> None: ...

        assert _codegen.analyse(Unreadable(), False, Redactor([])) is None
        sig = _codegen.analyse(lambda _at_x: None, False, Redactor([]))
        assert sig is not None and sig.clashes

    def test_binder_matches_the_wrapper(self, tracer: actiontrace.ActionTracer) -> None:
        """The slow-path binder builds the same inputs the wrapper records."""

        @action
        def f(a: int, b: int = 2, *rest: int, c: int = 3) -> None: ...

        f(1, 5, 6, c=4)
        (rec,) = tracer.find_actions(ActionFilter(action="f"))
        assert _spec(f).bind(1, 5, 6, c=4) == rec.inputs == {"a": 1, "b": 5, "rest": [6], "c": 4}


class TestCompiled:
    def test_traceback_shows_the_generated_lines(self, tracer: actiontrace.ActionTracer) -> None:
        """A traceback through a wrapper names its file and shows its source lines."""

        @action
        def boom(x: int) -> None:
            raise ValueError(x)

        with pytest.raises(ValueError) as info:
            boom(1)
        frames = traceback.extract_tb(info.tb)
        # Outside a flow the wrapper re-enters itself through auto_flow: two frames.
        *_, generated = [f for f in frames if f.filename.startswith("<actiontrace wrapper")]
        assert "TestCompiled.test_traceback_shows_the_generated_lines.<locals>.boom" in (
            generated.filename
        )
        assert generated.line == "_at_result = _at_func(x)"
        assert linecache.getline(generated.filename, generated.lineno).strip() == generated.line

    def test_each_action_has_its_own_file(self) -> None:
        """Two actions' wrappers never share a filename (nor their lines)."""

        @action
        def one(a: int) -> int:
            return a

        @action
        def two(a: int, b: int) -> int:
            return a + b

        files = {one.__code__.co_filename, two.__code__.co_filename}
        assert len(files) == 2
        assert all(linecache.getlines(name) for name in files)

    def test_defaults_are_factory_parameters(self, tracer: actiontrace.ActionTracer) -> None:
        """A default reaches the function as the same object; no shared dict holds it."""
        marker: list[int] = []

        @action
        def f(x: list[int] = marker) -> list[int]:
            return x

        assert f() is marker
        assert f.__defaults__ == (marker,)
        assert not any(re.fullmatch(r"_at_d\d+", name) for name in _codegen.RUNTIME)
        assert f.__globals__ is _codegen.RUNTIME

    def test_runtime_values_reach_every_wrapper(self, tracer: actiontrace.ActionTracer) -> None:
        """configure(enabled=False) flips the flag every compiled wrapper reads."""

        @action
        def f() -> int:
            return 1

        actiontrace.configure(enabled=False)
        assert _codegen.RUNTIME["_at_disabled"] is True
        assert f() == 1
        tracer = actiontrace.configure()
        assert _codegen.RUNTIME["_at_disabled"] is False
        f()
        assert len(tracer.find_actions(ActionFilter(action="f"))) == 1


class TestRecompile:
    def test_redact_recompiles_in_place(self) -> None:
        """configure(redact=) swaps the wrapper's code; the object others hold stays."""

        @action
        def pay(card: str, amount: int) -> None: ...

        held, code = pay, pay.__code__
        tracer = actiontrace.configure(redact=["card"])
        try:
            assert held is pay and pay.__code__ is not code
            assert "'[REDACTED]'" in "".join(linecache.getlines(pay.__code__.co_filename))
            held("4111", 5)
            (rec,) = tracer.find_actions(ActionFilter(action="pay"))
            assert rec.inputs == {"card": "[REDACTED]", "amount": 5}
        finally:
            actiontrace.configure(redact=[])

    def test_recompiling_adds_no_source_lines(self) -> None:
        """A recompile replaces the action's generated files in linecache, adds none."""

        @action
        def pay(card: str) -> None: ...

        before = len(linecache.cache)
        try:
            for names in (["card"], ["pin"], ["card", "pin"]):
                actiontrace.configure(redact=names)
            assert len(linecache.cache) == before
        finally:
            actiontrace.configure(redact=[])

    def test_recompile_keeps_a_differently_shaped_wrapper(self) -> None:
        """Code whose closure differs is not swapped in (it could not run there)."""

        def make(n: int) -> Any:
            def inner() -> int:
                return n

            return inner

        def other() -> int:
            return 0

        wrapper = make(1)
        code = wrapper.__code__
        _codegen.recompile(wrapper, other)
        assert wrapper.__code__ is code and wrapper() == 1
