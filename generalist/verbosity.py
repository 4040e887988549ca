"""Quiet libraries: our own progress bars and one-line messages are what a person watches.

Unless `--verbose` (or `logging.verbose: true`), `quiet_libraries()` silences what the libraries
print on their own: transformers' and huggingface_hub's progress bars ("Loading weights",
"Writing model shards") and info/warning logs, DeepSpeed's INFO lines and its "Setting
accelerator to CPU" notice, and the warnings the libraries raise on every run (deprecations,
"None of the inputs have requires_grad", ...). Our own warnings (generalist.*) still show.
Call it before deepspeed is imported: its accelerator notice is printed at import.
"""

from __future__ import annotations

import logging
import os
import warnings

LIBRARIES = ("transformers", "huggingface_hub", "peft", "accelerate", "deepspeed", "torch")


def quiet_libraries(verbose: bool = False) -> None:
    """Silence library logs, bars and warnings unless `verbose` (idempotent)."""
    if verbose:
        return
    import torch

    if "DS_ACCELERATOR" not in os.environ:
        # Set explicitly, DeepSpeed does not print its detection notice; only cuda and cpu
        # are decided here (any other accelerator is left to DeepSpeed's own detection).
        if torch.cuda.is_available():
            os.environ["DS_ACCELERATOR"] = "cuda"
        elif not (hasattr(torch, "xpu") and torch.xpu.is_available()):
            os.environ["DS_ACCELERATOR"] = "cpu"
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for name in ("DeepSpeed", "deepspeed", "transformers", "huggingface_hub", "peft"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for module in LIBRARIES:
        warnings.filterwarnings("ignore", module=rf"{module}(\.|$)")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # transformers is a dependency; a broken install reports elsewhere
        pass
    try:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    except ImportError:
        pass
