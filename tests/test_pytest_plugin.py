"""The pytest plugin (fixture action_trace), run inside pytest's own pytester."""

from __future__ import annotations

import pytest

import actiontrace
from actiontrace._pytest_plugin import isolated_tracer

INI = """
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
filterwarnings = error
"""

# The application under test: a module the test files import (as a real app would be).
APP = '''
from actiontrace import action, concept, flow, synchronization


@concept("shop::Orders")
class Orders:
    @action
    def place(self, item):
        return {"order": item}


@concept("shop::Mailer")
class Mailer:
    @action
    def send(self, to):
        return True

    @action
    async def send_async(self, to):
        return True


orders, mailer = Orders(), Mailer()


@synchronization("OnOrderPlaced")
def on_order_placed(to):
    mailer.send(to)


def checkout(item, to):
    with flow("shop::Web::checkout"):
        orders.place(item)
        on_order_placed(to)
'''


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini(INI)
    pytester.makepyfile(shopapp=APP)
    pytester.syspathinsert()
    return pytester


class TestFixture:
    def test_registered_by_the_entry_point(self, project: pytest.Pytester) -> None:
        """A fresh pytest process finds the fixture and the plugin without any conftest."""
        project.makepyfile(test_it="""
            import actiontrace

            def test_fixture(action_trace):
                assert action_trace is actiontrace.get_tracer()
                assert isinstance(action_trace.storage, actiontrace.InMemoryTraceStorage)
        """)
        result = project.runpytest_subprocess()
        result.assert_outcomes(passed=1)
        assert any("actiontrace-" in line for line in result.outlines if line.startswith("plugins:"))

    def test_passing_and_failing_assertions(self, project: pytest.Pytester) -> None:
        """assert_caused passes on a real chain; a typo fails with the list and a suggestion."""
        project.makepyfile(test_shop="""
            from actiontrace.testing import assert_caused, assert_not_caused, flow_shape
            from shopapp import checkout

            def test_mail_after_order(action_trace):
                checkout("book", "bob@example.com")
                assert_caused(action_trace, "Orders::place", "Mailer::send", via="OnOrderPlaced")
                assert_not_caused(action_trace, "Mailer::send", "Orders::place")

            def test_typo(action_trace):
                checkout("book", "bob@example.com")
                assert_caused(action_trace, "Orders::place", "Mailer::snd")

            def test_shape(action_trace):
                checkout("book", "bob@example.com")
                token = action_trace.find_actions(action="checkout")[0].flow_token
                assert flow_shape(action_trace.get_trace(token)) == (
                    "Web::checkout\\n  Orders::place\\n    Mailer::send  <-OnOrderPlaced-")
        """)
        result = project.runpytest_subprocess()
        result.assert_outcomes(passed=2, failed=1)
        result.stdout.fnmatch_lines([
            "*test_typo*",
            "E       AssertionError: assert_caused: no recorded action matches the effect "
            "'Mailer::snd'; did you mean 'Mailer::send'?",
            "E       recorded actions (3 distinct, 3 in all):",
            "E         shop::Web::checkout  x1",
            "E         shop::Orders::place  x1",
            "E         shop::Mailer::send  x1",
        ])

    def test_failure_shows_the_causal_chain(self, project: pytest.Pytester) -> None:
        """A cause missing from the chain fails with the effect's chain as a tree."""
        project.makepyfile(test_chain="""
            from actiontrace.testing import assert_caused
            from shopapp import checkout, mailer

            def test_wrong_cause(action_trace):
                checkout("book", "bob@example.com")
                mailer.send("audit@example.com")
                assert_caused(action_trace, "Mailer::send", "Orders::place")
        """)
        result = project.runpytest_subprocess()
        result.assert_outcomes(failed=1)
        result.stdout.fnmatch_lines([
            "E       AssertionError: assert_caused: 'Mailer::send' is not on the causal chain of "
            "'Orders::place'",
            "E       causal chain of Orders::place (action *):",
            "E       [[]Web::checkout[]] (* µs) flow_token=*",
            "E       │   └─ Input: {}",
            "E       └──> [[]Orders::place[]] (* µs)",
            'E              └─ Input: {"item":"book"}',
            'E              └─ Output: {"order":"book"}',
        ])

    def test_isolation_between_tests(self, project: pytest.Pytester) -> None:
        """Each test sees only its own actions; a reaction declared in one is gone in the next."""
        project.makepyfile(test_iso="""
            import actiontrace
            from actiontrace import synchronization
            from shopapp import checkout, mailer, Orders

            BEFORE = actiontrace.get_tracer()
            SEEN = []

            def test_one(action_trace):
                @synchronization("Audit", when=Orders.place)
                def audit(record):
                    mailer.send("audit@example.com")
                checkout("book", "bob@example.com")
                assert len(action_trace.find_actions(action="send")) == 2
                SEEN.append(action_trace)

            def test_two(action_trace):
                assert action_trace is not SEEN[0]
                assert action_trace.find_actions() == []
                checkout("pen", "eve@example.com")
                assert len(action_trace.find_actions(action="send")) == 1  # no Audit now

            def test_three_without_the_fixture():
                assert actiontrace.get_tracer() is BEFORE
                assert SEEN[0].stats()["writer_alive"] is False  # shut down after its test
        """)
        result = project.runpytest_subprocess()
        result.assert_outcomes(passed=3)

    def test_earlier_tracer_restored_as_it_was(self, project: pytest.Pytester) -> None:
        """The tracer configured before the test is reinstalled, not shut down, with its data."""
        project.makepyfile(test_restore="""
            import actiontrace
            from shopapp import orders

            def test_before():
                actiontrace.configure(module="outer", enabled=False)

            def test_inside(action_trace):
                assert action_trace.module != "outer"
                orders.place("x")  # recorded: the fixture turns recording on
                assert len(action_trace.find_actions()) == 1
                actiontrace.configure(module="replaced")  # the test may configure too

            def test_after():
                tracer = actiontrace.get_tracer()
                assert tracer.module == "outer"
                orders.place("y")  # recording is off again, as it was
                actiontrace.configure(module="outer2")
                orders.place("z")
                assert [r.inputs for r in actiontrace.get_tracer().find_actions()] == [{"item": "z"}]
        """)
        result = project.runpytest_subprocess()
        result.assert_outcomes(passed=3)

    def test_async_tests(self, project: pytest.Pytester) -> None:
        """With pytest-asyncio, async actions and gathered tasks are recorded and asserted on."""
        project.makepyfile(test_async="""
            import asyncio
            from actiontrace import flow, synchronization
            from actiontrace.testing import assert_caused, flow_shape
            from shopapp import mailer, orders

            @synchronization("Notify")
            async def notify(to):
                await mailer.send_async(to)

            async def test_gathered(action_trace):
                async with flow("shop::Web::bulk") as token:
                    orders.place("book")
                    await asyncio.gather(*(notify(f"{i}@example.com") for i in range(3)))
                assert_caused(action_trace, "Orders::place", "Mailer::send_async", via="Notify")
                # Each task's trigger is place (siblings never see each other's actions).
                assert flow_shape(action_trace.get_trace(token)) == (
                    "Web::bulk\\n  Orders::place\\n"
                    + "\\n".join(["    Mailer::send_async  <-Notify-"] * 3))

            async def test_awaited_in_turn(action_trace):
                async with flow("shop::Web::bulk") as token:
                    orders.place("book")
                    await notify("a@example.com")
                assert flow_shape(action_trace.get_trace(token)) == (
                    "Web::bulk\\n  Orders::place\\n    Mailer::send_async  <-Notify-")
        """)
        result = project.runpytest_subprocess()
        result.assert_outcomes(passed=2)

    def test_with_xdist(self, project: pytest.Pytester) -> None:
        """Under pytest-xdist (-n 2) every test still has its own tracer."""
        project.makepyfile(test_x="""
            import pytest
            from shopapp import orders

            @pytest.mark.parametrize("n", range(8))
            def test_own_actions(action_trace, n):
                orders.place(n)
                assert [r.inputs for r in action_trace.find_actions()] == [{"item": n}]
        """)
        result = project.runpytest_subprocess("-n", "2")
        result.assert_outcomes(passed=8)
        result.stdout.fnmatch_lines(["*2 workers*"])

    def test_opt_in_only(self, project: pytest.Pytester) -> None:
        """A test that does not ask for the fixture records into the usual global tracer."""
        project.makepyfile(test_plain="""
            import actiontrace
            from shopapp import orders

            def test_a():
                orders.place(1)

            def test_b():
                assert [r.inputs for r in actiontrace.get_tracer().find_actions()] == [{"item": 1}]
        """)
        result = project.runpytest_subprocess()
        result.assert_outcomes(passed=2)

    def test_can_be_disabled(self, project: pytest.Pytester) -> None:
        """-p no:actiontrace removes the fixture."""
        project.makepyfile(test_off="""
            def test_needs_it(action_trace):
                pass
        """)
        result = project.runpytest_subprocess("-p", "no:actiontrace")
        result.assert_outcomes(errors=1)
        result.stdout.fnmatch_lines(["*fixture 'action_trace' not found*"])


class TestIsolatedTracer:
    def test_in_process(self) -> None:
        """The context manager behind the fixture restores the global tracer and reactions."""
        outer = actiontrace.get_tracer()

        @actiontrace.action(concept="iso::A")
        def a() -> int:
            return 1

        with isolated_tracer() as tracer:
            assert actiontrace.get_tracer() is tracer

            @actiontrace.synchronization("React", when=a)
            def react(record: actiontrace.ActionRecord) -> None:
                b()

            @actiontrace.action(concept="iso::B")
            def b() -> int:
                return 2

            a()
            assert len(tracer.find_actions()) == 2
        assert actiontrace.get_tracer() is outer
        a()
        assert [r.action for r in outer.find_actions(concept_uri="iso")] == ["a"]

    def test_settings_restored(self) -> None:
        """configure(redact=..., max_value_bytes=...) inside the block does not outlive it."""

        @actiontrace.action(concept="iso::C")
        def login(pin: str) -> None:
            pass

        with isolated_tracer():
            tracer = actiontrace.configure(redact=["pin"], max_value_bytes=100)
            login("1234")
            assert tracer.find_actions(concept_uri="iso")[0].inputs == {"pin": "[REDACTED]"}
        outer = actiontrace.get_tracer()
        login("1234")
        assert outer.find_actions(concept_uri="iso")[-1].inputs == {"pin": "1234"}
        assert tracer.stats()["writer_alive"] is False  # the block's configure() shut down
