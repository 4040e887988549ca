"""Registry behaviour: duplicates and unknown names raise with close-match suggestions."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from generalist.catalog.mixture import MIXTURES, Mixture
from generalist.catalog.parts import vqa_parts
from generalist.catalog.registry import Registry
from generalist.catalog.task import TASKS, Task
from generalist.errors import DuplicateNameError, GeneralistError, UnknownNameError


@dataclass(frozen=True)
class Thing:
    name: str


def test_duplicate_name_raises() -> None:
    registry: Registry[Thing] = Registry("thing")
    registry.register(Thing("a"))
    with pytest.raises(DuplicateNameError, match="thing 'a' is already registered"):
        registry.register(Thing("a"))


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(UnknownNameError, match=r"unknown task 'vqa_radd'; did you mean 'vqa_rad'"):
        TASKS.get("vqa_radd")
    with pytest.raises(UnknownNameError, match=r"did you mean .*'slake_vqa'"):
        TASKS.get("slake")
    with pytest.raises(UnknownNameError, match=r"unknown mixture 'multimedbenc'.*'multimedbench'"):
        MIXTURES.get("multimedbenc")


def test_unknown_name_with_nothing_close_lists_known() -> None:
    registry: Registry[Thing] = Registry("thing")
    registry.register(Thing("alpha"))
    with pytest.raises(UnknownNameError, match=r"known: alpha"):
        registry.get("zzz")


def test_builtin_task_registered_twice_raises() -> None:
    with pytest.raises(DuplicateNameError, match="task 'medqa' is already registered"):
        TASKS.register(replace(TASKS.get("medqa")))


def test_declarations_are_frozen_and_validated() -> None:
    task = TASKS.get("medqa")
    with pytest.raises(AttributeError):
        task.shots = 2  # type: ignore[misc]
    with pytest.raises(GeneralistError, match="unknown kind 'qa'"):
        Task("x", "qa", "d", ("i",), vqa_parts)
    with pytest.raises(GeneralistError, match="shots must be 0, 1 or 2"):
        Task("x", "vqa", "d", ("i",), vqa_parts, shots=3)
    with pytest.raises(GeneralistError, match="lists its labels"):
        Task("x", "classification", "d", ("i",), vqa_parts)


def test_every_kind_has_its_metrics() -> None:
    # mimic_cxr_report adds the clinical metrics of Med-PaLM M's Table 2 (checked below)
    kinds = {t.kind: set(t.metrics) for t in TASKS if t.name != "mimic_cxr_report"}
    assert kinds["vqa"] == {"bleu1", "token_f1", "exact_match"}
    assert kinds["classification"] == {"accuracy", "macro_f1", "macro_auc"}
    assert kinds["report_generation"] == {"bleu1", "bleu4", "rouge_l", "cider_d", "meteor"}
    assert kinds["summarization"] == {"rouge_l", "bleu"}
    assert kinds["medical_qa"] == {"accuracy"}
    report = set(TASKS.get("mimic_cxr_report").metrics)
    assert report - kinds["report_generation"] == {
        *(f"chexbert_{avg}_f1_{n}{plus}" for avg in ("micro", "macro") for n in (14, 5)
          for plus in ("", "_plus")),
        "radgraph_f1", "radgraph_f1_simple", "radgraph_f1_complete",
    }  # fmt: skip
    assert kinds["report_generation"] < report


def test_multimedbench_rates_follow_table_a1() -> None:
    rates = MIXTURES.get("multimedbench").rates()
    # Table A.1 without PrecisionFDA (1.56) sums to 98.45 (the paper's rates are rounded).
    total = 3.13 + 6.25 + 3.13 + 0.15 + 2.64 + 1.90 + 59.90 + 11.98 + 6.25 + 1.56 + 1.56
    assert rates["mimic_cxr_report"] == pytest.approx(59.90 / total)
    assert rates["vqa_rad"] == pytest.approx(0.15 / total)
    assert rates["cbis_ddsm_mass"] + rates["cbis_ddsm_calc"] == pytest.approx(1.56 / total)
    assert sum(rates.values()) == pytest.approx(1.0)
    assert "pubmedqa" not in rates  # evaluation only
    sub = MIXTURES.get("multimedbench").rates(only=["medqa", "medmcqa"])
    assert sub == pytest.approx({"medqa": 3.13 / 9.38, "medmcqa": 6.25 / 9.38})


def test_mixture_validation() -> None:
    with pytest.raises(GeneralistError, match="rate of 'medqa' must be a number >= 0"):
        Mixture("m", (("medqa", -1.0),))
    with pytest.raises(GeneralistError, match="all rates are zero"):
        Mixture("m", (("medqa", 0.0),))
    with pytest.raises(UnknownNameError, match="unknown task 'medq'"):
        Mixture("m", (("medq", 1.0),)).rates()
