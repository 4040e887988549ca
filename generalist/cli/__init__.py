"""The `generalist` command: one subcommand per module of this package, each with main(argv).

`deepspeed --module generalist.cli ...` and `python -m generalist.cli ...` run it too
(generalist/cli/__main__.py).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import traceback
import warnings
from collections.abc import Sequence

from generalist.catalog.registry import close_matches_hint
from generalist.errors import GeneralistError
from generalist.redact import redact

# subcommand -> (module with main(argv), one-line help). Modules load lazily so that
# `generalist tasks` does not import torch or deepspeed.
COMMANDS: dict[str, tuple[str, str]] = {
    "tasks": ("generalist.cli.tasks", "list tasks and mixtures (name, kind, dataset, metrics)"),
    "render": ("generalist.cli.render", "print the exact prompts and targets a task produces"),
    "shard": ("generalist.cli.shard", "write a dataset's published files as WebDataset shards"),
    "pretrain-vision": (
        "generalist.cli.pretrain_vision",
        "pretrain a tiny model's vision tower on image labels",
    ),
    "train": ("generalist.cli.train", "train a model on a mixture (under the deepspeed launcher)"),
    "evaluate": ("generalist.cli.evaluate", "score a checkpoint on every task with its metrics"),
    "leaderboard": ("generalist.cli.leaderboard", "rank MLflow runs task by task"),
    "sync": ("generalist.cli.sync", "send a run directory's metrics/params/tables to MLflow"),
    "export": ("generalist.cli.export", "merge the LoRA adapter into a plain Hugging Face model"),
    "bench": ("generalist.cli.bench", "benchmarks: shard, stream, train"),
    "demo": ("generalist.cli.demo", "the end-to-end demo on easy-vqa"),
}


def show_no_secrets() -> None:
    """Warnings and tracebacks with URL passwords redacted (generalist.redact): a library may
    put a shard URL or tracking URI in its message."""
    show = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        show(redact(str(message)), category, filename, lineno, file, line)

    def excepthook(kind, value, tb):
        text = "".join(traceback.format_exception(kind, value, tb))
        sys.stderr.write(redact(text))

    warnings.showwarning = showwarning
    sys.excepthook = excepthook


def available_commands() -> dict[str, tuple[str, str]]:
    return {k: v for k, v in COMMANDS.items() if importlib.util.find_spec(v[0]) is not None}


def usage() -> str:
    lines = ["usage: generalist COMMAND [options]   (generalist COMMAND --help for more)", ""]
    commands = available_commands()
    width = max(map(len, commands)) + 1
    lines += [f"  {name:<{width}} {text}" for name, (_, text) in commands.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to a subcommand; user errors print one line and exit with code 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # The deepspeed launcher passes --local_rank=N first (LOCAL_RANK is in the env as well).
    argv = [a for a in argv if not a.startswith("--local_rank")]
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    commands = available_commands()
    if argv[0] not in commands:
        print(
            f"generalist: unknown command {argv[0]!r}; "
            f"{close_matches_hint(argv[0], list(commands))}",
            file=sys.stderr,
        )
        return 2
    module = importlib.import_module(commands[argv[0]][0])
    show_no_secrets()
    try:
        return int(module.main(argv[1:]) or 0)
    except GeneralistError as err:
        print(f"generalist {argv[0]}: {err.label}: {redact(str(err))}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"generalist {argv[0]}: interrupted", file=sys.stderr)
        return 130
