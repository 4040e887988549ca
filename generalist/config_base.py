"""The one base of every config model: strict (an unknown key is an error) and frozen (a
loaded config is not changed in place; derive a changed one with `cfg.model_copy(update=...)`).

`StrictConfig.parse(data)` validates a plain mapping and turns pydantic's errors into one
ConfigError naming each dotted key (`config_message` is the one formatter of them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import ErrorDetails

from generalist.errors import ConfigError, GeneralistError

if TYPE_CHECKING:
    from typing import Self  # 3.11+; annotations only, the package runs on 3.10


class StrictConfig(BaseModel):
    """A config model: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # the dotted key this model sits under in a config file, prefixed to the keys its errors name
    config_key: ClassVar[str] = ""

    @classmethod
    def parse(cls, data: Mapping[str, object] | None, where: str | None = None) -> Self:
        """The model from a plain mapping; a bad key or value raises ConfigError naming it
        (under `where`, default the model's own `config_key`)."""
        try:
            return cls.model_validate(dict(data or {}))
        except ValidationError as err:
            key = cls.config_key if where is None else where
            raise ConfigError(config_message(err, cls, key)) from None
        except GeneralistError as err:  # a nested config's own validator
            raise ConfigError(str(err)) from None


def submodel(annotation: object) -> type[BaseModel] | None:
    """The BaseModel class behind an annotation (`X`, `X | None`), if any."""
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _model_at(model: type[BaseModel], path: list[str]) -> type[BaseModel]:
    """The (nested) model that holds the key at `path`, for the known keys of an unknown one."""
    for part in path:
        field = model.model_fields.get(part)
        inner = submodel(field.annotation) if field is not None else None
        if inner is None:
            break
        model = inner
    return model


def _describe(error: ErrorDetails, model: type[BaseModel], where: str) -> str:
    # pydantic puts validator names ("function-after[...]") into the location; they are no keys
    path = [str(p) for p in error["loc"] if not str(p).startswith("function-after")]
    key = ".".join([where, *path] if where else path)
    if error["type"] == "extra_forbidden":
        known = ", ".join(sorted(_model_at(model, path[:-1]).model_fields))
        return f"unknown key {key!r} (known: {known})"
    return f"config key {key!r}: {error['msg']} (got {error.get('input')!r})"


def config_message(err: ValidationError, model: type[BaseModel], where: str = "") -> str:
    """One line for all of a validation error's problems, each naming its dotted key."""
    return "; ".join(_describe(e, model, where) for e in err.errors())
