"""RadGraph F1 of generated reports (Med-PaLM M Table 2/3 "F1-RadGraph", Delbrouck et al. 2022),
through the radgraph package's F1RadGraph, from local weights.

RadGraph (Jain et al. 2021) extracts clinical entities (anatomy, observations with their
certainty) and the relations between them from a report; F1RadGraph compares the reference's
graph with the generated one per report, and the scores are averaged over reports
(sentence/report level; an empty report scores 0):
- `radgraph_f1`: entities and relations ("partial", the RG_ER of Delbrouck et al.: an entity
  matches with its label, a relation with both ends and its label), the paper's F1-RadGraph;
- `radgraph_f1_simple`: entities only (RG_E); `radgraph_f1_complete`: entities with all their
  relations (RG_ER-bar).

The weights come from a local folder (`eval.scorers.radgraph`), never from the hub: it holds
`<model>/` (`eval.scorers.radgraph_model`, default `radgraph`, the 2021 model of the papers of
that time; or `radgraph-xl`) as the radgraph package unpacks its archive: `config.json`,
`vocabulary/`, `weights.th`. The BERT encoder that config.json names (model_name, twice) must be
a local folder holding its config and tokenizer files (its weights are in weights.th).
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from unittest import mock

from generalist.errors import ConfigError
from generalist.eval.metrics.tokenizer_compat import Transformers4Tokenizer

RADGRAPH_METRICS = ("radgraph_f1", "radgraph_f1_simple", "radgraph_f1_complete")
KEY = "eval.scorers.radgraph"


def encoder_names(config: dict[str, Any]) -> list[str]:
    """The encoder names a RadGraph config.json gives (its reader's and its model's)."""
    try:
        return [
            config["dataset_reader"]["token_indexers"]["bert"]["model_name"],
            config["model"]["embedder"]["token_embedders"]["bert"]["model_name"],
        ]
    except (KeyError, TypeError):
        return []


def check_model_dir(folder: Path, model: str) -> Path:
    """folder/model, checked: the package's file layout and a local encoder."""
    model_dir = Path(folder) / model
    missing = [
        n for n in ("config.json", "vocabulary", "weights.th") if not (model_dir / n).exists()
    ]
    if missing:
        raise ConfigError(
            f"{KEY}={folder}: no {', '.join(missing)} in {model_dir}; unpack the radgraph "
            f"package's {model}.tar.gz (StanfordAIMI/RRG_scorers) there"
        )
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{KEY}: {model_dir / 'config.json'} is not JSON ({err})") from None
    names = encoder_names(config)
    if not names:
        raise ConfigError(f"{KEY}: {model_dir / 'config.json'} names no BERT model_name")
    remote = sorted({n for n in names if not Path(n).is_dir()})
    if remote:
        raise ConfigError(
            f"{KEY}: {model_dir / 'config.json'} names encoder {remote[0]!r}, not a local "
            f"folder (nothing is downloaded at run time); save that model's config and "
            f"tokenizer to a folder and write its path as model_name there"
        )
    return model_dir


class RadGraphScorer:
    """F1RadGraph (reward level "all") over local weights, on CPU or one CUDA device."""

    def __init__(self, folder: Path, model: str = "radgraph", device: str = "cpu") -> None:
        from radgraph import F1RadGraph
        from radgraph.allennlp.common import cached_transformers

        check_model_dir(folder, model)
        cuda = -1 if device == "cpu" else int(device.partition(":")[2] or 0)
        load = cached_transformers.get_tokenizer

        def tokenizer(name: str, **kwargs: object) -> Transformers4Tokenizer:
            return Transformers4Tokenizer(load(name, **kwargs))

        # The package builds its tokenizers while it is constructed; hand it wrapped ones.
        with (
            mock.patch.object(cached_transformers, "get_tokenizer", tokenizer),
            contextlib.redirect_stdout(io.StringIO()),  # it prints the device it uses
        ):
            self.scorer = F1RadGraph(
                reward_level="all", model_type=model, model_cache_dir=str(folder), cuda=cuda
            )

    def f1(self, references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, float]:
        """Mean per-report RadGraph F1s (see the module docstring)."""
        (simple, partial, complete), *_ = self.scorer(refs=list(references), hyps=list(hypotheses))
        return {
            "radgraph_f1": float(partial),
            "radgraph_f1_simple": float(simple),
            "radgraph_f1_complete": float(complete),
        }
