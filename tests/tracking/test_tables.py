"""``tracking_plugin.tables``: CSV/Parquet round trips on a local disk and on S3 (moto over
HTTP), and errors that name the file and say what to do."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tracking_plugin.errors import InvalidArgument, NotFound
from tracking_plugin.tables import check_table_uri, read_table, table_format, write_table


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": np.arange(5, dtype="int64"),
            "x": [0.5, 1.5, np.nan, 3.25, -1.0],
            "plan": ["a", "b", "a", "c", "b"],
            "day": pd.to_datetime(["2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04", "2026-11-05"]),
        }
    )


@pytest.mark.parametrize("name", ["t.parquet", "t.csv", "t.csv.gz", "nested/dir/t.parquet"])
def test_local_round_trip(tmp_path: Path, frame: pd.DataFrame, name: str) -> None:
    target = tmp_path / name
    assert write_table(frame, str(target)) == str(target)
    back = read_table(str(target), parse_dates=["day"] if "csv" in name else ())
    pd.testing.assert_frame_equal(back, frame, check_dtype=name.endswith("parquet"))
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # no temp file left behind


def test_gzipped_csv_is_really_gzip_and_file_uris_work(tmp_path: Path, frame: pd.DataFrame) -> None:
    target = tmp_path / "t.csv.gz"
    write_table(frame, target.as_uri())
    assert gzip.decompress(target.read_bytes()).startswith(b"id,x,plan,day")
    assert len(read_table(target.as_uri())) == 5
    assert len(read_table(target)) == 5  # a pathlib.Path works too


def test_s3_round_trip(s3_bucket: str, frame: pd.DataFrame) -> None:
    for name in ("in.parquet", "deep/key/in.csv"):
        uri = f"s3://{s3_bucket}/{name}"
        write_table(frame, uri)
        back = read_table(uri, parse_dates=["day"] if name.endswith("csv") else ())
        pd.testing.assert_frame_equal(back, frame, check_dtype=name.endswith("parquet"))


def test_missing_files_are_not_found_and_named(tmp_path: Path, s3_bucket: str) -> None:
    missing = tmp_path / "nope.csv"
    with pytest.raises(NotFound, match="nope.csv"):
        read_table(str(missing))
    with pytest.raises(NotFound, match=rf"s3://{s3_bucket}/data/nope\.parquet"):
        read_table(f"s3://{s3_bucket}/data/nope.parquet")
    with pytest.raises(NotFound, match="no-such-bucket-x1"):
        read_table("s3://no-such-bucket-x1/nope.parquet")


@pytest.mark.parametrize(
    ("name", "content", "complaint"),
    [
        ("broken.parquet", b"PAR1 this is not parquet", "as PARQUET"),
        ("cut.csv.gz", gzip.compress(b"a,b\n1,2\n" * 100)[:-10], "as CSV"),
        ("empty.csv", b"", "is empty"),
    ],
)
def test_unreadable_files_name_the_file_and_the_format(tmp_path: Path, name: str, content: bytes, complaint: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InvalidArgument, match=complaint) as caught:
        read_table(str(path))
    assert name in str(caught.value)


def test_bad_uris_are_refused_before_any_io(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match=r"'data\.json'.*\.csv, \.csv\.gz, \.parquet"):
        table_format("data.json")
    with pytest.raises(InvalidArgument, match="unsupported scheme"):
        check_table_uri("gs://bucket/data.csv")
    with pytest.raises(InvalidArgument, match="s3://bucket/path/file.csv"):
        check_table_uri("s3://bucket-only")
    with pytest.raises(InvalidArgument, match="non-empty string"):
        read_table("")
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(InvalidArgument, match="is a directory"):
        read_table(str(tmp_path / "dir.csv"))


def test_write_errors_name_the_file_and_leave_nothing_half_written(tmp_path: Path, frame: pd.DataFrame) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("I am a file, not a folder")
    with pytest.raises(InvalidArgument, match=r"Cannot write data file '.*file/out\.csv'"):
        write_table(frame, str(blocker / "out.csv"))

    (tmp_path / "taken.parquet").mkdir()
    with pytest.raises(InvalidArgument, match="taken.parquet"):
        write_table(frame, str(tmp_path / "taken.parquet"))

    mixed = pd.DataFrame({"v": [1, "two", 3.0]}, dtype=object)
    target = tmp_path / "mixed.parquet"
    with pytest.raises(InvalidArgument, match=r"mixed\.parquet.*as PARQUET.*astype\(str\)"):
        write_table(mixed, str(target))
    assert not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "taken.parquet"]

    with pytest.raises(InvalidArgument, match="pass a pandas DataFrame"):
        write_table([1, 2, 3], str(tmp_path / "list.csv"))  # type: ignore[arg-type]


def test_writing_to_a_missing_bucket_names_the_file(s3_env: str, frame: pd.DataFrame) -> None:
    with pytest.raises(NotFound, match=r"s3://no-such-bucket-x2/out\.parquet"):
        write_table(frame, "s3://no-such-bucket-x2/out.parquet")
