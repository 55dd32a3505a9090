"""actiontrace.instrument / uninstrument (docs/reference.md, Across services): code you do not own, recorded as @action would."""

from __future__ import annotations

import importlib
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import actiontrace
from actiontrace import flow, instrument, synchronization, uninstrument

SDK = '''
class PaymentError(Exception):
    pass


def charge(amount, currency="EUR", *, api_key=None, **extra):
    if amount < 0:
        raise PaymentError("negative amount")
    return {"charged": amount, "currency": currency}


class Gateway:
    fee = 2

    def __init__(self, name):
        self.name = name

    def refund(self, order_id, password=None):
        return {"refunded": order_id, "by": self.name}

    @classmethod
    def create(cls, name):
        return cls(name)

    @staticmethod
    def validate(card):
        return len(card) == 16

    async def capture(self, order_id):
        return {"captured": order_id}


class Sub(Gateway):
    pass
'''


@pytest.fixture
def sdk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh, not yet imported module of its own name per test."""
    name = f"paysdk_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(SDK))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    for target in ("charge", "Gateway.refund", "Gateway.create", "Gateway.validate",
                   "Gateway.capture", "Sub.refund"):
        uninstrument(f"{name}:{target}")
    sys.modules.pop(name, None)


@pytest.fixture
def tracer() -> actiontrace.ActionTracer:
    return actiontrace.configure()


def actions(tracer: actiontrace.ActionTracer) -> list[actiontrace.ActionRecord]:
    return tracer.find_actions()


class TestFunctions:
    def test_function_recorded_like_action(self, sdk: str, tracer: actiontrace.ActionTracer) -> None:
        """Inputs by parameter name (defaults, **kwargs), redaction, outputs, concept."""
        mod = importlib.import_module(sdk)
        instrument(f"{sdk}:charge")
        assert mod.charge(5, api_key="k", memo="m") == {"charged": 5, "currency": "EUR"}
        (rec,) = actions(tracer)
        assert (rec.concept_uri, rec.action) == (sdk, "charge")
        assert rec.inputs == {"amount": 5, "currency": "EUR", "api_key": "[REDACTED]",
                              "extra": {"memo": "m"}}
        assert rec.outputs == {"charged": 5, "currency": "EUR"}

    def test_errors_recorded_and_raised(self, sdk: str, tracer: actiontrace.ActionTracer) -> None:
        """An exception is the action's error and reaches the caller unchanged."""
        mod = importlib.import_module(sdk)
        instrument(f"{sdk}:charge", concept="pay::Sdk", name="charge_card")
        with pytest.raises(mod.PaymentError):
            mod.charge(-1)
        (rec,) = actions(tracer)
        assert (rec.concept_uri, rec.action, rec.status) == ("pay::Sdk", "charge_card", "error")
        assert rec.outputs == {"error": "negative amount", "error_type": f"{sdk}.PaymentError"}

    def test_applied_on_import(self, sdk: str, tracer: actiontrace.ActionTracer) -> None:
        """A module not imported yet is instrumented when it is imported."""
        instrument(f"{sdk}:charge")
        assert sdk not in sys.modules
        mod = importlib.import_module(sdk)
        mod.charge(1)
        assert [r.action for r in actions(tracer)] == ["charge"]

    def test_from_import_before_instrument_is_not_patched(
        self, sdk: str, tracer: actiontrace.ActionTracer
    ) -> None:
        """Like any monkeypatch, a name imported before instrument() keeps the original."""
        mod = importlib.import_module(sdk)
        early = mod.charge
        instrument(f"{sdk}:charge")
        early(1)
        assert actions(tracer) == []
        mod.charge(1)
        assert len(actions(tracer)) == 1


class TestMethods:
    def test_instance_class_and_static_methods(self, sdk: str, tracer: actiontrace.ActionTracer) -> None:
        """self/cls left out of inputs; the concept is module::Class as for @action."""
        mod = importlib.import_module(sdk)
        for target in ("Gateway.refund", "Gateway.create", "Gateway.validate"):
            instrument(f"{sdk}:{target}")
        gw = mod.Gateway.create("acme")
        assert isinstance(gw, mod.Gateway)
        assert gw.refund(7, password="pw") == {"refunded": 7, "by": "acme"}
        assert mod.Gateway.refund(gw, 8) == {"refunded": 8, "by": "acme"}
        assert mod.Gateway.validate("1" * 16) is True
        recs = [(r.concept_uri, r.action, r.inputs) for r in actions(tracer)]
        concept = f"{sdk}::Gateway"
        assert recs == [
            (concept, "create", {"name": "acme"}),
            (concept, "refund", {"order_id": 7, "password": "[REDACTED]"}),
            (concept, "refund", {"order_id": 8, "password": "[REDACTED]"}),
            (concept, "validate", {"card": "1" * 16}),
        ]

    async def test_async_method(self, sdk: str, tracer: actiontrace.ActionTracer) -> None:
        """An async method's action covers the awaited body (and stays a coroutine function)."""
        import inspect

        mod = importlib.import_module(sdk)
        instrument(f"{sdk}:Gateway.capture")
        assert inspect.iscoroutinefunction(mod.Gateway.capture)
        assert await mod.Gateway("x").capture(3) == {"captured": 3}
        (rec,) = actions(tracer)
        assert (rec.action, rec.inputs, rec.outputs) == ("capture", {"order_id": 3}, {"captured": 3})

    def test_in_a_synchronization_gets_the_edge(self, sdk: str, tracer: actiontrace.ActionTracer) -> None:
        """An instrumented call inside a sync gets the edge an @action would."""
        mod = importlib.import_module(sdk)
        instrument(f"{sdk}:charge")

        @synchronization("OnCheckout")
        def on_checkout() -> None:
            mod.charge(3)

        with flow("shop::Web::checkout"):
            on_checkout()
        (rec,) = [r for r in actions(tracer) if r.action == "charge"]
        assert tracer.find_producing_sync(rec.id) == "OnCheckout"


class TestIdempotence:
    def test_twice_wraps_once_and_uninstrument_restores(self, sdk: str,
                                                        tracer: actiontrace.ActionTracer) -> None:
        """instrument twice records once; uninstrument puts the original back."""
        mod = importlib.import_module(sdk)
        original = vars(mod.Gateway)["refund"]
        instrument(f"{sdk}:Gateway.refund")
        instrument(f"{sdk}:Gateway.refund")
        mod.Gateway("a").refund(1)
        assert len(actions(tracer)) == 1
        uninstrument(f"{sdk}:Gateway.refund")
        assert vars(mod.Gateway)["refund"] is original
        uninstrument(f"{sdk}:Gateway.refund")
        mod.Gateway("a").refund(2)
        assert len(actions(tracer)) == 1

    def test_uninstrument_before_import_cancels(self, sdk: str, tracer: actiontrace.ActionTracer) -> None:
        """uninstrument() of a pending target: the later import is left alone."""
        instrument(f"{sdk}:charge")
        uninstrument(f"{sdk}:charge")
        importlib.import_module(sdk).charge(1)
        assert actions(tracer) == []

    def test_new_options_replace_old(self, sdk: str, tracer: actiontrace.ActionTracer) -> None:
        """instrument again with another name: one wrapper, the new name."""
        mod = importlib.import_module(sdk)
        instrument(f"{sdk}:charge")
        instrument(f"{sdk}:charge", name="pay")
        mod.charge(1)
        assert [r.action for r in actions(tracer)] == ["pay"]

    def test_inherited_method(self, sdk: str, tracer: actiontrace.ActionTracer) -> None:
        """Sub.refund (defined on the base) is instrumented on Sub only."""
        mod = importlib.import_module(sdk)
        instrument(f"{sdk}:Sub.refund")
        mod.Sub("s").refund(1)
        mod.Gateway("g").refund(2)
        assert [r.inputs for r in actions(tracer)] == [{"order_id": 1, "password": "[REDACTED]"}]
        uninstrument(f"{sdk}:Sub.refund")
        assert "refund" not in vars(mod.Sub)  # inherited again, as before


class TestBadTargets:
    @pytest.mark.parametrize("target", ["nocolon", "pkg:", ":f", "pkg:a b", "p-q:f", 42])
    def test_malformed_target(self, target: Any) -> None:
        """Targets not of the form 'package.module:attr' are refused."""
        with pytest.raises((ValueError, TypeError)):
            instrument(target)

    def test_missing_attribute_of_imported_module(self, sdk: str) -> None:
        """An imported module without the attribute: AttributeError now."""
        importlib.import_module(sdk)
        with pytest.raises(AttributeError):
            instrument(f"{sdk}:nope")
        with pytest.raises(TypeError):
            instrument(f"{sdk}:Gateway.fee")

    def test_missing_attribute_at_import_only_warns(self, sdk: str,
                                                    caplog: pytest.LogCaptureFixture) -> None:
        """At a later import, a missing attribute is logged; the import succeeds."""
        instrument(f"{sdk}:nope")
        try:
            assert importlib.import_module(sdk).charge(1)["charged"] == 1
        finally:
            uninstrument(f"{sdk}:nope")
        assert "cannot instrument" in caplog.text
