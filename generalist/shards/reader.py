"""Reading shard samples: one sample's tar members -> Record (checked: only its JSON and
png/jpg images, never a pickle), and the records of a shard in written order (iter_shard).

The format itself is described in generalist.shards.manifest; random access is
generalist.shards.index.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable, Iterator

from generalist.catalog.records import Record
from generalist.errors import DataError
from generalist.shards.storage import ShardPath, as_root, open_binary

# The only members a sample may hold besides <key>.json: encoded images in these formats.
IMAGE_FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG"}
# Members that webdataset's default decoders would unpickle: named in the refusal.
PICKLE_EXTENSIONS = {"pickle", "pkl", "pyd", "pth", "pt", "npy", "npz", "joblib"}


def member_key(name: str) -> tuple[str, str]:
    """'000000012.0.png' -> ('000000012', '0.png') (webdataset's convention: first dot)."""
    key, _, suffix = name.partition(".")
    return key, suffix


def decode_sample(shard: ShardPath, key: str, members: dict[str, bytes]) -> Record:
    """A Record from one sample's members; DataError naming shard and key if malformed."""
    if "json" not in members:
        raise DataError(f"shard {shard} sample {key}: missing member {key}.json")
    try:
        doc = json.loads(members["json"].decode("utf-8"))
        record_id, split, fields, meta = doc["id"], doc["split"], doc["fields"], doc["meta"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise DataError(f"shard {shard} sample {key}: bad {key}.json ({err!r})") from None
    images: dict[int, bytes] = {}
    for suffix, data in members.items():
        if suffix == "json":
            continue
        index, _, ext = suffix.partition(".")
        if not index.isdigit() or ext.lower() not in IMAGE_FORMATS:
            what = "a pickle (refused: unpickling untrusted data can run code)"
            if suffix.lower().rsplit(".", 1)[-1] not in PICKLE_EXTENSIONS:
                what = f"not allowed (a sample holds {key}.json and {key}.<n>.png/.jpg only)"
            raise DataError(
                f"shard {shard} sample {key}: member {key}.{suffix} is {what}; this shard was not "
                f"written by `generalist shard`: re-write the dataset with it"
            )
        images[int(index)] = data
    if sorted(images) != list(range(len(images))):
        missing = sorted(set(range(max(images) + 1)) - set(images))
        raise DataError(f"shard {shard} sample {key}: missing image member(s) {missing}")
    for suffix, data in members.items():
        if suffix != "json":
            _check_image(shard, key, suffix, data, IMAGE_FORMATS[suffix.split(".")[1].lower()])
    return Record(
        id=str(record_id),
        split=str(split),
        images=tuple(images[i] for i in range(len(images))),
        fields=fields,
        meta=meta,
    )


def _check_image(shard: ShardPath, key: str, suffix: str, data: bytes, image_format: str) -> None:
    """Header check (~30 us, no pixel decoding): garbage bytes are caught here, naming the shard;
    a cut inside the pixel data is caught when the collator decodes it."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data), formats=[image_format]):
            pass
    except Exception as err:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ...
        raise DataError(
            f"shard {shard} sample {key}: member {key}.{suffix} is not a {image_format} image "
            f"({type(err).__name__}: {str(err)[:120]}); re-run `generalist shard`"
        ) from None


def _sample_groups(
    shard: ShardPath, tar: tarfile.TarFile, start: int
) -> Iterator[tuple[str, dict]]:
    """(key, {suffix: bytes}) per sample; samples before `start` are passed over unread."""
    current: str | None = None
    members: dict[str, bytes] = {}
    position = -1
    while True:
        try:
            info = tar.next()
        except (tarfile.TarError, EOFError, OSError) as err:
            where = f"after sample {current}" if current else "at its start"
            raise DataError(f"shard {shard} is truncated or corrupt {where} ({err})") from None
        if info is None:
            break
        key, suffix = member_key(info.name)
        if key != current:
            if current is not None and position >= start:
                yield current, members
            current, members, position = key, {}, position + 1
        if position < start or not info.isfile():
            continue  # cheap skip: tarfile seeks past the data without reading it
        file = tar.extractfile(info)
        try:
            data = file.read() if file is not None else b""
        except (tarfile.TarError, EOFError, OSError) as err:
            raise DataError(
                f"shard {shard} is truncated in sample {key} (member {info.name}: {err})"
            ) from None
        if len(data) != info.size:
            raise DataError(f"shard {shard} is truncated in sample {key} (member {info.name})")
        members[suffix] = data
    if current is not None and position >= start:
        yield current, members


def iter_shard(
    path: ShardPath | str,
    start: int = 0,
    skip_bad: bool = False,
    on_bad: Callable[[str], None] | None = None,
    count: int | None = None,
) -> Iterator[Record]:
    """Records of one shard, from its `start`-th sample (0-based position within the shard).

    Samples before `start` cost a tar header read each, no data read or decoding. A truncated
    tar, bad JSON or a missing member raises DataError naming shard and key; with skip_bad the
    sample is skipped (a truncated tar ends the shard) and `on_bad(message)` is called.
    `count` (the manifest's) also catches a tar cut exactly between two samples. A remote
    shard (generalist.shards.storage) is streamed: only the bytes up to the last sample read
    are fetched.
    """
    path = as_root(path)
    if not path.is_file():
        raise DataError(f"shard {path} does not exist; re-run `generalist shard`")

    def bad(message: str) -> None:
        if not skip_bad:
            raise DataError(message)
        if on_bad is not None:
            on_bad(message)

    file = open_binary(path)
    try:
        tar = tarfile.open(fileobj=file, mode="r:")  # noqa: SIM115 (closed by the with below)
    except (tarfile.TarError, OSError) as err:
        file.close()
        bad(f"shard {path} is not a readable tar file ({err})")
        return
    with file, tar:
        groups = _sample_groups(path, tar, start)
        seen = start
        while True:
            try:
                key, members = next(groups)
            except StopIteration:
                if count is not None and seen < count:
                    bad(f"shard {path} is truncated: {seen} of its {count} samples are there")
                return
            except DataError as err:
                bad(str(err))
                return
            try:
                record = decode_sample(path, key, members)
            except DataError as err:
                bad(str(err))
                continue
            finally:
                seen += 1
            yield record
