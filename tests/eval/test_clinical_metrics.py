"""Clinical report metrics: CheXbert label F1s against scikit-learn on fixed label vectors, and
the scorer plumbing (local weights in the packages' layouts, no network) with tiny random-weight
CheXbert and RadGraph models built from config."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import classification_report, f1_score

from generalist.catalog.task import TASKS
from generalist.errors import ConfigError
from generalist.eval.metrics.chexbert_scorer import (
    CHEXBERT_METRICS,
    OBSERVATIONS_5,
    OBSERVATIONS_14,
    CheXbertLabeler,
    chexbert_f1,
)
from generalist.eval.metrics.compute import report_generation_metrics
from generalist.eval.metrics.scorers import CLINICAL_METRICS, ScorerConfig, check_scorers
from generalist.eval.metrics.tokenizer_compat import Transformers4Tokenizer

pytest.importorskip("f1chexbert")
pytest.importorskip("radgraph")
from support import clinical_models as models

REPORTS = [
    "the heart size is normal . the lungs are clear",
    "mildly enlarged heart , small left pleural effusion",
    "no acute cardiopulmonary process",
    "moderate cardiomegaly , pulmonary edema , bibasilar atelectasis",
    "right pleural effusion , focal consolidation",
    "no pneumothorax . unchanged",
    "",
]


def test_chexbert_f1_on_fixed_label_vectors_matches_sklearn() -> None:
    # CheXbert classes per (report, observation): 0 blank, 1 positive, 2 negative, 3 uncertain
    rng = np.random.default_rng(0)
    refs = rng.integers(0, 4, size=(30, 14))
    hyps = np.where(rng.random((30, 14)) < 0.6, refs, rng.integers(0, 4, size=(30, 14)))
    refs[:, 13] = rng.integers(0, 2, size=30)  # No Finding has two classes
    out = chexbert_f1(refs, hyps)
    five = [OBSERVATIONS_14.index(n) for n in OBSERVATIONS_5]
    for plus, positive in (("", [1]), ("_plus", [1, 3])):
        r, h = np.isin(refs, positive).astype(int), np.isin(hyps, positive).astype(int)
        for n, cols in (("14", list(range(14))), ("5", five)):
            for avg in ("micro", "macro"):
                expected = f1_score(r[:, cols], h[:, cols], average=avg, zero_division=0)
                assert out[f"chexbert_{avg}_f1_{n}{plus}"] == pytest.approx(expected, abs=1e-12)
    # "+" is f1chexbert's own "rrg" mapping: its classification_report gives the same figures
    r, h = np.isin(refs, [1, 3]).astype(int), np.isin(hyps, [1, 3]).astype(int)
    report = classification_report(r, h, output_dict=True, zero_division=0)
    assert out["chexbert_micro_f1_14_plus"] == pytest.approx(report["micro avg"]["f1-score"])
    assert out["chexbert_macro_f1_14_plus"] == pytest.approx(report["macro avg"]["f1-score"])
    assert out["chexbert_micro_f1_14"] != out["chexbert_micro_f1_14_plus"]
    # worked example: one report, Cardiomegaly positive in both, Edema positive only in the ref
    ref, hyp = np.zeros((1, 14), int), np.zeros((1, 14), int)
    ref[0, [1, 4]] = 1
    hyp[0, 1] = 1
    small = chexbert_f1(ref, hyp)
    assert small["chexbert_micro_f1_5"] == pytest.approx(2 * 1 * 0.5 / 1.5)  # P 1, R 1/2
    assert small["chexbert_macro_f1_5"] == pytest.approx((1 + 0 + 0 + 0 + 0) / 5)
    assert set(out) == set(CHEXBERT_METRICS)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("scorers")
    model = models.tiny_chexbert(root / "chexbert")
    radgraph = models.tiny_radgraph(root / "rg")
    return {"chexbert": root / "chexbert", "model": model, "radgraph": radgraph}


def test_chexbert_labels_from_local_weights_match_the_package_path(weights: dict) -> None:
    from f1chexbert.f1chexbert import F1CheXbert
    from transformers import BertTokenizer

    labeler = CheXbertLabeler(weights["chexbert"], batch_size=3)
    classes = labeler.labels(REPORTS)
    assert classes.shape == (len(REPORTS), 14)
    assert len(np.unique(classes)) >= 2  # the random heads do tell reports apart
    # f1chexbert's own per-report path (get_label, one report at a time, no padding) on the
    # model that wrote the checkpoint gives the same classes as the batched, padded one
    package = F1CheXbert.__new__(F1CheXbert)
    torch.nn.Module.__init__(package)
    tokenizer = BertTokenizer.from_pretrained(str(weights["chexbert"]))
    package.tokenizer, package.model = Transformers4Tokenizer(tokenizer), weights["model"]
    package.device = torch.device("cpu")
    as_package = {0: "", 1: 1, 2: 0, 3: -1}
    for report, row in zip(REPORTS, classes):
        expected = package.get_label(report, mode="classification")
        assert [as_package[int(c)] for c in row] == expected


def test_clinical_metrics_through_report_generation(weights: dict) -> None:
    scorers = ScorerConfig(chexbert=weights["chexbert"], radgraph=weights["radgraph"])
    targets, predictions = REPORTS[:6], [*REPORTS[:3], *reversed(REPORTS[3:6])]
    out = report_generation_metrics(targets, predictions, CLINICAL_METRICS, scorers)
    assert set(out) == set(CLINICAL_METRICS)
    labeler = CheXbertLabeler(weights["chexbert"])
    expected = chexbert_f1(labeler.labels(targets), labeler.labels(predictions))
    assert {k: out[k] for k in CHEXBERT_METRICS} == pytest.approx(expected)
    same = report_generation_metrics(
        targets, targets, ("radgraph_f1", "radgraph_f1_simple"), scorers
    )
    assert same == {"radgraph_f1": pytest.approx(1.0), "radgraph_f1_simple": pytest.approx(1.0)}
    assert out["radgraph_f1"] < 1.0  # three of six reports differ
    assert 0.0 <= out["radgraph_f1_complete"] <= out["radgraph_f1_simple"] + 1e-12


def test_missing_weights_name_the_config_key(weights: dict, tmp_path: Path) -> None:
    report = TASKS.get("mimic_cxr_report")
    assert set(CLINICAL_METRICS) <= set(report.metrics)  # Med-PaLM M Table 2 lists them first
    with pytest.raises(ConfigError, match=r"eval\.scorers\.chexbert=FOLDER"):
        check_scorers([report], ScorerConfig(radgraph=weights["radgraph"]))
    with pytest.raises(ConfigError, match=r"eval\.scorers\.radgraph=FOLDER"):
        check_scorers([report], ScorerConfig(chexbert=weights["chexbert"]))
    with pytest.raises(ConfigError, match=r"eval\.scorers\.chexbert=.*no chexbert\.pth"):
        check_scorers([report], ScorerConfig(chexbert=tmp_path))
    with pytest.raises(ConfigError, match=r"eval\.scorers\.radgraph=.*unpack"):
        check_scorers([report], ScorerConfig(chexbert=weights["chexbert"], radgraph=tmp_path))
    check_scorers([TASKS.get("easy_vqa_caption")], ScorerConfig())  # no clinical metric: fine
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_scorers([report], ScorerConfig(skip_missing=True, chexbert=weights["chexbert"]))
    assert any("eval.scorers.radgraph is not set: left out" in str(w.message) for w in caught)
    kept = report_generation_metrics(
        REPORTS[:2], REPORTS[:2], CLINICAL_METRICS, ScorerConfig(skip_missing=True)
    )
    assert kept == {}


def test_encoder_named_by_hub_id_is_refused(weights: dict, tmp_path: Path) -> None:
    import json
    import shutil

    copy = tmp_path / "rg"
    shutil.copytree(weights["radgraph"] / "radgraph", copy / "radgraph")
    config = json.loads((copy / "radgraph" / "config.json").read_text())
    config["model"]["embedder"]["token_embedders"]["bert"]["model_name"] = "allenai/scibert"
    (copy / "radgraph" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="names encoder 'allenai/scibert', not a local folder"):
        check_scorers([], ScorerConfig(radgraph=copy))
