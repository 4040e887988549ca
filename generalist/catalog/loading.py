"""Loads the built-in task/mixture declarations and the user's own modules.

The registries call `load_builtins` the first time a name is looked up, so a fresh process that
imports only `generalist.mixing.stream` still finds the `demo` mixture and its tasks.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from generalist.errors import GeneralistError

_loaded_paths: dict[Path, object] = {}
# File suffix -> the reader of declarations in that format (tasks/declared.py adds .yaml/.yml).
DECLARATION_LOADERS: dict[str, Callable[[Path], object]] = {}
DECLARATION_SUFFIXES = (".yaml", ".yml")


def import_user_module(spec: str) -> object:
    """Import a module by dotted name (`my_pkg.my_tasks`) or by file path (`./my_tasks.py`);
    a `.yaml` file holds tasks declared in YAML (tasks/declared.py reads it)."""
    if spec.endswith((".py", *DECLARATION_SUFFIXES)) or "/" in spec:
        path = Path(spec).expanduser().resolve()
        if path in _loaded_paths:
            return _loaded_paths[path]
        if not path.is_file():
            raise GeneralistError(f"module file {spec!r} does not exist (resolved to {path})")
        if path.suffix in DECLARATION_SUFFIXES:
            load_builtins()  # registers the YAML reader (and the built-ins a mixture may use)
            _loaded_paths[path] = DECLARATION_LOADERS[path.suffix](path)
            return _loaded_paths[path]
        name = f"generalist_user_{path.stem}_{abs(hash(path)) % 10**8}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        assert module_spec is not None and module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        try:
            module_spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
        _loaded_paths[path] = module
        return module
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as err:
        if err.name and spec.startswith(err.name):
            raise GeneralistError(
                f"cannot import module {spec!r}: not found on sys.path; give a file path "
                f"(./my_tasks.py) or install the package that holds it"
            ) from None
        raise


BUILTIN_MODULES = ("generalist.tasks", "generalist.mixtures")


def load_builtins() -> None:
    """Import the built-in task families and mixtures (once; later calls cost a dict lookup)."""
    for name in BUILTIN_MODULES:
        importlib.import_module(name)


def load_catalog(extra_modules: Iterable[str] = ()) -> None:
    """Register the built-in tasks and mixtures, then those of `extra_modules`."""
    load_builtins()
    for spec in extra_modules:
        import_user_module(spec)
