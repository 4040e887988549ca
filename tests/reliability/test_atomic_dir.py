"""generalist.atomic: a directory is replaced whole or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from generalist.atomic import atomic_dir


def test_a_failed_write_leaves_the_old_directory_and_no_temporary(tmp_path: Path) -> None:
    final = tmp_path / "model"
    with atomic_dir(final) as tmp:
        (tmp / "weights").write_text("v1")
    with pytest.raises(KeyboardInterrupt), atomic_dir(final) as tmp:
        (tmp / "weights").write_text("v2, half")
        raise KeyboardInterrupt
    assert (final / "weights").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_finished_write_replaces_the_whole_directory(tmp_path: Path) -> None:
    final = tmp_path / "model"
    with atomic_dir(final) as tmp:
        (tmp / "old_only").write_text("v1")
    with atomic_dir(final) as tmp:
        assert list(tmp.iterdir()) == []  # starts empty, even after a killed earlier write
        (tmp / "weights").write_text("v2")
    assert sorted(p.name for p in final.iterdir()) == ["weights"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
