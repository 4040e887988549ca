"""A torchvision that is installed but does not import beside the installed torch.

The common pip mishap: a CUDA torchvision from PyPI next to a CPU torch (or versions of two
releases). transformers asks only whether the package is *installed* (find_spec), so it imports
torchvision for the processors and fails with a long traceback. `torchvision_usable()` imports
it once; when that fails it hides the package from this process (`sys.modules["torchvision"] =
None`: find_spec then answers None and `import torchvision` raises ImportError), so transformers
takes its torchvision-free paths and our fallback processors are used, and says so in one line
naming both versions and the fix. `broken_torchvision_hint()` is that line for an error where no
fallback exists.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys

_state: dict[str, str] = {}  # "problem": why torchvision failed to import (once per process)


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def torchvision_usable() -> bool:
    """True when torchvision imports; False when absent, or installed but broken (then hidden)."""
    if "problem" in _state:
        return False
    if sys.modules.get("torchvision") is not None:
        return True
    if "torchvision" in sys.modules or importlib.util.find_spec("torchvision") is None:
        return False
    try:
        import torchvision  # noqa: F401
    except Exception as err:  # any failure (RuntimeError, OSError, ...) means a broken install
        first = (str(err).strip().splitlines() or [""])[0]
        _hide(f"{type(err).__name__}: {first}")
        # one line on stderr, as a warning would add its source line
        print(
            f"generalist: {broken_torchvision_hint()}; using processors without it", file=sys.stderr
        )
        return False
    return True


def _hide(problem: str) -> None:
    _state["problem"] = problem
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]  # half-imported submodules of the failed import
    sys.modules["torchvision"] = None  # type: ignore[assignment]
    try:  # transformers caches its answer: clear it so it asks find_spec again
        from transformers.utils import import_utils

        for name in ("is_torchvision_available", "is_torchvision_v2_available"):
            cached = getattr(import_utils, name, None)
            if cached is not None and hasattr(cached, "cache_clear"):
                cached.cache_clear()
    except ImportError:
        pass


def broken_torchvision_hint() -> str:
    """'torchvision X does not import beside torch Y (...); fix: ...' (empty when it imports)."""
    if "problem" not in _state:
        return ""
    tv, torch = _version("torchvision"), _version("torch")
    return (
        f"torchvision {tv} is installed but does not import beside torch {torch} "
        f"({_state['problem']}); fix: pip uninstall torchvision, or install the build made for "
        f"torch {torch} (for a CPU torch: pip install torchvision --index-url "
        f"https://download.pytorch.org/whl/cpu)"
    )
