"""Inputs on local disks and on object storage: what gets listed, what a worker reads, and the one-line
errors a user sees when a store cannot be reached. Object storage is a real S3-compatible server
(moto on loopback, the session fixture ``s3``); errors are the real ones from pyarrow and LanceDB."""
import os
import time
from pathlib import Path

import pytest

from vidsift.pipeline.errors import InputError, VideoError
from vidsift.pipeline.sources import content_hash, discover
from vidsift.pipeline.storage import (ListedFile, StorageError, explain_storage_error, is_remote, list_inputs,
                              parse_storage_options, readable_copy, stat_input)
from tests.conftest import make_video
from tests.s3_server import dead_endpoint


def _stat(path) -> ListedFile:
    st = os.stat(path)
    return ListedFile(str(path), st.st_size, st.st_mtime_ns)


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_remote_uris_and_storage_options_parse_as_a_user_types_them():
    assert [is_remote(u) for u in ("s3://b/k.mp4", "gs://b/k", "az://c/k", "abfss://c@acct.dfs.core.windows.net/k",
                                   "file:///data/a.mp4", "/data/a.mp4", "clips/a.mp4", "C:\\clips\\a.mp4")] \
        == [True, True, True, True, False, False, False, False]
    assert parse_storage_options(["endpoint=http://127.0.0.1:9000", "AWS_Secret_Access_Key=a=b==", "region= eu-west-1"]) \
        == {"endpoint": "http://127.0.0.1:9000", "aws_secret_access_key": "a=b==", "region": "eu-west-1"}
    with pytest.raises(ValueError, match="'allow_http'"):
        parse_storage_options(["region=us-east-1", "allow_http"])


def test_local_folder_and_list_file_listing_keeps_the_paths_the_user_gave(tmp_path):
    root = tmp_path / "archive"
    a = _write(root / "a.mp4", b"a" * 10)
    b = _write(root / "sub" / "b.MKV", b"b" * 20)
    c = _write(root / "sub" / "deeper" / "c.webm", b"c" * 30)
    _write(root / "cover.jpg", b"x")
    _write(root / "sub" / "notes.txt", b"not a list: inside a folder only videos count")
    (root / "loop1.mp4").symlink_to(root / "loop2.mp4")
    (root / "loop2.mp4").symlink_to(root / "loop1.mp4")
    (root / "dangling.mp4").symlink_to(root / "gone.mp4")
    (root / "alias.mp4").symlink_to(a)
    d = _write(tmp_path / "lists" / "extra" / "d.avi", b"d" * 40)
    e = _write(tmp_path / "elsewhere" / "e.mov", b"e" * 50)
    listing = _write(tmp_path / "lists" / "batch.txt",
                     f"# one path a line\n\n../archive/a.mp4\nextra/d.avi\n  {e}  \nmissing.mp4\n".encode())

    found = list_inputs([str(root), str(listing), str(a)])

    assert found == sorted([_stat(a), _stat(b), _stat(c), _stat(d), _stat(e),
                            ListedFile(str(root / "alias.mp4"), 10, os.stat(a).st_mtime_ns),
                            ListedFile(str(root / "dangling.mp4"), 0, 0), ListedFile(str(root / "loop1.mp4"), 0, 0),
                            ListedFile(str(root / "loop2.mp4"), 0, 0),
                            ListedFile(str(tmp_path / "lists" / "missing.mp4"), 0, 0)], key=lambda f: f.path)
    for link in ("loop1.mp4", "loop2.mp4", "dangling.mp4", "alias.mp4"):  # discover would resolve these
        (root / link).unlink()
    # Otherwise the same paths as discover, with "x/../y" in list files normalised (so not listed twice).
    assert [f.path for f in list_inputs([str(root), str(listing)])] \
        == sorted({os.path.normpath(p) for p in discover([str(root), str(listing)])})
    with pytest.raises(InputError, match=r"^nowhere/clips: no such file or folder$"):
        list_inputs([str(root), "nowhere/clips"])


def test_reading_a_local_file_hashes_it_as_before_and_names_what_is_wrong(tmp_path):
    clip = tmp_path / "clip.mp4"
    make_video(clip, durations=(2.0,), fps=10)
    with readable_copy(str(clip)) as (path, digest):
        assert (path, digest) == (str(clip), content_hash(str(clip)))
    assert stat_input(str(clip)) == _stat(clip)

    os.mkfifo(tmp_path / "pipe.mp4")
    (tmp_path / "loop.mp4").symlink_to(tmp_path / "loop.mp4")
    (tmp_path / "dangling.mp4").symlink_to(tmp_path / "gone.mp4")
    for name, reason in [("pipe.mp4", "not a regular file"), ("loop.mp4", "symbolic link loop"),
                         ("dangling.mp4", "broken symbolic link"), ("absent.mp4", "file does not exist")]:
        started = time.monotonic()
        with pytest.raises(VideoError) as caught, readable_copy(str(tmp_path / name)):
            pass
        assert str(caught.value) == f"{tmp_path / name}: read failed: {reason}"
        assert time.monotonic() - started < 2  # a FIFO with no writer must not block the worker


@pytest.fixture(scope="module")
def remote(s3, tmp_path_factory):
    """On the server: s3://vidsift/videos/ (a rendered clip, two more videos, non-videos), a clip
    outside that prefix, and a list file naming objects relative to it and by full URI."""
    local = tmp_path_factory.mktemp("remote")
    make_video(local / "clip.mp4", durations=(2.0,), fps=10)
    s3.put("s3://vidsift/videos/clip.mp4", local / "clip.mp4")
    s3.put("s3://vidsift/videos/sub/b.MKV", b"b" * 20)
    s3.put("s3://vidsift/videos/sub/deep/c #1.webm", b"c" * 30)
    s3.put("s3://vidsift/videos/sub/readme.json", b"{}")
    s3.put("s3://vidsift/other/x.mp4", b"x" * 40)
    s3.put("s3://vidsift/lists/batch.txt",
           b"# relative to s3://vidsift/lists/\n../videos/clip.mp4\ns3://vidsift/other/x.mp4\n"
           b"s3://vidsift/other/gone.mp4\n")
    return local / "clip.mp4"


def test_listing_object_storage_reads_sizes_from_one_listing(s3, remote):
    opts = s3.storage_options
    before = len(s3.requests_logged())
    found = list_inputs(["s3://vidsift/videos/"], opts)
    assert [(f.path, f.size_bytes) for f in found] == [
        ("s3://vidsift/videos/clip.mp4", remote.stat().st_size), ("s3://vidsift/videos/sub/b.MKV", 20),
        ("s3://vidsift/videos/sub/deep/c #1.webm", 30)]
    assert all(abs(f.mtime_ns / 1e9 - time.time()) < 600 for f in found)
    requests = s3.requests_logged()[before:]
    assert any(r.startswith("GET /vidsift?list-type=2") and "prefix=videos/" in r for r in requests)
    assert not [r for r in requests if r.startswith(("HEAD /vidsift/videos/", "GET /vidsift/videos/"))]

    assert list_inputs(["s3://vidsift/videos", "s3://vidsift/videos/sub/b.MKV"], opts) == found
    assert list_inputs(["s3://vidsift/other/x.mp4"], opts) == [stat_input("s3://vidsift/other/x.mp4", opts)]
    assert [(f.path, f.size_bytes) for f in list_inputs(["s3://vidsift/lists/batch.txt"], opts)] == [
        ("s3://vidsift/other/gone.mp4", 0), ("s3://vidsift/other/x.mp4", 40),
        ("s3://vidsift/videos/clip.mp4", remote.stat().st_size)]
    mixed = list_inputs([str(remote), "s3://vidsift/other/"], opts)
    assert [f.path for f in mixed] == [str(remote), "s3://vidsift/other/x.mp4"]
    with pytest.raises(InputError, match=r"^s3://vidsift/nothing/: no such file or folder$"):
        list_inputs(["s3://vidsift/nothing/"], opts)


def test_a_remote_object_is_read_through_a_temporary_copy_that_is_always_removed(s3, remote, tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with readable_copy("s3://vidsift/videos/clip.mp4", s3.storage_options, str(scratch)) as (path, digest):
        assert Path(path).parent == scratch and path.endswith(".mp4")
        assert Path(path).read_bytes() == remote.read_bytes()
        assert digest == content_hash(str(remote))
    assert not list(scratch.iterdir())

    with pytest.raises(KeyError), readable_copy("s3://vidsift/videos/sub/b.MKV", s3.storage_options, str(scratch)):
        assert len(list(scratch.iterdir())) == 1
        raise KeyError("decoder failed")
    assert not list(scratch.iterdir())

    with pytest.raises(VideoError, match=r"^s3://vidsift/videos/gone.mp4: read failed: object does not exist$"), \
            readable_copy("s3://vidsift/videos/gone.mp4", s3.storage_options, str(scratch)):
        pass
    assert not list(scratch.iterdir())


def test_environment_variables_alone_configure_inputs_like_storage_options(s3, remote, monkeypatch, tmp_path):
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)
    assert list_inputs(["s3://vidsift/videos/"]) == list_inputs(["s3://vidsift/videos/"], s3.storage_options)
    with readable_copy("s3://vidsift/videos/clip.mp4", scratch_dir=str(tmp_path)) as (path, digest):
        assert digest == content_hash(str(remote))
    import lancedb  # the archive reads the same variables
    assert lancedb.connect("s3://vidsift/db").list_tables().tables == []

    # Plain HTTP must be allowed explicitly, for the inputs as for LanceDB.
    monkeypatch.delenv("AWS_ALLOW_HTTP")
    with pytest.raises(StorageError, match=r"^s3://vidsift/videos/: the endpoint http://127\.0\.0\.1:\d+ is plain "
                                           r"HTTP: add --storage-option allow_http=true \(or AWS_ALLOW_HTTP=true\)$"):
        list_inputs(["s3://vidsift/videos/"])
    with pytest.raises(Exception) as caught:
        lancedb.connect("s3://vidsift/db").list_tables()
    assert explain_storage_error("s3://vidsift/db", caught.value) == (
        "s3://vidsift/db: the endpoint is plain HTTP: add --storage-option allow_http=true (or AWS_ALLOW_HTTP=true)")


def _lancedb_error(uri: str, options: dict) -> BaseException:
    import lancedb
    with pytest.raises(Exception) as caught:
        lancedb.connect(uri, storage_options=options).list_tables()
    return caught.value


def test_unreachable_store_is_one_line_naming_the_uri(s3, remote):
    dead = dead_endpoint()
    host = dead.removeprefix("http://")
    expected = f"s3://vidsift/videos/: cannot reach the store at {host}: connection refused"
    with pytest.raises(StorageError) as caught:
        list_inputs(["s3://vidsift/videos/"], {**s3.storage_options, "endpoint": dead})
    assert str(caught.value) == expected
    # LanceDB's own error (a long Rust debug dump) reads the same; no retries, to keep the test short.
    error = _lancedb_error("s3://vidsift/videos/", {**s3.storage_options, "endpoint": dead, "client_max_retries": "0"})
    assert "\n" in repr(error) or len(str(error)) > 500
    assert explain_storage_error("s3://vidsift/videos/", error) == expected
    with pytest.raises(VideoError) as caught:
        stat_input("s3://vidsift/videos/clip.mp4", {**s3.storage_options, "endpoint": dead})
    assert caught.value.reason == f"object storage unreachable at {host}: connection refused"

    with pytest.raises(StorageError) as caught:
        list_inputs(["s3://vidsift/videos/"], {**s3.storage_options, "endpoint": "http://no-such-host.invalid:9000"})
    assert str(caught.value) == ("s3://vidsift/videos/: cannot reach the store at no-such-host.invalid: "
                                 "host name not found (DNS)")


def test_missing_bucket_and_refused_credentials_are_one_line_naming_the_uri(s3, remote, tmp_path):
    opts = s3.storage_options
    with pytest.raises(StorageError, match=r"^s3://no-such-bucket/videos/: no such bucket$"):
        list_inputs(["s3://no-such-bucket/videos/"], opts)
    assert explain_storage_error("s3://no-such-bucket/db", _lancedb_error("s3://no-such-bucket/db", opts)) \
        == "s3://no-such-bucket/db: no such bucket"

    denied = "access denied (check the credentials: AWS_ACCESS_KEY_ID / --storage-option aws_access_key_id=...)"
    with s3.refusing_unknown_credentials():
        with pytest.raises(StorageError) as caught:
            list_inputs(["s3://vidsift/videos/"], opts)
        assert str(caught.value) == f"s3://vidsift/videos/: {denied}"
        assert explain_storage_error("s3://vidsift/db", _lancedb_error("s3://vidsift/db", opts)) \
            == f"s3://vidsift/db: {denied}"
        with pytest.raises(VideoError) as caught, readable_copy("s3://vidsift/videos/clip.mp4", opts, str(tmp_path)):
            pass
        assert caught.value.reason == denied
    assert not list(tmp_path.iterdir())


def test_other_errors_still_read_as_one_short_line():
    dump = "Invalid input, Failed: IO { source: Generic {\n  store: \"S3\" " + "x" * 5000 + "\n} }"
    assert explain_storage_error("s3://b/db", ValueError(dump)) == "s3://b/db: Invalid input, Failed: IO"
    long_line = ValueError("y" * 1000)
    assert explain_storage_error("s3://b/db", long_line) == "s3://b/db: " + "y" * 197 + "..."
    assert explain_storage_error("s3://b/db", ValueError("Table 'x' was not found")) == "s3://b/db: Table 'x' was not found"
