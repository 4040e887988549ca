"""The row reading the source adapters share (generalist.sources.files): which file is found,
what a bad line or a missing column becomes, and the messages that name file and line."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from generalist.catalog.records import BadRecord
from generalist.errors import DataError
from generalist.sources.files import (
    ZipMembers,
    check_columns,
    first_file,
    json_lines,
    json_rows,
    missing_keys,
    read_image,
    read_json,
)


def test_first_file_takes_the_first_name_that_exists(tmp_path: Path) -> None:
    (tmp_path / "b.csv").write_text("x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.csv").write_text("x")
    assert first_file(tmp_path, ["a.csv", "sub/a.csv", "b.csv"]) == tmp_path / "sub" / "a.csv"
    assert first_file(tmp_path, ["sub", "c.csv"]) is None  # a directory is not a file


def test_json_rows_bad_lines_and_first_line_check(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    lines = [{"q": 1, "a": 2}, "not json", {"q": 3}, {"q": 4, "a": 5}]
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in lines) + "\n\n")
    out = list(json_rows(path, ("q", "a"), "toy"))
    assert [n for n, _ in out] == [1, 2, 3, 4]  # the blank last line is passed over
    assert out[0][1] == {"q": 1, "a": 2} and out[3][1] == {"q": 4, "a": 5}
    assert isinstance(out[1][1], BadRecord)
    assert str(out[1][1]).startswith(f"toy: {path} line 2 is not valid JSON (")
    assert str(out[2][1]) == f"toy: {path} line 3 lacks keys ['a']"
    # a first row without the keys is the wrong file: raised, not skipped
    path.write_text(json.dumps({"q": 1}) + "\n")
    with pytest.raises(DataError, match=r"toy: .* line 1 lacks keys \['a'\]; expected the publi"):
        list(json_rows(path, ("q", "a"), "toy"))


def test_json_lines_yields_parse_errors_with_their_line(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('[1]\n\n{bad\n"s"\n')
    out = list(json_lines(path))
    assert [n for n, _ in out] == [1, 3, 4]
    assert out[0][1] == [1] and out[2][1] == "s"
    assert isinstance(out[1][1], json.JSONDecodeError)
    assert missing_keys(out[0][1], ("a",)) == ["a"]  # not an object: every key is missing


def test_read_json_and_columns_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text("{oops")
    with pytest.raises(DataError, match=rf"toy: {path} is not valid JSON \("):
        read_json(path, "toy")
    with pytest.raises(DataError) as err:
        check_columns(["a", "b"], ("a", "c", "d"), "toy: f.csv", "Is this the published file?")
    assert str(err.value) == (
        "toy: f.csv lacks column(s) ['c', 'd']; it has ['a', 'b']. Is this the published file?"
    )
    check_columns(["a"], ("a",), "toy: f.csv")  # nothing missing: no error


def test_read_image_missing_undecodable_and_good(tmp_path: Path) -> None:
    missing = tmp_path / "gone.png"
    assert (
        str(read_image(missing, "toy: f.csv line 2"))
        == f"toy: f.csv line 2: image {missing} is missing"
    )
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    bad = read_image(broken, "toy: f.csv line 3")
    assert isinstance(bad, BadRecord)
    assert str(bad).startswith(f"toy: f.csv line 3: {broken}: image does not decode (")
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), "red").save(buffer, format="PNG")
    good = tmp_path / "good.png"
    good.write_bytes(buffer.getvalue())
    assert read_image(good, "toy") == buffer.getvalue()


def test_zip_members_are_read_in_place_below_the_archive_top_folder(tmp_path: Path) -> None:
    path = tmp_path / "imgs.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("imgs/", b"")
        archive.writestr("__MACOSX/imgs/xmlab0/._source.jpg", b"resource fork")
        archive.writestr("imgs/xmlab0/source.jpg", b"zero")
        archive.writestr("imgs/xmlab1/source.jpg", b"one")
    members = ZipMembers(path, "toy")
    assert len(members) == 2  # folders and __MACOSX forks are not members
    assert members.member("xmlab1/source.jpg") == "imgs/xmlab1/source.jpg"
    assert members.read("xmlab0/source.jpg", "toy: train.json record 0") == b"zero"
    assert members.member("xmlab9/source.jpg") is None
    missing = members.read("xmlab9/source.jpg", "toy: train.json record 4")
    assert str(missing) == f"toy: train.json record 4: xmlab9/source.jpg is not in {path}"
    members.close()
    assert not (tmp_path / "imgs").exists()  # nothing was unzipped
    flat = tmp_path / "flat.zip"
    with zipfile.ZipFile(flat, "w") as archive:
        archive.writestr("files/p10/p10000032/s50414267.txt", b"report")
    assert ZipMembers(flat, "toy").read("files/p10/p10000032/s50414267.txt", "x") == b"report"


def test_zip_members_damaged_member_and_not_a_zip(tmp_path: Path) -> None:
    path = tmp_path / "reports.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("files/a.txt", b"FINDINGS: clear lungs.")
    data = path.read_bytes()
    path.write_bytes(data.replace(b"clear", b"CLEAR"))  # the stored bytes no longer match the CRC
    damaged = ZipMembers(path, "toy").read("files/a.txt", "toy: split.csv line 2")
    assert isinstance(damaged, BadRecord)
    assert str(damaged).startswith(
        f"toy: split.csv line 2: member files/a.txt of {path} is damaged"
    )
    fake = tmp_path / "fake.zip"
    fake.write_text("not a zip")
    with pytest.raises(DataError, match=rf"toy: {fake} is not a readable zip archive \("):
        ZipMembers(fake, "toy")
