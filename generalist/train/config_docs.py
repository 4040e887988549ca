"""The config key reference of docs/config.md, generated from the pydantic models so it cannot
drift.

    python -m generalist.train.config_docs                         # print the table
    python -m generalist.train.config_docs --write docs/config.md  # replace the marked block

Every key of TrainConfig (nested sections included) is one row: dotted key, type, default and
the field's description; path keys say how they are resolved (generalist.train.config_paths).
tests/train/test_config_docs.py checks that docs/config.md holds exactly this table.
"""

from __future__ import annotations

import argparse
import json
import re
import types
import typing
from collections.abc import Iterator, Sequence
from pathlib import Path

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from generalist.train.config import TrainConfig
from generalist.train.config_paths import KIND_NOTES, PATH_KEYS

BEGIN = "<!-- config-keys: python -m generalist.train.config_docs --write docs/config.md -->"
END = "<!-- config-keys: end -->"


def _models(annotation: object) -> type[BaseModel] | None:
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def type_name(annotation: object) -> str:
    """A short readable name: `int`, `str | null`, `cosine \\| linear`, `list[str]`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join("null" if a is type(None) else type_name(a) for a in args)
    if origin is not None:
        inner = ", ".join(type_name(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    return "path" if annotation is Path else getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return ""
    if isinstance(value, Path):
        return f"`{value}`"
    if isinstance(value, str):
        return f"`{value}`"
    return f"`{json.dumps(list(value) if isinstance(value, tuple) else value)}`"


def _bounds(field: FieldInfo) -> str:
    names = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    found = []
    for item in field.metadata:
        for attr, sign in names.items():
            if getattr(item, attr, None) is not None:
                found.append(f"{sign} {getattr(item, attr)}")
    return f" ({', '.join(found)})" if found else ""


def config_rows(model: type[BaseModel] = TrainConfig, prefix: str = "") -> Iterator[list[str]]:
    """[key, type, default, meaning] for every field, sections before their keys."""
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        meaning = (field.description or "").strip()
        if key in PATH_KEYS:
            meaning += f"; {KIND_NOTES[PATH_KEYS[key]]}"
        meaning = meaning.replace("|", "\\|") + _bounds(field)
        section = _models(field.annotation)
        kind = "section" if section else type_name(field.annotation)
        if section and type(None) in typing.get_args(field.annotation):
            kind = "section \\| null"
        yield [f"`{key}`", kind, _default(field) if not section else "", meaning]
        if section is not None:
            yield from config_rows(section, f"{key}.")


def config_table() -> str:
    """The markdown table of every config key."""
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in config_rows()]
    return "\n".join(lines)


def replace_block(text: str, table: str) -> str:
    """`text` with the block between BEGIN and END replaced by `table`."""
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise ValueError(f"no {BEGIN!r} ... {END!r} block")
    return pattern.sub(lambda _: f"{BEGIN}\n{table}\n{END}", text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m generalist.train.config_docs")
    parser.add_argument("--write", type=Path, help="a markdown file with the marker block")
    args = parser.parse_args(argv)
    if args.write is None:
        print(config_table())
        return 0
    text = args.write.read_text(encoding="utf-8")
    args.write.write_text(replace_block(text, config_table()), encoding="utf-8")
    print(f"config keys written to {args.write}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
