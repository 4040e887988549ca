"""Reading shard samples: one sample's tar members -> Record (checked: only its JSON and
png/jpg images, never a pickle), and the records of a shard in written order (iter_shard).

The format itself is described in generalist.shards.manifest; random access is
generalist.shards.index.
"""

from __future__ import annotations

import functools
import itertools
import json
import tarfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import BinaryIO

from generalist.catalog.records import Record
from generalist.errors import DataError
from generalist.redact import redact
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
    raw = members.get("json")
    if raw is None:
        raise DataError(f"shard {shard} sample {key}: missing member {key}.json")
    images = image_members(shard, key, members)
    return decode_checked(shard, key, raw, [(s, f, members[s]) for s, f in images])


def image_members(shard: ShardPath, key: str, suffixes: Iterable[str]) -> list[tuple[str, str]]:
    """A sample's image members in order, as (suffix, format), after checking every member
    name: <key>.json and <key>.<n>.png/.jpg for n = 0, 1, ..., nothing else (no pickles)."""
    found = []
    for suffix in suffixes:
        if suffix == "json":
            continue
        index, _, ext = suffix.partition(".")
        image_format = IMAGE_FORMATS.get(ext.lower())
        if image_format is None or not index.isdigit():
            what = "a pickle (refused: unpickling untrusted data can run code)"
            if suffix.lower().rsplit(".", 1)[-1] not in PICKLE_EXTENSIONS:
                what = f"not allowed (a sample holds {key}.json and {key}.<n>.png/.jpg only)"
            raise DataError(
                f"shard {shard} sample {key}: member {key}.{suffix} is {what}; this shard was not "
                f"written by `generalist shard`: re-write the dataset with it"
            )
        found.append((int(index), suffix, image_format))
    found.sort()
    if found and found[-1][0] != len(found) - 1:
        missing = sorted(set(range(found[-1][0] + 1)) - {n for n, *_ in found})
        raise DataError(f"shard {shard} sample {key}: missing image member(s) {missing}")
    return [(suffix, image_format) for _, suffix, image_format in found]


def decode_checked(
    shard: ShardPath, key: str, raw: bytes, images: Sequence[tuple[str, str, bytes]]
) -> Record:
    """A Record from a sample whose member names `image_members` passed: its JSON decoded and
    each image's (suffix, format, bytes) checked."""
    try:
        doc = _load_json(raw.decode("utf-8"))
        record_id, split, fields, meta = doc["id"], doc["split"], doc["fields"], doc["meta"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise DataError(f"shard {shard} sample {key}: bad {key}.json ({err!r})") from None
    for suffix, image_format, data in images:
        _check_image(shard, key, suffix, data, image_format)
    source = f"shard {shown(shard)} sample {key}"
    return Record(str(record_id), str(split), tuple([i[2] for i in images]), fields, meta, source)


@functools.lru_cache(maxsize=256)
def shown(shard: ShardPath) -> str:
    """A shard's path as messages show it (a URL's password redacted); computed once per shard,
    not per sample (a record's `source` names it)."""
    return redact(str(shard))


_SCAN = json.JSONDecoder().scan_once  # the C scanner json.loads calls


def _load_json(text: str) -> object:
    """json.loads without its Python wrapper (a third of a sample's decoding time); anything
    unusual (whitespace around, bad JSON) goes through json.loads, for its checks and message."""
    try:
        doc, end = _SCAN(text, 0)
    except (StopIteration, ValueError):
        return json.loads(text)
    return doc if end == len(text) else json.loads(text)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"\x00\x00\x00\x00IEND"  # the last chunk: length 0, type IEND (then its CRC)


def _check_image(shard: ShardPath, key: str, suffix: str, data: bytes, image_format: str) -> None:
    """Signature and end-marker check (about a microsecond, nothing decoded): garbage bytes and
    a cut image are caught here, naming the shard; damage inside the pixel data is caught when
    the collator decodes it. Why not PIL's header parse: 30x slower (a third of the stream's
    time) and blind to a cut-off end."""
    if image_format == "PNG":
        start, end = data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR", data[-12:-4] == PNG_END
    else:  # JPEG: start-of-image, then an end-of-image marker near the end
        start, end = data[:3] == b"\xff\xd8\xff", b"\xff\xd9" in data[-64:]
    if not (start and end):
        why = "no image signature" if not start else "no end marker: truncated"
        raise DataError(
            f"shard {shard} sample {key}: member {key}.{suffix} is not a {image_format} image "
            f"({why}); re-run `generalist shard`"
        )


class NotUstar(Exception):
    """A header `_ustar_members` does not read (pax, GNU long names)."""


def ustar_members(file: BinaryIO) -> Iterator[tuple[str, int, int]]:
    """(name, data offset, size) of each regular member, from the 512-byte headers alone.

    Why our own: tarfile parses every header field (~25 us a header: 25 ms for a shard of
    1,000 members); this reads name, size, type and checksum only. A cut header or a bad
    checksum raises tarfile.ReadError, and a cut header ends the archive, as in tarfile.
    """
    offset = 0
    while True:
        file.seek(offset)
        header = file.read(512)
        if len(header) < 512 and offset == 0:
            raise tarfile.ReadError("empty file" if not header else "truncated header")
        if len(header) < 512 or header.count(0) == 512:
            return  # the end (as tarfile reads it): a cut header, or the archive's zero blocks
        checksum = header[148:156].split(b"\0")[0].strip()
        if not checksum or int(checksum, 8) != sum(header) - sum(header[148:156]) + 256:
            raise tarfile.ReadError("bad checksum")
        kind = header[156:157]
        if kind not in (b"0", b"\0", b"1", b"2", b"5"):
            raise NotUstar(kind)
        size = int(header[124:136].split(b"\0")[0].strip() or b"0", 8)
        if kind in (b"0", b"\0"):
            name = header[:100].split(b"\0", 1)[0]
            if header[257:262] == b"ustar" and header[345]:
                name = header[345:500].split(b"\0", 1)[0] + b"/" + name
            yield name.decode("utf-8"), offset + 512, size
        offset += 512 + (size + 511) // 512 * 512


def tar_entries(file: BinaryIO) -> Iterator[tuple[str, int, int]]:
    """(name, data offset, size) of each regular member: by `ustar_members`, or by tarfile for
    the pax and GNU headers it does not read (archives not written by `generalist shard`)."""
    done = 0
    try:
        for entry in ustar_members(file):
            yield entry
            done += 1
    except NotUstar:
        file.seek(0)
        with tarfile.open(fileobj=file, mode="r:") as tar:
            regular = (i for i in iter(tar.next, None) if i.isfile())
            for info in itertools.islice(regular, done, None):
                yield info.name, info.offset_data, info.size


def _sample_groups(shard: ShardPath, file: BinaryIO, start: int) -> Iterator[tuple[str, dict]]:
    """(key, {suffix: bytes}) per sample; samples before `start` are passed over unread."""
    current: str | None = None
    members: dict[str, bytes] = {}
    position = -1
    entries = tar_entries(file)
    while True:
        try:
            entry = next(entries, None)
        except (tarfile.TarError, EOFError, OSError) as err:
            where = f"after sample {current}" if current else "at its start"
            raise DataError(f"shard {shard} is truncated or corrupt {where} ({err})") from None
        if entry is None:
            break
        name, offset, size = entry
        key, suffix = member_key(name)
        if key != current:
            if current is not None and position >= start:
                yield current, members
            current, members, position = key, {}, position + 1
        if position < start:
            continue  # cheap skip: only its header was read
        try:
            file.seek(offset)
            data = file.read(size)
        except OSError as err:
            raise DataError(f"shard {shard} is truncated in sample {key} ({name}: {err})") from None
        if len(data) != size:
            raise DataError(f"shard {shard} is truncated in sample {key} (member {name})")
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

    with open_binary(path) as file:
        groups = _sample_groups(path, file, start)
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
