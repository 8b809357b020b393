"""The README's Python example runs as written, on the bundled default model."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from simkit.fsutil import resolve_version

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example(tmp_path, monkeypatch):
    from simkit import assets

    if not (assets.DEFAULT_MODEL / "config.json").is_file():
        pytest.skip("no bundled default model in this checkout")
    monkeypatch.delenv("SIMKIT_MODEL", raising=False)
    monkeypatch.chdir(tmp_path)
    code = re.search(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S).group(1)
    scope: dict = {}
    exec(compile(code, str(README), "exec"), scope)
    assert scope["X"].shape == (4, 384)
    assert len(scope["hits"][0]) == 2 and scope["hits"][0][0]["id"] in {"q1", "q2", "q3", "q4"}
    assert (resolve_version(tmp_path / "faq-index") / "config.json").is_file()
    assert scope["load_index"]("faq-index").search_text(["花呗还款"], top_k=1, encoder=scope["enc"])
