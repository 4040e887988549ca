"""Where the paths of a training config point: one rule for every path key.

A relative path written in a config FILE is relative to the folder of that file (as in
docker-compose, tsconfig or pyproject files), so a config means the same from any working
directory and under any launcher. A relative path given on the COMMAND LINE (`key=value`
overrides, `--checkpoint`, `--out`) is relative to the current directory, like any other
argument. `load_config` applies the rule to the keys of PATH_KEYS as it reads the file, before
the overrides; the paths are joined lexically (`configs/../demo_out` becomes `demo_out`).
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from generalist.model.hub import looks_like_path
from generalist.shards.storage import is_url

# dotted key -> what makes its value a path (see _is_path)
PATH_KEYS: dict[str, str] = {
    "imports": "module",
    "shards": "path",
    "output_dir": "path",
    "deepspeed": "path",
    "resume": "checkpoint",
    "model.name_or_path": "model_source",
    "model.vision_encoder": "model_source",
    "model.language_model": "model_source",
    "model.tiny.vision_init": "path",
    "model.tiny.tokenizer_corpus": "path",
}

# How each kind reads in the generated config reference (generalist.train.config_docs).
KIND_NOTES: dict[str, str] = {
    "module": "file entries (`x.py`, `a/b.py`) are relative to the config file's folder",
    "path": "relative to the config file's folder",
    "checkpoint": "a checkpoint path is relative to the config file's folder",
    "model_source": "a path (it starts with `./`, `../`, `/` or `~`, has two or more `/`, or "
    "exists there) is relative to the config file's folder; else a hub id",
}


def _is_path(kind: str, value: str, base: Path) -> bool:
    if kind == "module":  # the rule of generalist.catalog.loading.import_user_module
        return value.endswith((".py", ".yaml", ".yml")) or "/" in value
    if kind == "checkpoint":
        return value.lower() not in ("auto", "none", "null", "")
    if kind == "model_source":
        return looks_like_path(value) or (base / value).exists()
    return not is_url(value)  # a shard root in object storage is where it says


def anchored(value: str, base: Path) -> str:
    """`value` joined onto `base` (the config file's folder) unless it is absolute or ~-based."""
    expanded = Path(value).expanduser()
    if expanded.is_absolute():
        return str(expanded)
    return os.path.normpath(os.path.join(base, value))


def anchor_paths(data: MutableMapping[str, Any], base: Path) -> None:
    """Rewrite, in place, the relative paths of PATH_KEYS in a config file's mapping `data`
    onto `base`, the file's folder. Values of the wrong type are left for validation."""
    for dotted, kind in PATH_KEYS.items():
        *parents, last = dotted.split(".")
        node: object = data
        for part in parents:
            node = node.get(part) if isinstance(node, MutableMapping) else None
        if not isinstance(node, MutableMapping) or last not in node:
            continue
        value = node[last]
        if isinstance(value, str) and _is_path(kind, value, base):
            node[last] = anchored(value, base)
        elif isinstance(value, list):
            node[last] = [
                anchored(v, base) if isinstance(v, str) and _is_path(kind, v, base) else v
                for v in value
            ]
