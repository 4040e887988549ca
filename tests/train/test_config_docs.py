"""docs/config.md's config key reference is the one generated from the config models."""

from __future__ import annotations

from pathlib import Path

from generalist.train.config import TrainConfig
from generalist.train.config_docs import BEGIN, END, config_rows, config_table, main
from generalist.train.config_paths import PATH_KEYS

CONFIG_DOC = Path(__file__).resolve().parents[2] / "docs" / "config.md"


def _keys(model, prefix: str = "") -> set[str]:
    """Every dotted key of a pydantic model, sections included (independent of config_docs)."""
    from pydantic import BaseModel

    keys = set()
    for name, field in model.model_fields.items():
        keys.add(prefix + name)
        for sub in (field.annotation, *getattr(field.annotation, "__args__", ())):
            if isinstance(sub, type) and issubclass(sub, BaseModel):
                keys |= _keys(sub, f"{prefix}{name}.")
    return keys


def test_config_doc_holds_the_generated_table() -> None:
    text = CONFIG_DOC.read_text(encoding="utf-8")
    block = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert block == config_table(), (
        "docs/config.md's config keys differ from the models: run "
        "`python -m generalist.train.config_docs --write docs/config.md`"
    )


def test_every_key_is_listed_with_a_meaning() -> None:
    rows = {row[0].strip("`"): row for row in config_rows()}
    assert set(rows) == _keys(TrainConfig)
    assert {"logging.tracking_uri", "logging.experiment", "logging.run_name"} <= set(rows)
    for key, row in rows.items():
        meaning = row[3]
        assert meaning and not meaning.startswith(";"), f"config key {key!r} has no description"
    assert set(PATH_KEYS) <= set(rows)  # every path key exists, and says how it resolves
    for key in PATH_KEYS:
        assert "relative to the config file's folder" in rows[key][3], key
    assert rows["optim.lr"][1:3] == ["float", "`0.0001`"]
    assert rows["model"][1] == "section" and rows["model.tiny"][1] == "section \\| null"


def test_write_replaces_only_the_block(tmp_path: Path, capsys) -> None:
    page = tmp_path / "page.md"
    page.write_text(f"before\n{BEGIN}\nold table\n{END}\nafter\n")
    assert main(["--write", str(page)]) == 0
    assert page.read_text() == f"before\n{BEGIN}\n{config_table()}\n{END}\nafter\n"
