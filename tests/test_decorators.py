"""@action on every kind of callable: what is captured, and what the caller sees."""

from __future__ import annotations

import asyncio
import inspect
import sys
import traceback
from typing import Any

import pytest

import actiontrace
from actiontrace import ActionFilter, action, concept, flow


@pytest.fixture
def tracer() -> actiontrace.ActionTracer:
    return actiontrace.configure()


def only(tracer: actiontrace.ActionTracer, **fields: Any) -> actiontrace.ActionRecord:
    (rec,) = tracer.find_actions(ActionFilter(**fields))
    return rec


@action
def plain(a: int, b: int = 2) -> int:
    return a + b


@concept("svc::Player")
class Player:
    volume = 1

    @action
    def play(self, passage_id: int) -> dict[str, int]:
        return {"passage_id": passage_id, "volume": self.volume}

    @action
    @classmethod
    def make(cls, name: str) -> str:
        return f"{cls.__name__}:{name}"

    @classmethod
    @action
    def make_inner(cls, name: str) -> str:
        return name

    @action
    @staticmethod
    def helper(x: int) -> int:
        return x * 2

    @staticmethod
    @action
    def helper_inner(x: int) -> int:
        return x * 3

    @action("renamed")
    def original(self) -> None:
        return None

    @action(concept="svc::Elsewhere", name="custom")
    def overridden(self) -> None:
        return None


class Unnamed:
    @action
    def method(self, v: int) -> int:
        return v


class TestCallableKinds:
    def test_function(self, tracer: actiontrace.ActionTracer) -> None:
        """A module function: concept is the module, defaults applied."""
        assert plain(1) == 3
        rec = only(tracer, action="plain")
        assert rec.concept_uri == __name__
        assert rec.inputs == {"a": 1, "b": 2}
        assert rec.outputs == 3
        assert rec.status == "ok" and rec.duration_us is not None and rec.duration_us >= 0

    def test_instance_method_with_concept(self, tracer: actiontrace.ActionTracer) -> None:
        """Methods leave out self and take the class's @concept URI."""
        assert Player().play(42) == {"passage_id": 42, "volume": 1}
        rec = only(tracer, action="play")
        assert rec.concept_uri == "svc::Player"
        assert rec.inputs == {"passage_id": 42}

    def test_method_called_through_class(self, tracer: actiontrace.ActionTracer) -> None:
        """``Class.method(instance, ...)`` records the same inputs."""
        Player.play(Player(), passage_id=7)
        assert only(tracer, action="play").inputs == {"passage_id": 7}

    def test_default_concept_for_methods(self, tracer: actiontrace.ActionTracer) -> None:
        """Without @concept, methods are named "{module}::{ClassQualname}"."""
        Unnamed().method(1)
        assert only(tracer, action="method").concept_uri == f"{__name__}::Unnamed"

    @pytest.mark.parametrize("name", ["make", "make_inner"])
    def test_classmethod_either_order(self, tracer: actiontrace.ActionTracer, name: str) -> None:
        """@action above or below @classmethod: cls left out, binding intact."""
        result = getattr(Player, name)("x")
        assert result in ("Player:x", "x")
        rec = only(tracer, action=name)
        assert rec.inputs == {"name": "x"} and rec.concept_uri == "svc::Player"
        assert getattr(Player(), name)("y") in ("Player:y", "y")

    @pytest.mark.parametrize(("name", "factor"), [("helper", 2), ("helper_inner", 3)])
    def test_staticmethod_either_order(self, tracer: actiontrace.ActionTracer, name: str, factor: int) -> None:
        """@action above or below @staticmethod works from class and instance."""
        assert getattr(Player, name)(5) == 5 * factor
        assert getattr(Player(), name)(x=1) == factor
        recs = tracer.find_actions(ActionFilter(action=name))
        assert [r.inputs for r in recs] == [{"x": 5}, {"x": 1}]

    def test_names_and_concept_override(self, tracer: actiontrace.ActionTracer) -> None:
        """@action("name") and @action(concept=, name=) override the defaults."""
        p = Player()
        p.original()
        p.overridden()
        assert only(tracer, action="renamed").concept_uri == "svc::Player"
        assert only(tracer, action="custom").concept_uri == "svc::Elsewhere"

    def test_async_function(self, tracer: actiontrace.ActionTracer) -> None:
        """An async action stays a coroutine function and times the awaited body."""

        @action(concept="svc::Async")
        async def slow(x: int) -> int:
            await asyncio.sleep(0.02)
            return x + 1

        assert inspect.iscoroutinefunction(slow)
        assert asyncio.run(slow(1)) == 2
        rec = only(tracer, action="slow")
        assert rec.outputs == 2
        assert rec.duration_us is not None and rec.duration_us >= 15_000

    def test_async_error_captured_after_await(self, tracer: actiontrace.ActionTracer) -> None:
        """An exception raised after an await is the record's error."""

        @action(concept="svc::Async")
        async def broken() -> None:
            await asyncio.sleep(0)
            raise LookupError("late")

        with pytest.raises(LookupError):
            asyncio.run(broken())
        rec = only(tracer, action="broken")
        assert rec.status == "error"
        assert rec.outputs == {"error": "late", "error_type": "LookupError"}

    def test_async_nesting_parent(self, tracer: actiontrace.ActionTracer) -> None:
        """An action awaited inside an async action has it as parent."""

        @action(concept="svc::Async")
        async def inner() -> int:
            return 1

        @action(concept="svc::Async")
        async def outer() -> int:
            await asyncio.sleep(0)
            return await inner()

        asyncio.run(outer())
        o, i = only(tracer, action="outer"), only(tracer, action="inner")
        assert i.parent_id == o.id and i.flow_token == o.flow_token

    def test_metadata_preserved(self) -> None:
        """Name, docstring, signature and __wrapped__ survive decoration."""

        @action
        def documented(x: int, *, y: str = "a") -> str:
            """Say it."""
            return y * x

        assert documented.__name__ == "documented"
        assert documented.__doc__ == "Say it."
        sig = inspect.signature(documented)
        assert sig == inspect.signature(documented.__wrapped__)  # type: ignore[attr-defined]
        assert list(sig.parameters) == ["x", "y"]
        assert documented.__wrapped__(2) == "aa"  # type: ignore[attr-defined]


class TestInputs:
    def test_every_parameter_kind(self, tracer: actiontrace.ActionTracer) -> None:
        """Positional-only, defaults, *args, keyword-only and **kwargs by name."""

        @action(concept="svc::Kinds")
        def kinds(p, /, q, r=3, *rest, k, m="m", **extra):  # type: ignore[no-untyped-def]
            return [p, q, r, rest, k, m, extra]

        assert kinds(1, 2, 4, 5, 6, k=7, z=8) == [1, 2, 4, (5, 6), 7, "m", {"z": 8}]
        assert only(tracer, action="kinds").inputs == {
            "p": 1, "q": 2, "r": 4, "rest": [5, 6], "k": 7, "m": "m", "extra": {"z": 8},
        }

    def test_bad_call_raises_its_own_type_error(self, tracer: actiontrace.ActionTracer) -> None:
        """A call that does not match the signature fails as it would undecorated."""
        with pytest.raises(TypeError):
            plain()  # type: ignore[call-arg]
        with pytest.raises(TypeError):
            plain(1, 2, 3)  # type: ignore[call-arg]

    def test_values_encoded_at_call_time(self, tracer: actiontrace.ActionTracer) -> None:
        """Mutating an argument after the call does not rewrite the record."""

        @action(concept="svc::Mut")
        def keep(items: list[int]) -> list[int]:
            return items

        data = [1, 2]
        with flow("svc::Web::req"):
            out = keep(data)
            data.append(3)
            out.append(4)
        rec = only(tracer, action="keep")
        assert rec.inputs == {"items": [1, 2]} and rec.outputs == [1, 2]

    def test_parameter_named_like_internals(self, tracer: actiontrace.ActionTracer) -> None:
        """Parameters named like the wrapper's own variables still bind correctly."""

        @action(concept="svc::Names")
        def odd(spec: int, func: int, args: int, kwargs: int, _at_cur: int = 5) -> int:
            return spec + func + args + kwargs + _at_cur

        assert odd(1, 2, 3, 4) == 15
        assert only(tracer, action="odd").inputs == {
            "spec": 1, "func": 2, "args": 3, "kwargs": 4, "_at_cur": 5,
        }


class TestExceptions:
    def test_same_object_and_traceback(self, tracer: actiontrace.ActionTracer) -> None:
        """The exception reaches the caller unchanged, with its original frames."""
        err = ValueError("bad value")

        @action(concept="svc::Err")
        def raiser() -> None:
            raise err

        with pytest.raises(ValueError) as info:
            raiser()
        assert info.value is err
        frames = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
        assert frames[-1] == "raiser"
        rec = only(tracer, action="raiser")
        assert rec.status == "error"
        assert rec.outputs == {"error": "bad value", "error_type": "ValueError"}

    def test_error_type_module_qualified(self, tracer: actiontrace.ActionTracer) -> None:
        """Non-builtin exception types are named with their module."""

        class Custom(Exception):
            pass

        @action(concept="svc::Err")
        def raiser() -> None:
            raise Custom("x")

        with pytest.raises(Custom):
            raiser()
        expected = f"{__name__}.TestExceptions.test_error_type_module_qualified.<locals>.Custom"
        assert only(tracer, action="raiser").outputs["error_type"] == expected

    def test_base_exceptions_recorded(self, tracer: actiontrace.ActionTracer) -> None:
        """KeyboardInterrupt and SystemExit pass through and are recorded."""

        @action(concept="svc::Err")
        def interrupted() -> None:
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            interrupted()
        assert only(tracer, action="interrupted").outputs["error_type"] == "KeyboardInterrupt"

    def test_error_message_that_cannot_be_rendered(self, tracer: actiontrace.ActionTracer) -> None:
        """An exception whose __str__ raises is still recorded, and still propagates."""

        class Weird(Exception):
            def __str__(self) -> str:
                raise RuntimeError("no")

        @action(concept="svc::Err")
        def raiser() -> None:
            raise Weird()

        with pytest.raises(Weird):
            raiser()
        rec = only(tracer, action="raiser")
        assert rec.status == "error" and rec.outputs["error_type"].endswith("Weird")


class TestRedaction:
    def test_parameter_names_and_nested_keys(self, tracer: actiontrace.ActionTracer) -> None:
        """Secret parameters and mapping keys at any depth are stored as [REDACTED]."""

        @action(concept="svc::Auth")
        def login(user: str, password: str, headers: dict[str, Any]) -> dict[str, Any]:
            return {"session_token": "abc", "nested": [{"Cookie": "c", "ok": 1}]}

        login("ann", "hunter2", {"Authorization": "Bearer x", "deep": {"API_KEY": "k", "n": 1}})
        rec = only(tracer, action="login")
        assert rec.inputs == {
            "user": "ann", "password": "[REDACTED]",
            "headers": {"Authorization": "[REDACTED]", "deep": {"API_KEY": "[REDACTED]", "n": 1}},
        }
        assert rec.outputs == {"session_token": "[REDACTED]", "nested": [{"Cookie": "[REDACTED]", "ok": 1}]}

    def test_action_redact_adds_names(self, tracer: actiontrace.ActionTracer) -> None:
        """@action(redact=[...]) adds names for that action only."""

        @action(concept="svc::Auth", redact=["ssn"])
        def register(name: str, ssn: str, meta: dict[str, str]) -> None:
            return None

        @action(concept="svc::Auth")
        def other(ssn: str) -> None:
            return None

        register("a", "123", {"user_ssn": "9"})
        other("456")
        assert only(tracer, action="register").inputs == {
            "name": "a", "ssn": "[REDACTED]", "meta": {"user_ssn": "[REDACTED]"},
        }
        assert only(tracer, action="other").inputs == {"ssn": "456"}

    def test_configure_redact_applies_to_existing_actions(self) -> None:
        """configure(redact=...) after decoration still redacts those parameters."""

        @action(concept="svc::Auth")
        def pay(card_number: str, amount: int) -> None:
            return None

        tracer = actiontrace.configure(redact=["card_number"])
        try:
            pay("4111", 5)
            assert only(tracer, action="pay").inputs == {"card_number": "[REDACTED]", "amount": 5}
        finally:
            actiontrace.configure(redact=[])
        pay("4111", 6)
        assert actiontrace.get_tracer().find_actions(ActionFilter(action="pay"))[0].inputs[
            "card_number"
        ] == "4111"

    def test_reaction_records_are_redacted(self, tracer: actiontrace.ActionTracer) -> None:
        """What a declared reaction receives is the redacted record."""
        got: list[actiontrace.ActionRecord] = []

        @action(concept="svc::Auth")
        def authenticate(token: str, body: dict[str, str]) -> dict[str, str]:
            return {"secret": "s"}

        @actiontrace.synchronization("Watch", when=authenticate)
        def watch(record: actiontrace.ActionRecord) -> None:
            got.append(record)

        with flow("svc::Web::req"):
            authenticate("t", {"password": "p"})
        assert got[0].inputs == {"token": "[REDACTED]", "body": {"password": "[REDACTED]"}}
        assert got[0].outputs == {"secret": "[REDACTED]"}


def test_decorating_a_non_callable_fails() -> None:
    """@action on something that is not callable is a TypeError at decoration."""
    with pytest.raises(TypeError):
        action(42)  # type: ignore[call-overload]


def test_recursion_limit_unchanged() -> None:
    """Decoration does not touch interpreter settings."""
    assert sys.getrecursionlimit() >= 1000


@concept("gen::Feed")
class Feed:
    @action
    def items(self, n: int):  # type: ignore[no-untyped-def]
        yield from range(n)
        return "all"

    @action
    def broken(self, n: int):  # type: ignore[no-untyped-def]
        yield 1
        raise ValueError(f"bad item after {n}")

    @action
    async def aitems(self, n: int):  # type: ignore[no-untyped-def]
        for i in range(n):
            await asyncio.sleep(0)
            yield i

    @action
    async def abroken(self):  # type: ignore[no-untyped-def]
        yield 1
        raise KeyError("gone")

    @action
    def lookup(self, i: int) -> int:
        return i * 10

    @action
    def looked_up(self):  # type: ignore[no-untyped-def]
        yield actiontrace.current_action_id()
        yield self.lookup(1)


feed = Feed()


class TestGenerators:
    def test_still_generator_functions(self) -> None:
        """inspect still sees generator and async generator functions after decoration."""
        assert inspect.isgeneratorfunction(Feed.items)
        assert inspect.isasyncgenfunction(Feed.aitems)

    def test_one_action_over_the_iteration(self, tracer: actiontrace.ActionTracer) -> None:
        """Exhausting a generator records one ok action whose outputs are its return value."""
        with flow("gen::Web::run") as token:
            assert list(feed.items(3)) == [0, 1, 2]
        rec = only(tracer, flow_token=token, action="items")
        assert (rec.status, rec.inputs, rec.outputs) == ("ok", {"n": 3}, "all")
        assert rec.duration_us is not None

    def test_error_while_iterating(self, tracer: actiontrace.ActionTracer) -> None:
        """An exception raised between yields is the action's error and reaches the consumer."""
        got = []
        with pytest.raises(ValueError, match="bad item after 2"):
            for x in feed.broken(2):
                got.append(x)
        assert got == [1]
        rec = only(tracer, action="broken")
        assert rec.status == "error"
        assert rec.outputs == {"error": "bad item after 2", "error_type": "ValueError"}

    def test_closed_early_is_ok(self, tracer: actiontrace.ActionTracer) -> None:
        """A generator closed before it is exhausted ends its action ok, with null outputs."""
        with flow("gen::Web::run") as token:
            g = feed.items(10)
            assert next(g) == 0
            g.close()
        rec = only(tracer, flow_token=token, action="items")
        assert (rec.status, rec.outputs) == ("ok", None)

    def test_context_inside_body_and_between_yields(self, tracer: actiontrace.ActionTracer) -> None:
        """The body runs as the action (nesting, current id); the consumer sees its own frame."""
        with flow("gen::Web::run") as token:
            root_id = actiontrace.current_action_id()
            g = feed.looked_up()
            inside = next(g)
            assert actiontrace.current_action_id() == root_id  # between yields
            assert next(g) == 10
            assert list(g) == []
        trace = tracer.get_trace(token)
        gen_rec = next(r for r in trace.actions.values() if r.action == "looked_up")
        lookup = next(r for r in trace.actions.values() if r.action == "lookup")
        assert inside == gen_rec.id
        assert lookup.parent_id == gen_rec.id
        assert gen_rec.parent_id == root_id

    def test_generator_outside_flow_is_its_own_flow(self, tracer: actiontrace.ActionTracer) -> None:
        """Iterated outside any flow, the generator is the root of a flow of its own."""
        assert list(feed.items(2)) == [0, 1]
        rec = only(tracer, action="items")
        assert tracer.get_trace(rec.flow_token).root_action_id == rec.id

    def test_async_generator(self, tracer: actiontrace.ActionTracer) -> None:
        """An async generator is one action until exhausted; its error is recorded too."""

        async def main() -> list[int]:
            out = [x async for x in feed.aitems(3)]
            with pytest.raises(KeyError):
                async for _ in feed.abroken():
                    pass
            return out

        assert asyncio.run(main()) == [0, 1, 2]
        assert only(tracer, action="aitems").status == "ok"
        bad = only(tracer, action="abroken")
        assert (bad.status, bad.outputs["error_type"]) == ("error", "KeyError")

    def test_async_generator_aclose(self, tracer: actiontrace.ActionTracer) -> None:
        """aclose() before the end records the action ok."""

        async def main() -> None:
            g = feed.aitems(5)
            assert await g.__anext__() == 0
            await g.aclose()

        asyncio.run(main())
        assert only(tracer, action="aitems").status == "ok"


class TestGeneratorCauses:
    def test_throw_into_generator_is_its_error(self, tracer: actiontrace.ActionTracer) -> None:
        """An exception thrown in with throw() and not handled is the action's error."""
        g = feed.items(5)
        next(g)
        with pytest.raises(TimeoutError):
            g.throw(TimeoutError("consumer gave up"))
        rec = only(tracer, action="items")
        assert (rec.status, rec.outputs["error_type"]) == ("error", "TimeoutError")

    def test_synchronization_in_body_uses_generator_completions(
        self, tracer: actiontrace.ActionTracer
    ) -> None:
        """A sync in the body is triggered by the body's own last action, across yields."""

        @actiontrace.synchronization("AfterLookup")
        def after_lookup() -> None:
            feed.lookup(2)

        @action(concept="gen::Feed")
        def pipeline():  # type: ignore[no-untyped-def]
            yield feed.lookup(1)
            after_lookup()
            yield "synced"

        with flow("gen::Web::run") as token:
            consumer_side = list(pipeline())
            assert consumer_side == [10, "synced"]
        trace = tracer.get_trace(token)
        (edge,) = trace.provenance_edges
        frm, to = trace.actions[edge.from_action], trace.actions[edge.to_action]
        assert (frm.action, frm.inputs, to.inputs) == ("lookup", {"i": 1}, {"i": 2})
        pipe = next(r for r in trace.actions.values() if r.action == "pipeline")
        assert frm.parent_id == to.parent_id == pipe.id


class Scorer:
    """Scores things."""

    def __init__(self) -> None:
        self.weight = 3

    def __call__(self, x: int) -> int:
        return x * self.weight


class AsyncScorer:
    async def __call__(self, x: int) -> int:
        return x + 1


class TestMisuse:
    def test_class_is_refused(self) -> None:
        """@action on a class is a clear TypeError at decoration time."""
        with pytest.raises(TypeError, match="not the class Widget: decorate its methods"):

            @action
            class Widget:
                pass

    def test_callable_object(self, tracer: actiontrace.ActionTracer) -> None:
        """action(obj) records calls of a callable object, named after its class."""
        score = action(Scorer())
        assert score(2) == 6
        rec = only(tracer, action="Scorer")
        assert (rec.inputs, rec.outputs, rec.concept_uri) == ({"x": 2}, 6, __name__)
        assert score.__doc__ == "Scores things."
        assert not hasattr(score, "weight")  # the object's attributes are not copied

    def test_builtin_keeps_its_name(self, tracer: actiontrace.ActionTracer) -> None:
        """action(len) is recorded as "len", not as its type's name."""
        assert action(len)([1, 2]) == 2
        assert only(tracer, action="len").outputs == 2

    def test_async_callable_object(self, tracer: actiontrace.ActionTracer) -> None:
        """A callable object with an async __call__ is recorded around the awaited call."""
        score = action("bump")(AsyncScorer())
        assert inspect.iscoroutinefunction(score)
        assert asyncio.run(score(1)) == 2
        assert only(tracer, action="bump").outputs == 2
