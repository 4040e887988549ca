"""The import paths of generalist 0.1 that user modules were written against, still accepted.

0.2 moved the flat modules into stage folders. A user module written for 0.1
(`from generalist.task import TASKS, Task`, `from generalist.mixture import MIXTURES`,
`from generalist.records import DATASETS`, `from generalist.stream import build_stream`)
keeps working: each old name is an alias of the module that now defines those names, and the
first import of one warns (DeprecationWarning) with the new path. Aliases only: no code here
re-defines or re-exports a name.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from types import ModuleType

# old module -> the module that holds its public names now
MOVED = {
    "generalist.task": "generalist.catalog",
    "generalist.mixture": "generalist.catalog",
    "generalist.records": "generalist.catalog",
    "generalist.stream": "generalist.mixing.stream",
}


class _Alias(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(
            f"`{spec.name}` is `{self.target}` since generalist 0.2; import from there "
            f"(the old path will be removed in 0.3)",
            DeprecationWarning,
            stacklevel=4,
        )
        return importlib.import_module(self.target)

    def exec_module(self, module: ModuleType) -> None:
        pass  # the target module is already executed


class LegacyPathFinder(importlib.abc.MetaPathFinder):
    """Finds the 0.1 module names of MOVED and hands out the modules that replaced them."""

    def find_spec(self, name: str, path: object = None, target: object = None):
        if name not in MOVED:
            return None
        return importlib.util.spec_from_loader(name, _Alias(MOVED[name]))


def install() -> None:
    """Put the finder on sys.meta_path once (generalist/__init__.py calls it)."""
    if not any(isinstance(f, LegacyPathFinder) for f in sys.meta_path):
        sys.meta_path.append(LegacyPathFinder())
