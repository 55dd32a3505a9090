"""The documentation builds (``mkdocs build --strict``) and its Python examples run.

Each page's ```python blocks run, in order, as one script in a fresh process in an empty
directory (a page reads top to bottom, later blocks use names from earlier ones). A block
preceded by ``<!-- skip -->`` is left out.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PAGES = [*sorted((REPO / "docs").glob("*.md")), REPO / "README.md"]
BLOCK = re.compile(r"(<!--\s*skip\s*-->\s*\n)?```python\n(.*?)```", re.DOTALL)


def python_blocks(page: Path) -> list[str]:
    """The page's runnable Python blocks (skipped ones left out)."""
    return [m.group(2) for m in BLOCK.finditer(page.read_text()) if not m.group(1)]


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    """`mkdocs build --strict` succeeds (nav, links, every page)."""
    mkdocs = BIN / "mkdocs"
    if not mkdocs.exists():
        pytest.skip("mkdocs is not installed (pip install -e '.[dev]')")
    res = subprocess.run([str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")],
                         cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
                         env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert res.returncode == 0, res.stdout + res.stderr
    assert (tmp_path / "site" / "index.html").exists()


@pytest.mark.parametrize("page", [p for p in PAGES if python_blocks(p)],
                         ids=lambda p: p.name)
def test_examples_run(page: Path, tmp_path: Path) -> None:
    """The page's Python examples run as one script, in a fresh process."""
    script = tmp_path / f"example_{page.stem}.py"  # never shadow a module (logging.py)
    script.write_text("\n\n".join(python_blocks(page)))
    res = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120, check=False)
    assert res.returncode == 0, f"{page.name}:\n{res.stderr[-3000:]}"


def test_skip_marker_is_honoured() -> None:
    """A block after <!-- skip --> is not extracted."""
    text = "```python\nok = 1\n```\n<!-- skip -->\n```python\nraise SystemExit(1)\n```\n"
    page = Path(__file__).with_name("_skip_probe.md")
    try:
        page.write_text(text)
        assert python_blocks(page) == ["ok = 1\n"]
    finally:
        page.unlink()
