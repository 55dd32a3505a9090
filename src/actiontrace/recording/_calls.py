"""A recorded call's slow paths: inputs the wrapper could not encode, a flow of its own.

The generated wrapper (``_codegen``) calls these only off its fast path: when encoding
the inputs raised, or when no flow is active (the call is then the root of a flow the
action starts for itself, ended when the call returns).
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import Token
from typing import TYPE_CHECKING, Any

from actiontrace._state import current_recorder
from actiontrace.recording import _ids
from actiontrace.recording._capture import capture_fallback, capture_value
from actiontrace.recording._context import frame_var
from actiontrace.recording._layout import START, base_frame
from actiontrace.recording._record import FlowPart

if TYPE_CHECKING:
    from actiontrace.recording._decorators import ActionSpec

__all__ = ["auto_flow", "auto_flow_async", "capture_inputs", "end_auto_flow", "open_auto_flow"]


def capture_inputs(spec: ActionSpec, args: Any, kwargs: Any) -> bytes:
    """The inputs of a call the wrapper could not encode: bound slowly, or raw."""
    try:
        return capture_value(spec.bind(*args, **kwargs), spec.redactor, inputs=True)
    except BaseException:  # noqa: BLE001 - the call does not match the signature (it will raise itself)
        return capture_fallback(args, kwargs, spec.redactor)


def open_auto_flow() -> tuple[FlowPart, Token[Any]]:
    """Open the flow a root action (no flow active) starts for itself, and enter it.

    Returns the part and the context token; ``end_auto_flow`` ends it after
    ``frame_var.reset(token)``. ``auto_flow`` wraps a call in these; an integration
    whose request action is the root of its flow (``contrib._pending``) calls them
    itself, which spares the coroutine level ``auto_flow_async`` adds.
    """
    part = current_recorder().open_part(_ids.new_id(), None, _ids.now_us())
    return part, frame_var.set((base_frame(part), None))


def auto_flow(wrapper: Callable[..., Any], func: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    """Run a root action (no flow active) in a flow of its own."""
    try:
        part, token = open_auto_flow()
    except BaseException:  # noqa: BLE001 - tracing must not stop the call
        return func(*args, **kwargs)
    try:
        return wrapper(*args, **kwargs)
    finally:
        frame_var.reset(token)
        end_auto_flow(part)


async def auto_flow_async(
    wrapper: Callable[..., Any], func: Callable[..., Any], args: Any, kwargs: Any
) -> Any:
    try:
        part, token = open_auto_flow()
    except BaseException:  # noqa: BLE001 - tracing never raises into the app
        return await func(*args, **kwargs)
    try:
        return await wrapper(*args, **kwargs)
    finally:
        frame_var.reset(token)
        end_auto_flow(part)


def end_auto_flow(part: FlowPart) -> None:
    """End a flow an action started for itself: its first record is its root."""
    if part.records:
        root = part.records[0]
        part.root_id = part.full_id(root)
        part.created_at = (root[START] + part.offset) // 1000
    part.recorder.close_part(part)
