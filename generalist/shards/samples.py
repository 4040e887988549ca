"""How a record becomes tar members (JSON + policy-applied images) and how samples roll into
numbered shard files. Used by generalist.shards.writer; the format is in
generalist.shards.manifest."""

from __future__ import annotations

import io
import json
import tarfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from generalist.catalog.records import BadRecord, Record
from generalist.shards.images import ImageDecodeError, ImagePolicy
from generalist.shards.manifest import file_sha256, shard_name


class SplitWriter:
    """Rolls shards of `shard_size` samples for one split and records each shard's stats.

    Plain tarfile rather than webdataset.TarWriter: importing webdataset imports torch (~4 s)
    for a job that needs only the tar layout (`<key>.<suffix>` members, one sample after another).
    """

    def __init__(self, directory: Path, split: str, shard_size: int) -> None:
        self.directory, self.split, self.shard_size = directory, split, shard_size
        self.shards: list[dict[str, Any]] = []
        self.count = 0
        self._tar: tarfile.TarFile | None = None

    def write(self, key: str, members: dict[str, bytes]) -> None:
        """Append one sample: members {suffix: bytes}, stored as `<key>.<suffix>`."""
        if self._tar is None:
            path = self.directory / shard_name(self.split, len(self.shards))
            self._tar = tarfile.open(path, "w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115
            self.shards.append({"path": path.name, "count": 0})
        for suffix in sorted(members):
            info = tarfile.TarInfo(f"{key}.{suffix}")
            info.size, info.mode = len(members[suffix]), 0o444
            info.mtime = 0  # reproducible bytes, so the same input gives the same sha256
            self._tar.addfile(info, io.BytesIO(members[suffix]))
        self.shards[-1]["count"] += 1
        self.count += 1
        if self.shards[-1]["count"] >= self.shard_size:
            self._close_shard()

    def _close_shard(self) -> None:
        if self._tar is None:
            return
        self._tar.close()
        self._tar = None
        path = self.directory / self.shards[-1]["path"]
        self.shards[-1]["bytes"] = path.stat().st_size
        self.shards[-1]["sha256"] = file_sha256(path)

    def close(self) -> dict[str, Any]:
        self._close_shard()
        return {"count": self.count, "shards": self.shards}

    def abort(self) -> None:
        """Release the open shard after an error (its directory is about to be removed)."""
        if self._tar is not None:
            self._tar.fileobj.close()
            self._tar = None


class ImageCache:
    """Recently encoded images by source hash: easy-vqa asks ~10 questions about each image,
    so each is resized and encoded once. Bounded, and locked for the encoding threads."""

    def __init__(self, size: int = 512) -> None:
        self.size = size
        self._items: OrderedDict[bytes, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: bytes) -> bytes | None:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
            return self._items.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        with self._lock:
            self._items[key] = value
            if len(self._items) > self.size:
                self._items.popitem(last=False)


def encode_sample(
    record: Record, policy: ImagePolicy, hashes: list[bytes], cache: ImageCache
) -> dict[str, bytes]:
    """The tar members of one record; BadRecord if an image does not decode or JSON is not plain."""
    sample: dict[str, bytes] = {}
    try:
        doc = {"id": record.id, "split": record.split, "fields": record.fields, "meta": record.meta}
        sample["json"] = json.dumps(doc, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as err:
        raise BadRecord(f"record {record.id!r}: fields/meta are not plain JSON ({err})") from None
    for n, (image, digest) in enumerate(zip(record.images, hashes)):
        encoded = cache.get(digest)
        if encoded is None:
            try:
                encoded = policy.apply(image)
            except ImageDecodeError as err:
                raise BadRecord(
                    f"record {record.id!r}: image {n} does not decode ({err})"
                ) from None
            cache.put(digest, encoded)
        sample[f"{n}.{policy.extension}"] = encoded
    return sample
