"""Tasks declared in YAML: your own JSONL/CSV data as registered tasks, without writing Python.

A declarations file (or the run config itself: only its `own_tasks` / `own_mixture` keys are
read) is imported like a task module: `--import own_tasks.yaml` on `generalist shard`, `render`,
`tasks`, or `imports: [own_tasks.yaml]` in the run config (train, evaluate). Each entry of
`own_tasks` registers a dataset and a task of the same name; docs/own_data.md has a worked
example. Paths are relative to the declarations file.

    own_tasks:
      - name: skin_lesion
        kind: classification
        data: photos/labels.csv            # .csv/.tsv or .jsonl
        fields: {image: file, label: diagnosis, split: split}
        question: Which diagnosis fits the lesion?
        labels: [nevus, melanoma]
        rate: 0.2
    own_mixture: {name: clinic, beside: demo}  # demo's tasks share the remaining 0.8
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Literal

import yaml
from pydantic import ConfigDict, Field

from generalist.catalog.loading import DECLARATION_LOADERS
from generalist.catalog.mixture import MIXTURES, Mixture
from generalist.catalog.parts import PromptParts
from generalist.catalog.records import DATASETS, BadRecord, Dataset, Record
from generalist.catalog.task import KIND_METRICS, TASKS, Task
from generalist.config_base import StrictConfig
from generalist.errors import ConfigError
from generalist.sources.own_files import FLAT_FIELDS, ROW_KEYS, FlatSource, iter_records

# The field each kind answers with (a conversation row fills all of them with its answer).
TARGET_FIELD = {
    "vqa": "answer",
    "classification": "label",
    "report_generation": "report",
    "summarization": "answer",
    "medical_qa": "answer",
}
DEFAULT_QUESTION = {
    "classification": "Which of the options best describes the image?",
    "report_generation": "Write the findings of this study.",
    "summarization": "Summarize the text.",
}


class OwnTask(StrictConfig):
    """One task over one data file (see the module docstring)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    kind: str
    data: Path
    form: Literal["flat", "conversation"] | None = None
    fields: dict[str, str] = Field(default_factory=dict)
    split_field: str = ""
    fractions: dict[Literal["validation", "test"], float] = Field(
        default_factory=lambda: {"validation": 0.1, "test": 0.1}
    )
    seed: int = 0
    instructions: list[str] = Field(min_length=1)
    question: str = ""
    labels: list[str] = Field(default_factory=list)
    shots: int = 1
    rate: float = Field(1.0, ge=0)
    version: int = 1
    description: str = ""


class OwnMixture(StrictConfig):
    """A mixture of the own tasks at their rates, `beside` a registered mixture (whose tasks
    share what the own rates leave: own rates are then fractions summing below 1)."""

    name: str
    beside: str | None = None
    min_per_batch: int = Field(0, ge=0)


class Declarations(StrictConfig):
    model_config = ConfigDict(extra="ignore", frozen=True)  # the rest of a run config: not ours
    own_tasks: list[OwnTask] = Field(min_length=1)
    own_mixture: OwnMixture | None = None


def source_of(task: OwnTask) -> FlatSource:
    """How the task's data file is read (form guessed from `fields`: none means conversation)."""
    form = task.form or ("flat" if task.fields else "conversation")
    unknown = sorted(set(task.fields) - set(FLAT_FIELDS) - set(ROW_KEYS))
    if unknown:
        raise ConfigError(
            f"own task {task.name!r}: fields {unknown} are not ours to map; map some of "
            f"{[*FLAT_FIELDS, *ROW_KEYS]} to your column names"
        )
    target = TARGET_FIELD[task.kind]
    if form == "flat" and target not in task.fields:
        raise ConfigError(
            f"own task {task.name!r} (kind {task.kind}) answers with field {target!r}: "
            f"add `{target}: <your column>` to its `fields`"
        )
    return FlatSource(
        path=task.data,
        form=form,
        fields=task.fields,
        target=target,
        labels=tuple(task.labels),
        split_field=task.split_field,
        fractions=task.fractions,
        seed=task.seed,
        name=task.name,
    )


def parts_of(task: OwnTask, has_question: bool) -> Callable[[Mapping[str, object]], PromptParts]:
    """Record fields -> PromptParts by kind: a question field if the rows have one, else the
    task's fixed `question`; classification offers every declared label as an option."""
    fixed = task.question or DEFAULT_QUESTION.get(task.kind, "")
    target = TARGET_FIELD[task.kind]
    labels = tuple(task.labels)

    def parts(fields: Mapping[str, object]) -> PromptParts:
        question = str(fields.get("question") or "") if has_question else ""
        options = labels if task.kind == "classification" else tuple(fields.get("options") or ())
        return PromptParts(
            question=question or fixed,
            target=str(fields[target]),
            context=str(fields.get("context") or ""),
            options=tuple(str(o) for o in options),  # type: ignore[union-attr]
        )

    return parts


def register(task: OwnTask) -> Task:
    """Register the task's dataset (an adapter over its data file) and the task itself."""
    if task.kind not in KIND_METRICS:
        raise ConfigError(
            f"own task {task.name!r}: unknown kind {task.kind!r}; one of {list(KIND_METRICS)}"
        )
    source = source_of(task)

    def records(path: Path, split: str) -> Iterator[Record | BadRecord]:
        return iter_records(FlatSource(**{**source.__dict__, "path": Path(path)}), split)

    DATASETS.register(
        Dataset(
            name=task.name,
            iter_records=records,
            version=task.version,
            description=task.description or f"{task.data.name} (declared in YAML)",
            published_format=f"{source.form} {task.data.suffix} file",
            labels=tuple(task.labels),
            default_source=lambda: task.data,
        )
    )
    has_question = source.form == "conversation" or "question" in task.fields
    if not has_question and not (task.question or task.kind in DEFAULT_QUESTION):
        raise ConfigError(
            f"own task {task.name!r}: give a `question` or map a question column in `fields`"
        )
    return TASKS.register(
        Task(
            name=task.name,
            kind=task.kind,
            dataset=task.name,
            instructions=tuple(task.instructions),
            parts=parts_of(task, has_question),
            shots=task.shots,
            labels=tuple(task.labels),
            eval_split="test",
            version=task.version,
            description=task.description or f"declared in YAML over {task.data.name}",
        )
    )


def mixture_of(declared: Declarations) -> Mixture | None:
    """The declared mixture: own rates as given, the `beside` mixture's scaled into the rest."""
    spec = declared.own_mixture
    if spec is None:
        return None
    own = {t.name: t.rate for t in declared.own_tasks}
    tasks = dict(own)
    if spec.beside is not None:
        total = sum(own.values())
        if not 0 < total < 1:
            raise ConfigError(
                f"own_mixture {spec.name!r}: beside {spec.beside!r} the own task rates are "
                f"fractions of the mix; they sum to {total:g}, give a sum between 0 and 1"
            )
        beside = MIXTURES.get(spec.beside)
        for name, rate in beside.rates().items():
            tasks[name] = rate * (1 - total)
    return Mixture(
        name=spec.name,
        tasks=tuple(tasks.items()),
        description=f"own tasks {list(own)}" + (f" beside {spec.beside}" if spec.beside else ""),
        min_per_batch=spec.min_per_batch,
    )


def load_declarations(path: Path) -> list[Task]:
    """Read, check and register the declarations of a YAML file (see the module docstring)."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(raw, dict) or "own_tasks" not in raw:
        raise ConfigError(f"{path}: no `own_tasks` list (the tasks declared in YAML)")
    declared = Declarations.parse(raw, where=str(path))
    base = path.parent
    anchored = [t.model_copy(update={"data": base / t.data}) for t in declared.own_tasks]
    declared = declared.model_copy(update={"own_tasks": anchored})
    registered = [register(task) for task in declared.own_tasks]
    mixture = mixture_of(declared)
    if mixture is not None:
        MIXTURES.register(mixture)
    return registered


DECLARATION_LOADERS[".yaml"] = DECLARATION_LOADERS[".yml"] = load_declarations
