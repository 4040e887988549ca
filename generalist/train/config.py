"""The training config: typed and strict. Defaults, then a YAML file, then `key=value` overrides.

    cfg = load_config("configs/demo.yaml", ["optim.lr=1e-3", "steps=200"])
    mixture = check_config(cfg)   # generalist.train.preflight

Overrides use dotted keys and YAML scalar values (`batch.micro_batch_size=8`,
`resume=none`, `tasks={easy_vqa: 1.0}`). An unknown key anywhere is a ConfigError naming the key
with close matches; a bad value names the key and what was given. `check_config` then checks the
things that live outside the file (registered tasks/mixture, shards on disk, model path, the
DeepSpeed JSON) so a run stops before deepspeed init and model building.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, field_validator, model_validator

from generalist.catalog.registry import close_matches
from generalist.config_base import StrictConfig, submodel
from generalist.errors import ConfigError
from generalist.eval.metrics.scorers import ScorerConfig
from generalist.model.config import LoraSettings, ModelConfig
from generalist.shards.storage import is_url
from generalist.train.config_paths import anchor_paths


class OptimConfig(StrictConfig):
    """AdamW with linear warmup, then decay to zero at `steps`."""

    lr: float = Field(1e-4, gt=0, description="peak learning rate (after warmup)")
    warmup_steps: int = Field(0, ge=0, description="steps of linear warmup from 0 to lr")
    decay: Literal["cosine", "linear", "constant"] = Field(
        "cosine", description="schedule after warmup, reaching 0 at `steps` (constant: stays)"
    )
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay on matrices only")
    grad_clip: float = Field(1.0, ge=0, description="max gradient norm; 0 disables clipping")
    nonfinite: Literal["stop", "skip"] = Field(
        "stop",
        description="a NaN/inf loss or gradient norm: stop the run (exit 3, nothing saved) or "
        "skip that step's update (generalist.train.stops)",
    )
    max_nonfinite_in_a_row: int = Field(
        3, ge=1, description="with nonfinite=skip: stop after this many such steps in a row"
    )
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas")


# generalist.train.step says what each means; global_tokens is exact over the global batch
LossNormalization = Literal["global_tokens", "per_example", "micro_batch"]


class BatchConfig(StrictConfig):
    """Batch geometry; the global batch is micro_batch_size x grad_accum x ranks."""

    micro_batch_size: int = Field(4, ge=1, description="examples per rank per forward")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    max_length: int = Field(512, ge=8, description="tokens per example (longer are cut)")
    group_by_length: int = Field(
        16, ge=0, description="sort this many micro-batches by length to cut padding; 0 = off"
    )
    loss_normalization: LossNormalization = Field(
        "global_tokens", description="token mean over the global batch, per_example or micro_batch"
    )
    max_tokens: int | None = Field(
        None,
        ge=8,
        description="tokens per micro-batch: padded positions (micro_batch_size a cap), or a "
        "packed row's length with packing",
    )
    packing: bool = Field(
        False, description="several examples per row of max_tokens, attention kept per example"
    )

    @model_validator(mode="after")
    def _budget(self) -> BatchConfig:
        # docs/packing.md: packing vs token budgets
        if self.packing and self.max_tokens is None:
            raise ValueError("batch.packing needs batch.max_tokens (the packed row's length)")
        if self.max_tokens is not None and self.max_tokens < self.max_length:
            raise ValueError(
                f"batch.max_tokens {self.max_tokens} is below batch.max_length "
                f"{self.max_length}: a longest example would not fit; raise batch.max_tokens"
            )
        return self


class CheckpointConfig(StrictConfig):
    """Checkpoints under `<output_dir>/checkpoints/`."""

    every: int = Field(500, ge=0, description="steps between checkpoints; 0 = only at the end")
    keep: int = Field(2, ge=1, description="complete checkpoints kept (older ones are removed)")


class EvalConfig(StrictConfig):
    """Periodic evaluation during training (`generalist evaluate` scores a checkpoint later)."""

    every: int = Field(0, ge=0, description="steps between evaluations; 0 = never")
    tasks: list[str] = Field(default_factory=list, description="default: the training tasks")
    max_examples: int = Field(64, ge=1, description="examples per task and evaluation")
    split: str = Field("validation", description="the split evaluated")
    scorers: ScorerConfig = Field(
        default_factory=ScorerConfig, description="local weights of the clinical report scorers"
    )


class LoggingConfig(StrictConfig):
    """Metrics: `<output_dir>/metrics.jsonl` always, MLflow from rank 0."""

    every: int = Field(10, ge=1, description="steps between logged metrics")
    tracking_uri: str | None = Field(
        None,
        description="MLflow tracking URI (a server, or sqlite:///file.db: a relative file is "
        "relative to the current directory); default $MLFLOW_TRACKING_URI, else "
        "sqlite:///./mlruns/mlflow.db",
    )
    experiment: str = Field("generalist", description="MLflow experiment name")
    run_name: str | None = Field(None, description="MLflow run name; default the output_dir name")
    mlflow: bool = Field(True, description="false: metrics.jsonl only, no MLflow")
    verbose: bool = Field(
        False, description="show the libraries' own bars, INFO lines and warnings (--verbose)"
    )


class TrainConfig(StrictConfig):
    """Everything one training run needs; `generalist train CONFIG k=v ...` fills it."""

    imports: list[str] = Field(
        default_factory=list,
        description="your modules that register tasks/mixtures: files (my_tasks.py) or dotted "
        "module names",
    )
    mixture: str | None = Field(None, description="a registered mixture (`generalist tasks`)")
    tasks: dict[str, float] | None = Field(
        None, description="or an inline mixture {task: rate} (exactly one of the two)"
    )
    shards: Path | str = Field(
        Path("shards"),
        description="root of the shards (`generalist shard`): a directory, or a URL (s3://, "
        "gs://, https://: fsspec)",
    )
    model: ModelConfig = Field(description="the model: name_or_path, tiny or composed parts")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="LoRA through peft")
    deepspeed: int | str = Field(
        2, description="a ZeRO stage 0-3 (the bundled JSONs) or a DeepSpeed JSON file"
    )
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="auto: bf16 on GPUs that have it, fp32 on CPU"
    )
    tf32: bool = Field(True, description="TF32 matmuls for fp32 work on CUDA Ampere+; else unused")
    optim: OptimConfig = Field(default_factory=OptimConfig, description="optimizer, schedule")
    batch: BatchConfig = Field(default_factory=BatchConfig, description="batch geometry")
    steps: int = Field(1000, ge=1, description="optimizer steps of the whole run")
    seed: int = Field(0, description="seeds the model init, the mixture stream and dropout")
    output_dir: Path = Field(
        Path("runs/default"), description="checkpoints, metrics.jsonl, params.json of the run"
    )
    checkpoint: CheckpointConfig = Field(
        default_factory=CheckpointConfig, description="when to save, how many to keep"
    )
    resume: str | None = Field(
        "auto", description="auto: the latest checkpoint under output_dir; a checkpoint; none"
    )
    eval: EvalConfig = Field(default_factory=EvalConfig, description="periodic evaluation")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="metrics, MLflow")
    num_workers: int = Field(0, ge=0, description="DataLoader workers for the stream")
    schedule: Literal["stratified", "iid"] | None = Field(
        None, description="the stream's task order (default: the mixture's, stratified)"
    )
    skip_bad: bool = Field(
        False,
        description="go on past bad samples, each counted (data/skipped_samples) and named in a "
        "warning: a damaged shard sample is replaced by a fixed record of the same task, an "
        "example whose image does not decode (or is above model.max_image_pixels) is dropped "
        "from its batch",
    )
    verify_shards: bool = Field(True, description="sha256 of the shards read vs the manifest")

    @field_validator("deepspeed")
    @classmethod
    def _stage_or_path(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value not in (0, 1, 2, 3):
            raise ValueError("a ZeRO stage is 0, 1, 2 or 3 (or give a path to a DeepSpeed JSON)")
        return value

    @field_validator("shards")
    @classmethod
    def _shard_root(cls, value: Path | str) -> Path | str:
        return value if is_url(value) else Path(value)  # a URL stays a string: Path folds "//"

    @field_validator("resume")
    @classmethod
    def _resume(cls, value: str | None) -> str | None:
        return None if value is None or value.lower() in ("none", "null", "") else value


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key written twice in one mapping (PyYAML keeps the last value
    silently: a task listed twice under `tasks:` would lose its first rate)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[object, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<:` merges are not duplicates
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(
                    f"{self.name}: key {key!r} is written twice in one mapping, at line "
                    f"{seen[key]} and line {line}; keep one"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, where: str) -> object:
    """yaml.safe_load, errors named. (PyYAML reads `1e-3` as a string; pydantic's lax mode turns
    it into the float a float field asks for, so `optim.lr=1e-3` works.)"""
    try:
        loader = _UniqueKeyLoader(text)
        loader.name = where
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as err:
        # one line: PyYAML's own message spans several, with the offending text quoted
        mark = getattr(err, "problem_mark", None)
        where_in = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        if isinstance(err, yaml.constructor.ConstructorError):  # e.g. !!python/object/apply
            raise ConfigError(
                f"{where}: refused{where_in} ({problem}): configs are plain YAML; tags that "
                f"construct Python objects are not allowed"
            ) from None
        raise ConfigError(f"{where}: not valid YAML{where_in} ({problem})") from None


def _fields(model: type[BaseModel]) -> dict[str, Any]:
    return {name: f.annotation for name, f in model.model_fields.items()}


def check_keys(data: Mapping[str, Any], model: type[BaseModel], prefix: str = "") -> None:
    """Unknown keys -> ConfigError naming the dotted key and close matches (before pydantic)."""
    known = _fields(model)
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in known:
            close = close_matches(str(key), list(known))
            hint = f"did you mean {', '.join(prefix + c for c in close)}?" if close else ""
            raise ConfigError(
                f"unknown config key {dotted!r}; {hint or 'known keys: ' + ', '.join(known)}"
            )
        sub = submodel(known[key])
        if sub is not None and isinstance(value, Mapping):
            check_keys(value, sub, prefix=f"{dotted}.")


def set_dotted(data: dict[str, Any], key: str, value: object) -> None:
    """data['a']['b'] = value for key 'a.b', creating dicts on the way."""
    *parents, last = key.split(".")
    node = data
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[last] = value


def parse_overrides(overrides: Sequence[str]) -> list[tuple[str, Any]]:
    """`key=value` strings -> (key, YAML scalar) pairs; a malformed one names itself."""
    pairs = []
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key or not re.fullmatch(r"[A-Za-z_][\w.]*", key):
            raise ConfigError(f"override {item!r} is not key=value (e.g. optim.lr=1e-3)")
        pairs.append((key, parse_yaml(text, f"override {item!r}") if text else ""))
    return pairs


# Keys of tasks declared in YAML (generalist/tasks/declared.py reads them from the file itself).
OWN_KEYS = {"own_tasks", "own_mixture"}


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Defaults <- YAML file <- overrides, validated. Raises ConfigError naming the key.

    Relative paths in the file are relative to its folder, those of the overrides to the
    current directory (generalist.train.config_paths)."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            state = "is a directory, not a YAML file" if path.is_dir() else "does not exist"
            raise ConfigError(f"config file {str(path)!r} {state}")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(
                f"config file {str(path)!r} cannot be read as UTF-8 text ({err})"
            ) from None
        loaded = parse_yaml(text, str(path))
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of keys, not {loaded!r}")
        data = loaded or {}
        anchor_paths(data, path.parent)  # relative paths in the file: from the file's folder
        if OWN_KEYS & set(data):  # tasks declared in the run config: it imports itself for them
            data = {k: v for k, v in data.items() if k not in OWN_KEYS}
            data["imports"] = [*data.get("imports", []), str(path.resolve())]
    for key, value in parse_overrides(overrides):
        set_dotted(data, key, value)
    check_keys(data, TrainConfig)
    return TrainConfig.parse(data)
