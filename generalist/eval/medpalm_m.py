"""The paper's reference rows: Med-PaLM M (arXiv 2307.14334 v1) Table 3, per model size (Table 2
prints only the best of the three), as fractions. A reference point, not a comparison: the
paper's models, data and splits differ."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

# Med-PaLM M (arXiv 2307.14334 v1) Table 3, percent, (12B, 84B, 562B). VQA "F1" is taken to be
# the token F1; the MIMIC-CXR classification row is the 5-condition task.
MEDPALM_M: dict[str, dict[str, tuple[float, float, float]]] = {
    "medqa": {"accuracy": (29.22, 46.11, 69.68)},
    "medmcqa": {"accuracy": (32.20, 47.60, 62.59)},
    "pubmedqa": {"accuracy": (48.60, 71.40, 80.00)},
    "mimic_iii_summarization": {"rouge_l": (29.45, 31.47, 32.03), "bleu": (12.14, 15.36, 15.21)},
    "vqa_rad": {"bleu1": (64.02, 69.38, 71.27), "token_f1": (50.66, 59.90, 62.06)},
    "slake_vqa": {"bleu1": (90.77, 92.70, 91.64), "token_f1": (86.22, 89.28, 87.50)},
    "path_vqa": {"bleu1": (68.97, 70.16, 72.27), "token_f1": (57.24, 59.51, 62.69)},
    "mimic_cxr_report": {
        "bleu1": (30.90, 32.31, 31.73),
        "bleu4": (10.43, 11.31, 11.50),
        "rouge_l": (26.16, 27.29, 27.49),
        "cider_d": (23.43, 26.17, 25.27),
    },
    "mimic_cxr_classification": {
        "macro_auc": (76.67, 78.35, 79.09),
        "macro_f1": (38.33, 36.83, 41.57),
    },
    "pad_ufes_20": {"macro_auc": (95.57, 97.27, 96.08), "macro_f1": (78.42, 84.32, 77.03)},
    "vindr_mammo": {"macro_auc": (66.29, 71.76, 71.42), "macro_f1": (29.81, 35.70, 33.90)},
    "cbis_ddsm_mass": {"macro_auc": (70.11, 73.09, 73.31), "macro_f1": (47.23, 49.98, 51.12)},
    "cbis_ddsm_calc": {"macro_auc": (81.40, 82.22, 80.90), "macro_f1": (67.86, 63.81, 63.03)},
}
MEDPALM_SIZES = ("12B", "84B", "562B")


def reference_rows(metrics: Mapping[str, str]) -> pd.DataFrame:
    """Med-PaLM M rows (fractions) for the tasks and metrics of the table; NaN where absent."""
    import pandas as pd

    rows = {}
    for i, size in enumerate(MEDPALM_SIZES):
        rows[f"Med-PaLM M {size} (paper)"] = {
            t: MEDPALM_M.get(t, {}).get(m, (math.nan,) * 3)[i] / 100.0 for t, m in metrics.items()
        }
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(metrics), dtype=float)
