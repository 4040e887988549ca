"""Dataset-wide checks the shard writer applies to every record, and the manifest's field types."""

from __future__ import annotations

import hashlib

from generalist.catalog.records import BadRecord, Dataset, Record
from generalist.errors import DataError


def json_type(value: object) -> str:
    """The JSON type name of a field value, for the manifest's field schema."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    return "object"


class RecordChecks:
    """Dataset-wide checks: unique ids, no image shared by two splits, declared labels."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self.ids: dict[str, str] = {}
        self.image_owner: dict[bytes, tuple[str, str]] = {}

    def record(self, record: Record, split: str) -> list[bytes]:
        """Check one record against those before it; returns its image hashes (blake2b)."""
        name = self.dataset.name
        if not isinstance(record, Record):
            raise DataError(
                f"dataset {name!r}: adapter yielded {type(record).__name__}, not a Record"
            )
        if record.split != split:
            raise DataError(
                f"dataset {name!r}: adapter yielded record {record.id!r} of split "
                f"{record.split!r} while reading split {split!r}"
            )
        if record.id in self.ids:
            raise DataError(
                f"dataset {name!r}: id {record.id!r} appears twice, in split "
                f"{self.ids[record.id]!r} and in split {split!r}; ids must be unique"
            )
        label = record.fields.get("label")
        if self.dataset.labels and label is not None and label not in self.dataset.labels:
            raise BadRecord(
                f"dataset {name!r}: record {record.id!r} has label {label!r}, not one of "
                f"{list(self.dataset.labels)}"
            )
        hashes = [hashlib.blake2b(image, digest_size=16).digest() for image in record.images]
        for index, digest in enumerate(hashes):
            owner = self.image_owner.get(digest)
            if owner is not None and owner[0] != split and self.dataset.images_split_disjoint:
                raise BadRecord(
                    f"dataset {name!r}: image {index} of record {record.id!r} (split {split!r}) "
                    f"is identical to an image of record {owner[1]!r} (split {owner[0]!r}); "
                    f"an image may not be in two splits"
                )
        return hashes

    def commit(self, record: Record, split: str, hashes: list[bytes]) -> None:
        self.ids[record.id] = split
        for digest in hashes:
            self.image_owner.setdefault(digest, (split, record.id))
