"""Caption metrics on a read-only pycocoevalcap install: the library writes its tokenizer's input
into its own package folder; generalist runs its tokenizer and METEOR from a writable copy."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from generalist.eval.metrics.captions import caption_metrics, pycocoevalcap_dir

COCO_NO_METEOR = ("bleu1", "bleu4", "cider_d", "rouge_l")

CHILD = """
import json, sys
import pycocoevalcap
assert list(pycocoevalcap.__path__)[0].startswith(sys.argv[1]), pycocoevalcap.__path__
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
try:
    PTBTokenizer().tokenize({"a": [{"caption": "the heart is normal"}]})
    direct = "ok"
except OSError as err:
    direct = type(err).__name__
from generalist.eval.metrics.captions import caption_metrics
texts = ["the heart size is normal", "small left pleural effusion"]
out = caption_metrics(texts, [texts[0], "small right pleural effusion"], sys.argv[2].split(","))
print(json.dumps({"direct": direct, "metrics": out}))
"""


def _read_only_copy(root: Path) -> Path:
    """pycocoevalcap copied under root (its .py files copied, its jars and data linked), then
    made read-only: a read-only install."""
    source = pycocoevalcap_dir()
    target = root / "pycocoevalcap"
    shutil.copytree(
        source,
        target,
        ignore=shutil.ignore_patterns("__pycache__", "spice", "example"),
        copy_function=lambda s, d: os.symlink(s, d) if not s.endswith(".py") else shutil.copy(s, d),
    )
    for path in [target, *target.rglob("*")]:
        if not path.is_symlink():
            path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH | (path.is_dir() and 0o111))
    return target


def _read_only_command(package: Path, command: list[str]) -> list[str]:
    """`command` with `package` read-only. Permission bits stop anyone but root; root writes
    through them, so as root the folder is bind-mounted read-only in a private mount namespace
    (unshare), where writing fails with EROFS as on a read-only filesystem."""
    if os.geteuid() != 0:
        return command
    if subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode != 0:
        pytest.skip("running as root without user namespaces: cannot make a folder read-only")
    script = 'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" && shift && exec "$@"'
    return ["unshare", "-rm", "sh", "-c", script, "sh", str(package), *command]


@pytest.mark.slow  # starts METEOR (10-20 s)
def test_caption_metrics_with_a_read_only_pycocoevalcap(tmp_path: Path) -> None:
    root = tmp_path / "site"
    root.mkdir()
    try:
        package = _read_only_copy(root)
        metrics = "bleu1,bleu4,cider_d,meteor,rouge_l"
        command = [sys.executable, "-c", CHILD, str(root), metrics]
        done = subprocess.run(
            _read_only_command(package, command),
            env={**os.environ, "PYTHONPATH": str(root)},  # the copy is the installed package
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        result = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        for path in [root, *root.rglob("*")]:
            if not path.is_symlink():
                path.chmod(0o755)
        shutil.rmtree(root)
    assert result["direct"] in ("PermissionError", "OSError")  # the library alone fails
    out = result["metrics"]
    assert set(out) == {"bleu1", "bleu4", "cider_d", "meteor", "rouge_l"}
    assert out["bleu1"] == pytest.approx(8 / 9, abs=1e-6)  # 8 of 9 unigrams match, same lengths
    assert out["rouge_l"] == pytest.approx((1 + 0.75) / 2)
    assert 0.3 < out["meteor"] < 1.0
    texts = ["the heart size is normal", "small left pleural effusion"]
    here = caption_metrics(texts, [texts[0], "small right pleural effusion"], COCO_NO_METEOR)
    assert {k: out[k] for k in here} == pytest.approx(here)  # same numbers as a writable install
