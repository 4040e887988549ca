"""Clinical report metrics (CheXbert F1s, RadGraph F1) and where their model weights are.

    eval:
      scorers:
        chexbert: /models/chexbert        # chexbert.pth + bert-base-uncased config.json, vocab.txt
        radgraph: /models/radgraph        # radgraph/ (config.json, vocabulary/, weights.th)
        radgraph_model: radgraph          # or radgraph-xl
        device: cpu                       # or cuda, cuda:1
        skip_missing: false               # true: leave a metric out when its weights are not set

Nothing is downloaded at run time. A task whose metrics need a scorer with no folder set stops
before any generation with an error naming the key (`check_scorers`), unless skip_missing.
Each scorer is loaded once per process. The packages (f1chexbert, radgraph) are the optional
`clinical` extra: `pip install -e .[clinical]`.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from generalist.catalog.task import Task
from generalist.config_base import StrictConfig
from generalist.errors import ConfigError, GeneralistError
from generalist.eval.metrics.chexbert_scorer import (
    CHEXBERT_METRICS,
    CheXbertLabeler,
    check_chexbert_dir,
)
from generalist.eval.metrics.radgraph_scorer import (
    RADGRAPH_METRICS,
    RadGraphScorer,
    check_model_dir,
)

CLINICAL_METRICS = CHEXBERT_METRICS + RADGRAPH_METRICS


class ScorerConfig(StrictConfig):
    """`eval.scorers`: local folders of the clinical scorers' weights (see the module doc)."""

    config_key: ClassVar[str] = "eval.scorers"

    chexbert: Path | None = Field(None, description="folder: chexbert.pth, config.json, vocab.txt")
    radgraph: Path | None = Field(None, description="folder holding <radgraph_model>/")
    radgraph_model: Literal["radgraph", "radgraph-xl"] = Field(
        "radgraph", description="which RadGraph model under the radgraph folder"
    )
    device: str = Field("cpu", description="cpu, cuda or cuda:N")
    batch_size: int = Field(16, ge=1, description="CheXbert reports per forward")
    skip_missing: bool = Field(False, description="leave out metrics whose weights are not set")


_WHAT = {
    "chexbert": "the CheXbert weights: a folder holding chexbert.pth (StanfordAIMI/RRG_scorers) "
    "and bert-base-uncased's config.json and vocab.txt",
    "radgraph": "the RadGraph weights: a folder holding radgraph/ (the radgraph package's "
    "radgraph.tar.gz unpacked: config.json, vocabulary/, weights.th)",
}
_lock = threading.Lock()
_loaded: dict[tuple[Any, ...], Any] = {}


def _scorer_of(metric: str) -> str:
    return "chexbert" if metric in CHEXBERT_METRICS else "radgraph"


def missing_scorers(metrics: Sequence[str], config: ScorerConfig | None) -> list[str]:
    """The scorers ("chexbert", "radgraph") `metrics` need whose folder is not set."""
    config = config or ScorerConfig()
    needed = sorted({_scorer_of(m) for m in metrics if m in CLINICAL_METRICS})
    return [name for name in needed if getattr(config, name) is None]


def check_scorers(tasks: Sequence[Task], config: ScorerConfig | None) -> None:
    """ConfigError naming the key when a task's clinical metric has no weights or its folder
    lacks the files (before any generation); a warning instead with skip_missing when the key
    is not set. Also checks the packages are installed."""
    config = config or ScorerConfig()
    if config.chexbert is not None:
        check_chexbert_dir(config.chexbert)
    if config.radgraph is not None:
        check_model_dir(config.radgraph, config.radgraph_model)
    for task in tasks:
        for name in missing_scorers(task.metrics, config):
            metrics = [m for m in task.metrics if _scorer_of(m) == name and m in CLINICAL_METRICS]
            why = f"task {task.name!r} reports {', '.join(metrics)}, which need {_WHAT[name]}"
            if config.skip_missing:
                warnings.warn(f"{why}; eval.scorers.{name} is not set: left out", stacklevel=2)
                continue
            raise ConfigError(
                f"{why}: set eval.scorers.{name}=FOLDER (nothing is downloaded at run time), or "
                f"eval.scorers.skip_missing=true to leave them out"
            )
        if any(m in CLINICAL_METRICS for m in task.metrics):
            _require_packages()


def _require_packages() -> None:
    import importlib.util

    absent = [p for p in ("f1chexbert", "radgraph") if importlib.util.find_spec(p) is None]
    if absent:
        raise GeneralistError(
            f"the clinical report metrics need {', '.join(absent)}: pip install -e '.[clinical]'"
        )


def _scorer(name: str, config: ScorerConfig) -> CheXbertLabeler | RadGraphScorer:
    """The loaded scorer (once per process and settings)."""
    folder = getattr(config, name)
    key = (name, str(folder), config.radgraph_model, config.device, config.batch_size)
    with _lock:
        if key not in _loaded:
            if name == "chexbert":
                _loaded[key] = CheXbertLabeler(folder, config.device, config.batch_size)
            else:
                _loaded[key] = RadGraphScorer(folder, config.radgraph_model, config.device)
        return _loaded[key]


def clinical_metrics(
    targets: Sequence[str],
    predictions: Sequence[str],
    metrics: Sequence[str],
    config: ScorerConfig | None,
) -> dict[str, float]:
    """The CheXbert / RadGraph metrics among `metrics` (others ignored)."""
    config = config or ScorerConfig()
    wanted = [m for m in metrics if m in CLINICAL_METRICS]
    if not wanted:
        return {}
    missing = missing_scorers(wanted, config)
    if missing and not config.skip_missing:
        raise ConfigError(
            f"metric(s) {', '.join(wanted)} need eval.scorers.{missing[0]} ({_WHAT[missing[0]]})"
            f"; set it, or eval.scorers.skip_missing=true"
        )
    _require_packages()
    out: dict[str, float] = {}
    for name in sorted({_scorer_of(m) for m in wanted} - set(missing)):
        out.update(_scorer(name, config).f1(targets, predictions))
    return {k: v for k, v in out.items() if k in wanted}
