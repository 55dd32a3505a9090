"""The record/frame layout (``actiontrace.recording._layout``) and that nothing bypasses it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import actiontrace
from actiontrace.recording import _codegen, _layout

PACKAGE = Path(actiontrace.__file__).parent
# Names the package gives records and frames: a bare number after one is a slot.
RECORD_NAMES = {"rec", "record", "frame", "cur", "owner", "root", "_at_cur", "_at_rec"}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "_viewer" not in p.parts)


def _subscripted(node: ast.Subscript) -> str | None:
    """The name a subscript is taken of (``rec`` in ``rec[4]``, ``rec`` in ``self.rec[4]``)."""
    value = node.value
    if isinstance(value, ast.Name):
        return value.id
    if isinstance(value, ast.Attribute):
        return value.attr.lstrip("_") if value.attr != "_at_rec" else value.attr
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Name):
        return value.func.id + "()"
    return None


def _bare_number(node: ast.AST) -> bool:
    return (isinstance(node, ast.Constant) and type(node.value) is int) or (
        isinstance(node, ast.UnaryOp) and _bare_number(node.operand)
    )


def _bare_subscripts(tree: ast.AST) -> list[tuple[int, str]]:
    return [
        (node.lineno, str(_subscripted(node)))
        for node in ast.walk(tree)
        if isinstance(node, ast.Subscript) and _bare_number(node.slice)
    ]


# Bare numbers allowed in the modules that handle records, on what is not a record: the
# (frame, last completed) pair ``state()`` returns, ``sys.argv``, lists of records or parts.
NOT_RECORDS = {"state()", "argv", "records", "parts"}


class TestLayout:
    def test_slots_are_numbered_in_order(self) -> None:
        """Each slot name is its own position, the record first, then the frame."""
        assert [getattr(_layout, name) for name in _layout.SLOTS] == list(range(13))
        assert _layout.OUTPUTS == _layout.RECORD_SLOTS - 1
        assert len(_layout.SLOTS) == _layout.FRAME_SLOTS

    def test_new_record_builds_a_record_or_a_frame(self) -> None:
        """new_record gives 8 slots, or 13 with the frame's, and refuses other shapes."""
        rec = _layout.new_record("spec", 1, None, 10, None, "running", b"{}", None)
        assert len(rec) == _layout.RECORD_SLOTS and rec[_layout.STATUS] == "running"
        frame = _layout.new_record("spec", 1, None, 10, None, "running", b"{}", None,
                                   "part", None, None, None, 0)
        assert len(frame) == _layout.FRAME_SLOTS and frame[_layout.PART] == "part"
        with pytest.raises(TypeError, match="13 slots"):
            _layout.new_record("spec", 1, None, 10, None, "running", b"{}", None, "part")

    def test_base_and_sync_frames(self) -> None:
        """A base frame has no action; a sync frame names its owner, label and trigger."""
        base = _layout.base_frame("part")
        assert base[_layout.ID] is None and base[_layout.DEPTH] == 0
        sync = _layout.sync_frame("part", base, "S", 7, 2)
        assert (sync[_layout.OWNER], sync[_layout.SYNC], sync[_layout.TRIGGER]) == (base, "S", 7)
        assert sync[_layout.DEPTH] == 2 and len(sync) == _layout.FRAME_SLOTS

    def test_list_source_renders_every_slot_in_order(self) -> None:
        """The wrapper's record literal is the layout, unnamed slots None."""
        assert _layout.list_source(ID="i", DEPTH="d") == (
            "[None, i, None, None, None, None, None, None, None, None, None, None, d]"
        )
        with pytest.raises(ValueError, match="NOPE"):
            _layout.list_source(NOPE="x")


class TestNoBareSubscripts:
    def test_no_record_is_subscripted_with_a_number(self) -> None:
        """Nowhere in the package is a record or frame indexed by a bare number."""
        found = [
            f"{path.relative_to(PACKAGE)}:{line} {name}[...]"
            for path in _modules()
            for line, name in _bare_subscripts(ast.parse(path.read_text()))
            if name in RECORD_NAMES
        ]
        assert found == []

    def test_modules_handling_records_use_no_bare_numbers(self) -> None:
        """Modules that import the layout index nothing but non-records by number."""
        found = []
        for path in _modules():
            text = path.read_text()
            if "actiontrace.recording._layout" not in text:
                continue
            found += [
                f"{path.relative_to(PACKAGE)}:{line} {name}[...]"
                for line, name in _bare_subscripts(ast.parse(text))
                if name not in NOT_RECORDS
            ]
        assert found == []

    def test_the_wrapper_template_names_its_slots(self) -> None:
        """The generated wrapper's source is written with slot names, not numbers."""
        assert re.findall(r"\[-?\d+\]", _codegen.TEMPLATE) == []
        assert "_at_rec[{DURATION}]" in _codegen.TEMPLATE

    def test_the_scan_finds_a_bare_subscript(self) -> None:
        """The scan itself sees ``rec[4]`` and ``self.rec[-1]`` (it can fail)."""
        tree = ast.parse("rec[4] = 1\nx = self.rec[-1]\ny = rec[ID]\n")
        assert _bare_subscripts(tree) == [(1, "rec"), (2, "rec")]
