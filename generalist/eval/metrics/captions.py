"""Report-generation n-gram metrics through pycocoevalcap (the COCO caption toolkit; needs Java).

Every text is whitespace-normalised here first (runs of any Unicode whitespace -> one space):
pycocoevalcap's PTBTokenizer (a Java jar run with -preserveLines) reads one text per line and
treats `\\r`, `\\u2028`, `\\u0085`, ... as line ends, so one such character in one text would
shift every later line and score later pairs against the wrong references, silently.

- `bleu1`, `bleu4`: corpus-level BLEU (pycocoevalcap `Bleu(4)`: clipped n-gram counts summed
  over the corpus, brevity penalty from the closest reference length) on PTB-tokenised,
  lower-cased text with punctuation removed. Med-PaLM M Table 2/3 "BLEU-1", "BLEU-4".
- `cider_d`: pycocoevalcap's `Cider`, which implements CIDEr-D (tf-idf n-grams 1-4, clipped
  counts, Gaussian length penalty sigma=6, x10) with document frequencies from the evaluated
  references; its raw value (0 to 10; identical texts score 10 when their n-grams are not in
  every reference) is what papers print as a percentage (Med-PaLM M's "CIDEr-D 26.17%" is
  0.2617). Corpus-level (mean of per-report scores with corpus document frequencies).
- `meteor`: METEOR 1.5 (pycocoevalcap's jar, `-l en -norm`), the corpus score it returns.
- `rouge_l`: see generalist.eval.metrics.text (mean per-report ROUGE-L F-measure).

pycocoevalcap writes its tokenizer's input into a temporary file inside its own package folder
and runs both jars with that folder as the working directory, so on a read-only install
(containers, shared clusters) it fails. Both run here from a writable working copy made once
per process in a temporary directory (its .py files copied, its jars and data linked), removed
at exit.
"""

from __future__ import annotations

import atexit
import importlib.util
import shutil
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from generalist.errors import GeneralistError
from generalist.eval.metrics.text import check_pairs, rouge_l

COCO_METRICS = ("bleu1", "bleu4", "cider_d", "meteor", "rouge_l")
# What the working copy needs of pycocoevalcap: the two wrappers, their jars and METEOR's data.
_COPIED = {"tokenizer": ("ptbtokenizer.py",), "meteor": ("meteor.py",)}
_LINKED = {"tokenizer": ("stanford-corenlp-3.4.1.jar",), "meteor": ("meteor-1.5.jar", "data")}

_lock = threading.Lock()
_state: dict[str, Any] = {}


def normalize_whitespace(text: str) -> str:
    """Runs of whitespace (any Unicode line or paragraph separator included) -> one space."""
    return " ".join(str(text).split())


def require_java(what: str) -> None:
    """GeneralistError unless a `java` executable is on PATH (pycocoevalcap runs jars)."""
    if shutil.which("java") is None:
        raise GeneralistError(
            f"{what} needs Java (pycocoevalcap runs the PTB tokenizer and METEOR as jars) but "
            f"no `java` is on PATH; install a JRE (e.g. `apt-get install default-jre-headless`) "
            f"or drop the metric from the task"
        )


def pycocoevalcap_dir() -> Path:
    """The installed pycocoevalcap package folder (found without importing it)."""
    spec = importlib.util.find_spec("pycocoevalcap")
    if spec is None or not spec.submodule_search_locations:
        raise GeneralistError("report generation metrics need pycocoevalcap: pip install it")
    return Path(next(iter(spec.submodule_search_locations)))


def _place(source: Path, target: Path) -> None:
    try:
        target.symlink_to(source, target_is_directory=source.is_dir())
    except OSError:  # no symlinks on this filesystem: copy instead
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)


def working_copy() -> Path:
    """The process's writable copy of pycocoevalcap's tokenizer/ and meteor/ folders."""
    with _lock:
        if "dir" not in _state:
            source = pycocoevalcap_dir()
            work = Path(tempfile.mkdtemp(prefix="generalist-pycocoevalcap-"))
            atexit.register(shutil.rmtree, work, True)
            for sub in _COPIED:
                (work / sub).mkdir()
                for name in _COPIED[sub]:
                    shutil.copyfile(source / sub / name, work / sub / name)
                for name in _LINKED[sub]:
                    _place(source / sub / name, work / sub / name)
            _state["dir"] = work
        return _state["dir"]


def _wrapper(sub: str, filename: str) -> ModuleType:
    """pycocoevalcap's wrapper module loaded from the working copy: its `__file__` (from which
    it derives where to write and run) is then the copy's."""
    path = working_copy() / sub / filename
    spec = importlib.util.spec_from_file_location(f"_generalist_coco_{sub}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ptb_tokenize(texts: Sequence[str]) -> list[str]:
    """PTB-tokenised, lower-cased texts without punctuation, in one JVM run."""
    tokenizer = _wrapper("tokenizer", "ptbtokenizer.py").PTBTokenizer()
    captions = {str(i): [{"caption": normalize_whitespace(t)}] for i, t in enumerate(texts)}
    tokens = tokenizer.tokenize(captions)
    return [tokens[str(i)][0] for i in range(len(texts))]


def meteor_scorer() -> Any:  # noqa: ANN401 (pycocoevalcap's Meteor, from a copy of its module)
    """One METEOR jar per process, from the working copy (starting it loads paraphrase tables,
    10-20 s)."""
    with _lock:
        meteor = _state.get("meteor")
    if meteor is None:
        meteor = _wrapper("meteor", "meteor.py").Meteor()
        with _lock:
            meteor = _state.setdefault("meteor", meteor)
    return meteor


def caption_metrics(
    targets: Sequence[str], predictions: Sequence[str], metrics: Sequence[str] = COCO_METRICS
) -> dict[str, float]:
    """The pycocoevalcap metrics of `metrics` (and rouge_l) on whitespace-normalised text."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    check_pairs(targets, predictions)
    targets = [normalize_whitespace(t) for t in targets]
    predictions = [normalize_whitespace(p) for p in predictions]
    out: dict[str, float] = {}
    if {"bleu1", "bleu4", "cider_d", "meteor"} & set(metrics):
        require_java("report generation metrics")
        # One tokenizer run (one JVM start) for references and hypotheses together.
        tokens = ptb_tokenize([*targets, *predictions])
        n = len(targets)
        refs = {i: [tokens[i]] for i in range(n)}
        hyps = {i: [tokens[n + i]] for i in range(n)}
        if {"bleu1", "bleu4"} & set(metrics):
            bleu, _ = Bleu(4).compute_score(refs, hyps, verbose=0)
            out["bleu1"], out["bleu4"] = float(bleu[0]), float(bleu[3])
        if "cider_d" in metrics:
            out["cider_d"] = float(Cider().compute_score(refs, hyps)[0])
        if "meteor" in metrics:
            out["meteor"] = float(meteor_scorer().compute_score(refs, hyps)[0])
    if "rouge_l" in metrics:
        out["rouge_l"] = rouge_l(targets, predictions)
    return {k: v for k, v in out.items() if k in metrics}
