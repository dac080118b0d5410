"""The Gradio app (`app/web.py`) through gradio_client against a real server on a loopback port,
plus unit tests of its path allowlist (`app/paths.py`) and the bundled label sets.

Random weights (ViT-B-32, 'none') check plumbing only: search by example (a frame of a video finds
that video's segment), filters, errors, security, concurrency. Semantic claims (text search and
classification that are right) use the bundled shapes-tiny model.
"""
from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from vidsift.app import render
from vidsift.app.app_client import from_wire, to_wire
from vidsift.app.paths import (
    PathRefused, UploadRefused, check_inside, check_upload, indexed_roots, resolve_user_path, safe_filename,
)
from vidsift.pipeline.config import IndexConfig, SamplingConfig, SegmentConfig
from vidsift.pipeline.errors import InputError
from tests.conftest import REPO, make_video

from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

SHAPES_TINY = Path(__file__).resolve().parents[1] / "models" / "weights" / "shapes-tiny.safetensors"


def fixed_windows(seconds: float) -> SegmentConfig:
    """Fixed windows, so segment boundaries are known exactly (the default cuts at scene changes)."""
    extra = {"mode": "fixed"} if "mode" in SegmentConfig.__dataclass_fields__ else {}
    return SegmentConfig(window_s=seconds, **extra)


INDEX = IndexConfig(sampling=SamplingConfig(fps=2.0), segments=fixed_windows(2.0))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def shared_temp_dir(tmp_path_factory) -> str:
    """Gradio's temp folder is process-wide (GRADIO_TEMP_DIR): one for every server of the session."""
    path = tmp_path_factory.getbasetemp() / "gradio-tmp"
    path.mkdir(exist_ok=True)
    return str(path)


def start_server(tmp_path_factory, db: Path, spec, encoder, allow_dirs=(), **overrides):
    from vidsift.app.web import AppConfig, start

    config = AppConfig(db=str(db), spec=spec, allow_dirs=tuple(map(str, allow_dirs)), port=free_port(),
                       index=INDEX, temp_dir=shared_temp_dir(tmp_path_factory), **overrides)
    demo, url = start(config, encoder=encoder)
    return demo, url, config


# ---- app/paths.py: pure functions ---------------------------------------------------------------
@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "videos"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.mp4").write_bytes(b"x")
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "s.mp4").write_bytes(b"s")
    (root / "link-out.mp4").symlink_to(outside / "s.mp4")
    (root / "dir-out").symlink_to(outside, target_is_directory=True)
    (root / "link-in.mp4").symlink_to(root / "sub" / "a.mp4")
    (tmp_path / "videos2").mkdir()
    return SimpleNamespace(root=root, outside=outside, base=tmp_path)


def test_paths_inside_roots_are_resolved(tree):
    assert check_inside(str(tree.root / "sub" / "a.mp4"), [tree.root]) == (tree.root / "sub" / "a.mp4").resolve()
    assert check_inside(str(tree.root / "link-in.mp4"), [tree.root]) == (tree.root / "sub" / "a.mp4").resolve()
    assert resolve_user_path("sub", [tree.root]) == (tree.root / "sub").resolve()
    assert resolve_user_path("", [tree.root]) == tree.root.resolve()
    assert resolve_user_path(str(tree.root / "sub"), [tree.root]) == (tree.root / "sub").resolve()
    # A link between two allowed folders is fine.
    target = (tree.outside / "s.mp4").resolve()
    assert check_inside(str(tree.root / "link-out.mp4"), [tree.root, tree.outside]) == target


@pytest.mark.parametrize("typed,needle", [
    ("../secret", "'..' is not allowed"),
    ("sub/../../secret", "'..' is not allowed"),
    ("sub/../sub", "'..' is not allowed"),          # refused even when it would land inside
    ("/etc", "outside the allowed folders"),
    ("/", "outside the allowed folders"),
    ("dir-out", "symbolic link leading outside"),
    ("link-out.mp4", "symbolic link leading outside"),
    ("dir-out/s.mp4", "symbolic link leading outside"),
    ("sub\x00/x", "NUL"),
])
def test_paths_refused_with_a_reason(tree, typed, needle):
    with pytest.raises(PathRefused, match=needle):
        resolve_user_path(typed, [tree.root])


def test_paths_prefix_is_not_inside_and_no_roots_refuses(tree):
    # /x/videos2 starts with the string /x/videos but is not inside it.
    with pytest.raises(PathRefused, match="outside"):
        check_inside(str(tree.base / "videos2"), [tree.root])
    with pytest.raises(PathRefused, match="not an absolute path"):
        check_inside("sub/a.mp4", [tree.root])
    with pytest.raises(PathRefused, match="--allow-dir"):
        resolve_user_path("x", [])
    assert indexed_roots(["/a/b/c.mp4", "/a/b/d.mp4", "rel.mp4", ""]) == (Path("/a/b"),)


def test_uploads_checked_for_type_and_size(tmp_path):
    video = tmp_path / "clip.MP4"
    video.write_bytes(b"0" * 1000)
    assert check_upload(video, [".mp4"], 1000) == video
    with pytest.raises(UploadRefused, match="1000 B|MB"):
        check_upload(video, [".mp4"], 999)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(UploadRefused, match=r"not a video file.*allowed: \.mp4"):
        check_upload(text, [".mp4"], None)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(UploadRefused, match="empty"):
        check_upload(empty, ["mp4"], None)
    assert safe_filename("../../etc/pass wd.mp4") == "pass_wd.mp4"
    assert safe_filename("..\\..\\x.mkv") == "x.mkv"
    assert safe_filename(".hidden.mp4") == "hidden.mp4"
    assert safe_filename("....mp4") == "upload.mp4"


def test_bundled_label_sets():
    from vidsift.pipeline import label_sets
    from vidsift.pipeline.shapes.world import all_labels

    assert {"shapes-world", "generic"} <= set(label_sets.available())
    assert label_sets.load("shapes-world") == all_labels()
    assert 5 <= len(label_sets.load("generic")) <= 100
    for name in ("nope", "../label_sets/generic", "/etc/passwd", ""):
        with pytest.raises(InputError, match="Unknown label set"):
            label_sets.load(name)


def test_app_config_defaults_and_validation(tmp_path):
    from vidsift.app.app_config import AppConfig

    config = AppConfig(db=str(tmp_path / "vidsift.lance"))
    assert config.host == "127.0.0.1" and config.share is False and config.is_loopback
    assert config.work_path == tmp_path / "vidsift-app"
    assert config.uploads_dir == tmp_path / "vidsift-app" / "uploads"
    assert ".mp4" in config.upload_exts and ".txt" not in config.upload_exts
    assert AppConfig(db="s3://bucket/db").work_path.name == "vidsift-app"
    with pytest.raises(InputError, match="--allow-dir"):
        AppConfig(db=str(tmp_path / "db"), allow_dirs=(str(tmp_path / "missing"),))
    with pytest.raises(InputError, match="--max-upload-mb"):
        AppConfig(db=str(tmp_path / "db"), max_upload_mb=0)


# ---- a real server over a small archive, random weights ----------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory, random_vit):
    from vidsift.pipeline.indexing import index_sequential
    from vidsift.pipeline.store import VideoStore

    base = tmp_path_factory.mktemp("app")
    archive = base / "archive"
    make_video(archive / "shapes.mp4", fps=10, durations=(2.0, 2.0), pairs=[("red", "circle"), ("blue", "square")])
    make_video(archive / "sub" / "other.mp4", fps=10, durations=(2.0, 2.0, 2.0),
               pairs=[("green", "square"), ("purple", "star"), ("white", "star")])
    db = base / "db.lance"
    store = VideoStore(str(db))
    for path, tags in ((archive / "shapes.mp4", ("demo",)), (archive / "sub" / "other.mp4", ())):
        report = index_sequential(store, random_vit, [str(path)], INDEX, tags=tags)
        assert report.indexed == 1, report.to_dict()
    # A second allowed folder holding only links that lead out of it.
    extra, outside = base / "extra", base / "outside"
    extra.mkdir()
    outside.mkdir()
    make_video(outside / "secret.mp4", fps=10, durations=(2.0,), pairs=[("orange", "star")])
    (extra / "escape.mp4").symlink_to(outside / "secret.mp4")
    (extra / "escape-dir").symlink_to(outside, target_is_directory=True)
    demo, url, config = start_server(tmp_path_factory, db, random_vit.spec, random_vit, allow_dirs=(archive, extra),
                                     max_upload_mb=0.25)
    yield SimpleNamespace(url=url, demo=demo, service=demo.vidsift_service, page=demo.vidsift_page, config=config,
                          db=db, archive=archive,
                          extra=extra, outside=outside, base=base)
    demo.close()


@pytest.fixture(scope="module")
def client(server, tmp_path_factory):
    return Client(server.url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))


def frame_at(path: Path, seconds: float, out: Path) -> Path:
    from PIL import Image

    from vidsift.pipeline.video_libs import decord

    reader = decord().VideoReader(str(path))
    index = min(int(round(seconds * reader.get_avg_fps())), len(reader) - 1)
    Image.fromarray(reader[index].asnumpy()).save(out)
    return out


def hits_of(answer) -> tuple[list, list[dict]]:
    """/search answers (gallery, result): result holds the CLI's --json fields, hits in "results"."""
    gallery, result = answer
    return gallery, result["results"]


def counts(server) -> tuple[int, int, int]:
    from vidsift.pipeline.store import VideoStore

    store = VideoStore(str(server.db))
    summary = store.summary()
    return summary[0]["videos"], summary[0]["segments"], len(store.failures())


def test_named_api_endpoints(client):
    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert {"/search", "/classify", "/add_to_archive", "/index_folder"} <= set(api)
    assert [p["parameter_name"] for p in api["/search"]["parameters"]][:3] == ["query", "image", "clip"]


def test_search_by_example_frame_finds_its_segment_first(server, client, tmp_path):
    # A frame at 3.2 s of other.mp4 (the purple star, window 2-4 s).
    image = frame_at(server.archive / "sub" / "other.mp4", 3.2, tmp_path / "frame.png")
    gallery, hits = hits_of(client.predict(query="", image=handle_file(str(image)), k=3, api_name="/search"))
    assert hits[0]["video_path"] == str(server.archive / "sub" / "other.mp4")
    assert hits[0]["start"] <= 3.2 < hits[0]["end"]
    assert [h["rank"] for h in hits] == [1, 2, 3]
    assert len(gallery) == 3 and "other.mp4" in gallery[0]["caption"] and "0:02.00" in gallery[0]["caption"]
    assert Path(gallery[0]["image"]).stat().st_size > 100  # the stored JPEG thumbnail
    # A clip as the query: the same scene as the first segment of shapes.mp4 finds it first.
    clip = tmp_path / "query.mp4"
    make_video(clip, fps=10, durations=(2.0,), pairs=[("red", "circle")])
    _, hits = hits_of(client.predict(query="", clip=handle_file(str(clip)), k=2, api_name="/search"))
    assert (hits[0]["video_path"], hits[0]["start"]) == (str(server.archive / "shapes.mp4"), 0.0)
    assert hits[0]["score"] > 0.99


def test_search_text_filters_and_per_video(server, client):
    _, hits = hits_of(client.predict(query="a red circle", k=10, api_name="/search"))
    assert len(hits) == 5  # 2 + 3 segments
    assert all(a["score"] >= b["score"] for a, b in zip(hits, hits[1:]))
    _, hits = hits_of(client.predict(query="a red circle", tags=["demo"], api_name="/search"))
    assert {h["video_path"] for h in hits} == {str(server.archive / "shapes.mp4")} and hits[0]["tags"] == ["demo"]
    _, hits = hits_of(client.predict(query="a red circle", folder="/sub/", api_name="/search"))
    assert {h["video_path"] for h in hits} == {str(server.archive / "sub" / "other.mp4")}
    _, hits = hits_of(client.predict(query="a red circle", min_duration=5, api_name="/search"))  # other.mp4 is 6 s
    assert {h["video_path"] for h in hits} == {str(server.archive / "sub" / "other.mp4")}
    _, hits = hits_of(client.predict(query="a red circle", max_duration=1, api_name="/search"))
    assert hits == []
    _, hits = hits_of(client.predict(query="x", per_video=True, api_name="/search"))
    assert len(hits) == 2 and len({h["video_id"] for h in hits}) == 2
    _, hits = hits_of(client.predict(query="x", tags=["it's"], folder="'; DROP TABLE x; --", api_name="/search"))
    assert hits == []  # quotes are literals, not SQL


def test_a_refined_search_does_not_encode_its_text_again(server, random_vit):
    """Changing filters or top-k re-asks the same text: its embedding is reused, not recomputed."""
    from vidsift.app.service import VidsiftService

    encoded = []

    class CountingTexts:
        def __getattr__(self, name):
            return getattr(random_vit, name)

        def encode_texts(self, texts):
            encoded.append(list(texts))
            return random_vit.encode_texts(texts)

    from vidsift.pipeline.confidence import CONTENT_FREE_PROMPTS

    service = VidsiftService(server.config, encoder=CountingTexts())
    first = service.search(query="a red circle", k=10).payload["results"]
    narrowed = service.search(query="a red circle", k=10, folder="/sub/").payload["results"]
    again = service.search(query="  a red circle ", k=3).payload["results"]
    other = service.search(query="a blue square", k=10).payload["results"]
    # Besides the calibration's content-free prompts (once per model and process), only the two texts.
    assert [batch for batch in encoded if batch != list(CONTENT_FREE_PROMPTS)] == [["a red circle"], ["a blue square"]]
    assert again == first[:3] and 0 < len(narrowed) < len(first) and len(other) == len(first)


def test_search_answers_carry_confidence_match_and_the_cli_json_fields(server, client, tmp_path):
    gallery, result = client.predict(query="a red circle", k=4, api_name="/search")
    assert set(result) == {"query", "model", "results", "matches", "calibration"}
    assert (result["query"], result["model"]) == ("a red circle", "ViT-B-32|random")
    # An English-reading model nobody calibrated on this archive: content-free prompts only, said so.
    assert result["calibration"]["source"] == "none" and "vidsift calibrate" in result["calibration"]["note"]
    rows = result["results"]
    assert len(rows) == 4 and result["matches"] == sum(row["match"] for row in rows)
    for row, item in zip(rows, gallery):
        assert isinstance(row["match"], bool) and 0.0 <= row["confidence"] <= 1.0
        assert row["match"] == (row["confidence"] > 0.5)
        badge = f"{'✓' if row['match'] else 'weak'} {100 * row['confidence']:.0f}%"
        assert item["caption"].endswith(badge), (item["caption"], badge)  # the badge on every hit
    # A search by example has no text to be confident about.
    image = frame_at(server.archive / "shapes.mp4", 1.0, tmp_path / "frame.png")
    _, by_example = client.predict(query="", image=handle_file(str(image)), k=2, api_name="/search")
    assert by_example["matches"] is None and by_example["calibration"] is None
    assert all(row["match"] is None and row["confidence"] is None for row in by_example["results"])


def test_the_api_answers_with_the_cli_json_one_name_changed_for_gradio_client(server, client):
    """/search sends the service's answer, ``search_report``'s payload (what `vidsift search --json`
    prints), with each hit's "path" as "video_path" only: gradio_client downloads any JSON dict
    with a "path" as a file of the server, which the app does not serve."""
    _, wire = client.predict(query="a red circle", k=3, per_video=True, api_name="/search")
    assert all("path" not in row and row["video_path"].startswith(str(server.archive)) for row in wire["results"])
    here = server.service.search(query="a red circle", k=3, per_video=True).payload
    assert from_wire(wire) == here and to_wire(here) == wire
    assert {"path", "rank", "score", "start", "end", "video_id", "segment_index", "n_frames", "tags", "confidence",
            "match"} == set(here["results"][0])


def test_the_service_imports_no_gradio():
    """The service is plain Python: the CLI and scripts may use it without loading Gradio."""
    probe = "import sys, vidsift.app.service; print(sorted(m for m in sys.modules if m.split('.')[0] == 'gradio'))"
    run = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "[]"


def test_a_search_by_example_says_so_in_its_json(server, tmp_path):
    """As `vidsift search --image` does: no query, the example's kind, nothing to match on."""
    from vidsift.pipeline.search import read_image

    notes = []
    image = frame_at(server.archive / "shapes.mp4", 1.0, tmp_path / "frame.png")
    result = server.service.search(query="ignored", image=read_image(str(image)), k=2, on_note=notes.append)
    assert notes == ["Searching by the example image (clear it to search by text or by clip)."]
    assert (result.payload["query"], result.payload["example"], result.payload["matches"]) == (None, {"kind": "image"},
                                                                                               None)
    assert len(result.hits) == 2 and all(hit.thumbnail for hit in result.hits)  # the gallery's JPEGs


@pytest.mark.parametrize("kwargs,needle", [
    ({"query": "   "}, "query is empty"),
    ({"query": "x", "k": 0}, "minimum"),
    ({"query": "x", "min_duration": 5, "max_duration": 2}, "above the maximum"),
])
def test_bad_search_input_gets_a_clear_message(client, kwargs, needle):
    with pytest.raises(AppError, match=needle):
        client.predict(**kwargs, api_name="/search")


def test_two_users_searching_at_once_both_get_answers(server):
    fns = {fn.api_name: fn for fn in server.demo.fns.values() if fn.api_name}
    assert fns["search"].concurrency_limit == server.config.concurrency >= 2
    # Long work runs in groups of its own, so it never takes the searches' slots.
    assert len({fns[name].concurrency_id for name in ("search", "classify", "add_to_archive")}) == 3
    assert fns["add_to_archive"].concurrency_id == fns["index_folder"].concurrency_id
    assert fns["add_to_archive"].concurrency_limit == 1
    clients = [Client(server.url, verbose=False, download_files=False) for _ in range(2)]
    started = time.monotonic()
    jobs = [c.submit(query=q, k=3, api_name="/search") for c, q in zip(clients, ["a red circle", "a blue square"])]
    results = [job.result(timeout=120) for job in jobs]
    assert all(len(result["results"]) == 3 for _, result in results)
    assert time.monotonic() - started < 120


def test_classify_an_upload_per_segment(server, client):
    result = client.predict(clip=handle_file(str(server.archive / "shapes.mp4")),
                            labels="a red circle, a blue square\na green square", templates="{}\na photo of {}.",
                            per_segment=True, top=3, api_name="/classify")
    assert result["video"] == "shapes.mp4" and result["duration"] == pytest.approx(4.0, abs=0.2)
    assert {r["label"] for r in result["labels"]} == {"a red circle", "a blue square", "a green square"}
    assert sum(r["probability"] for r in result["labels"]) == pytest.approx(1.0, abs=1e-4)
    assert [(s["start"], s["end"]) for s in result["segments"]] == [(0.0, 2.0), (2.0, 4.0)]
    assert result["templates"] == ["{}", "a photo of {}."] and result["model"] == "ViT-B-32|random"
    # An indexed video by path, labels from a file.
    labels = server.base / "labels.txt"
    labels.write_text("# shapes\na red circle\na purple star\n")
    result = client.predict(video=str(server.archive / "sub" / "other.mp4"), labels_file=handle_file(str(labels)),
                            templates="{}", per_segment=False, api_name="/classify")
    assert {r["label"] for r in result["labels"]} == {"a red circle", "a purple star"} and result["segments"] == []


def test_bad_classify_input_gets_a_clear_message(server, client, tmp_path):
    notes = tmp_path / "notes.mp4"
    notes.write_text("this is not a video\n")
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    good = handle_file(str(server.archive / "shapes.mp4"))
    cases = [
        ({"clip": handle_file(str(notes)), "labels": "a,b"}, "notes.mp4: open failed: not a readable video"),
        ({"clip": handle_file(str(text)), "labels": "a,b"}, "(?i)invalid file type|not a video file"),
        ({"clip": good, "label_set": "nope"}, "Unknown label set 'nope'"),
        ({"clip": good, "labels": "a,b", "templates": "no placeholder"}, "exactly one"),
        ({"clip": good, "labels_file": handle_file(str(notes))}, "(?i)invalid file type|not a label file"),
        ({}, "Upload a clip or pick an indexed video"),
    ]
    for kwargs, needle in cases:
        with pytest.raises(AppError, match=needle) as info:
            client.predict(**kwargs, api_name="/classify")
        assert "gradio-tmp" not in str(info.value)  # uploads named by file name, not server path


def test_traversal_and_outside_paths_are_refused(server, client):
    archive = server.archive
    cases = [
        ({"video": "/etc/passwd"}, "outside the allowed folders"),
        ({"video": "../../etc/passwd"}, r"'\.\.' is not allowed"),
        ({"video": f"{archive}/../outside/secret.mp4"}, r"'\.\.' is not allowed"),
        ({"video": str(server.extra / "escape.mp4")}, "symbolic link leading outside"),
        ({"video": str(server.outside / "secret.mp4")}, "outside the allowed folders"),
        ({"video": str(archive / "sub")}, "not an indexed video"),
    ]
    for kwargs, needle in cases:
        with pytest.raises(AppError, match=needle):
            client.predict(**kwargs, labels="a,b", api_name="/classify")
    folder_cases = [
        ({"root": str(archive), "subfolder": "../outside"}, r"'\.\.' is not allowed"),
        ({"root": str(archive), "subfolder": "/etc"}, "outside the allowed folders"),
        ({"root": "/etc", "subfolder": ""}, "not one of the allowed folders"),
        ({"root": str(server.extra), "subfolder": "escape-dir"}, "symbolic link leading outside"),
        ({"root": str(server.extra), "subfolder": ""}, "symbolic links leading outside"),
    ]
    before = counts(server)
    for kwargs, needle in folder_cases:
        with pytest.raises(AppError, match=needle):
            client.predict(**kwargs, api_name="/index_folder")
    assert counts(server) == before


def test_index_a_folder_from_the_page(server, client):
    message = client.predict(root=str(server.archive), subfolder="sub", api_name="/index_folder")
    assert "already indexed 1" in message and "failed 0" in message


def test_files_are_served_only_by_token_and_only_when_allowed(server):
    service, page, url = server.service, server.page, server.url
    video = server.archive / "shapes.mp4"
    html = page.play([{"path": str(video), "start": 2.0, "end": 4.0, "score": 0.5, "tags": []}],
                     SimpleNamespace(index=0))
    assert "<video" in html and "#t=2.000" in html
    token = html.split("vidsift/media/")[1].split("#")[0]
    response = httpx.get(f"{url}vidsift/media/{token}", headers={"Range": "bytes=0-99"})
    assert response.status_code == 206 and response.content == video.read_bytes()[:100]
    assert response.headers["content-type"] == "video/mp4"
    assert httpx.get(f"{url}vidsift/media/not-a-token").status_code == 404
    # Links leading out are refused when asked to play...
    with pytest.raises(PathRefused, match="symbolic link"):
        service.media.register(str(server.extra / "escape.mp4"))
    with pytest.warns(UserWarning, match="outside the allowed folders"):  # gr.Warning outside an event
        refused = page.play([{"path": str(server.outside / "secret.mp4"), "start": 0, "end": 2, "score": 0,
                              "tags": []}], SimpleNamespace(index=0))
    assert "<video" not in refused and "outside the allowed folders" in refused
    # ...and a file swapped for such a link after its token was handed out is not served.
    swapped = server.archive / "swap" / "swapped.mp4"
    swapped.parent.mkdir()
    swapped.write_bytes(video.read_bytes())
    token = service.media.register(str(swapped))
    assert httpx.get(f"{url}vidsift/media/{token}").status_code == 200
    swapped.unlink()
    swapped.symlink_to(server.outside / "secret.mp4")
    assert httpx.get(f"{url}vidsift/media/{token}").status_code == 404
    # Gradio's own file route serves neither archive videos nor system files.
    for path in (str(video), "/etc/passwd", f"{server.archive}/../outside/secret.mp4", str(server.db),
                 str(server.config.uploads_dir)):
        assert httpx.get(f"{url}gradio_api/file={path}").status_code in (403, 404)
    assert httpx.get(f"{url}gradio_api/file=%2e%2e/%2e%2e/etc/passwd").status_code in (403, 404)


def test_uploads_limited_in_size_and_type(server, client, tmp_path):
    big = tmp_path / "big.mp4"
    big.write_bytes(os.urandom(int(0.3 * 1024 * 1024)))  # over the 0.25 MB limit
    response = httpx.post(f"{server.url}gradio_api/upload", files={"files": ("big.mp4", big.read_bytes())})
    assert response.status_code == 413
    before = counts(server)
    with pytest.raises(ValueError, match="exceeds the maximum file size"):  # gradio_client checks it first
        client.predict(clip=handle_file(str(big)), tags=["x"], api_name="/add_to_archive")
    assert counts(server) == before


def test_add_to_archive_indexes_the_upload_with_its_tags(server, client, tmp_path):
    clip = tmp_path / "my clip.mp4"
    make_video(clip, fps=10, durations=(2.0,), pairs=[("yellow", "triangle")])
    before = counts(server)
    message = client.predict(clip=handle_file(str(clip)), tags=["a yellow triangle", "mine"],
                             api_name="/add_to_archive")
    assert "Added" in message and "a yellow triangle, mine" in message
    videos, segments, failures = counts(server)
    assert (videos, failures) == (before[0] + 1, before[2]) and segments == before[1] + 1
    copies = list(server.config.uploads_dir.rglob("*.mp4"))
    assert [c.name for c in copies] == ["my_clip.mp4"]
    _, hits = hits_of(client.predict(query="anything", tags=["mine"], api_name="/search"))
    assert [h["video_path"] for h in hits] == [str(copies[0])]
    assert hits[0]["tags"] == ["a yellow triangle", "mine"]
    # The copy is playable (inside the uploads folder), and the same clip again adds nothing.
    assert "<video" in server.page.play(from_wire({"results": hits}), SimpleNamespace(index=0))
    assert httpx.get(f"{server.url}gradio_api/file={copies[0]}").status_code in (403, 404)
    again = client.predict(clip=handle_file(str(clip)), tags=["other"], api_name="/add_to_archive")
    assert "already in the archive" in again
    assert counts(server) == (videos, segments, failures)


def test_bad_uploads_leave_the_archive_untouched(server, client, tmp_path):
    good = tmp_path / "good.mp4"
    make_video(good, fps=10, durations=(2.0,), pairs=[("white", "circle")])
    data = good.read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video")
    before = counts(server)
    uploads_before = sorted(server.config.uploads_dir.rglob("*"))
    for path in (truncated, notes):
        with pytest.raises(AppError, match=f"{path.name}: .* failed"):
            client.predict(clip=handle_file(str(path)), tags=["bad"], api_name="/add_to_archive")
    with pytest.raises(AppError, match="Upload a clip first"):
        client.predict(clip=None, tags=["bad"], api_name="/add_to_archive")
    assert counts(server) == before
    assert sorted(server.config.uploads_dir.rglob("*.mp4")) == [p for p in uploads_before if p.suffix == ".mp4"]


@contextlib.contextmanager
def sigint_as_in_a_terminal():
    """Children started in the block get SIGINT as a terminal's foreground job has it. A command
    started in the background of a script (``pytest ... &``) runs with SIGINT ignored, its children
    keep that through exec, and Python then installs no KeyboardInterrupt handler: the app would
    never see the Ctrl-C a test sends. Main thread only (``signal.signal``)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def hold_heartbeat(url: str, opened) -> None:
    """What an open page holds: Gradio's heartbeat stream, read until the server ends it."""
    try:
        with httpx.stream("GET", url, timeout=httpx.Timeout(10.0, read=None)) as response:
            response.raise_for_status()
            opened.set()
            for _ in response.iter_bytes():
                pass
    except httpx.HTTPError:
        pass


def test_vidsift_app_command_prints_its_url_and_listens_on_loopback(server, tmp_path):
    """It also announces itself (for `vidsift search` to ask it) once its model is loaded, and
    withdraws the announcement when stopped. Ctrl-C with a page open (its heartbeat stream held)
    stops it cleanly too, the stream ended by the server."""
    port = free_port()
    runtime = tmp_path / "runtime"
    with sigint_as_in_a_terminal():
        proc = subprocess.Popen([sys.executable, "-m", "vidsift.app.cli", "app", "--db", str(server.db), "--model",
                                 "ViT-B-32", "--pretrained", "none", "--port", str(port), "--allow-dir",
                                 str(server.archive)],
                                cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", "VIDSIFT_RUNTIME_DIR": str(runtime)})
    try:
        deadline, line = time.monotonic() + 90, ""
        while "vidsift app: serving" not in line and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], deadline - time.monotonic())
            line = proc.stdout.readline() if ready else ""
            if ready and not line:
                break  # exited
        assert f"http://127.0.0.1:{port}/" in line, (line, proc.stderr.read() if proc.poll() is not None else "")
        assert httpx.get(f"http://127.0.0.1:{port}/").status_code == 200
        deadline = time.monotonic() + 300
        while not list(runtime.glob("*.json")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        (announcement,) = runtime.glob("*.json")
        assert json.loads(announcement.read_text())["url"] == f"http://127.0.0.1:{port}"
        page_open = threading.Event()
        page = threading.Thread(target=hold_heartbeat, daemon=True,
                                args=(f"http://127.0.0.1:{port}/gradio_api/heartbeat/test-page", page_open))
        page.start()
        assert page_open.wait(timeout=30)
        proc.send_signal(signal.SIGINT)
        # Shutdown is well under a second of work (a server thread, the announcement, no heap-wide
        # garbage collection at exit); 30 s is room for a loaded machine, not a measurement.
        assert proc.wait(timeout=30) == 0, proc.stderr.read()
        assert not announcement.exists()
        page.join(timeout=30)
        assert not page.is_alive()  # the server ended the page's stream
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ---- semantics, with the bundled shapes-tiny model ------------------------------------------------
def test_shapes_tiny_text_search_and_classification_are_right(tmp_path_factory):
    from vidsift.models.encoder import ClipEncoder
    from vidsift.models.spec import resolve_spec
    from vidsift.pipeline.indexing import index_sequential
    from vidsift.pipeline.store import VideoStore

    base = tmp_path_factory.mktemp("tiny")
    pairs = [("blue", "square"), ("red", "circle"), ("yellow", "triangle"), ("white", "star")]
    make_video(base / "archive" / "four.mp4", fps=10, durations=(2.0,) * 4, pairs=pairs, size=(320, 240))
    make_video(base / "clip.mp4", fps=10, durations=(3.0,), pairs=[("green", "square")], size=(320, 240))
    spec = resolve_spec("shapes-tiny")
    encoder = ClipEncoder.from_spec(spec)
    store = VideoStore(str(base / "db.lance"))
    assert index_sequential(store, encoder, [str(base / "archive" / "four.mp4")], INDEX).indexed == 1
    demo, url, _ = start_server(tmp_path_factory, base / "db.lance", spec, encoder)
    try:
        client = Client(url, verbose=False, download_files=str(base / "downloads"))
        _, answer = client.predict(query="a red circle", k=4, api_name="/search")
        hits = answer["results"]
        assert (hits[0]["start"], hits[0]["end"]) == (2.0, 4.0), hits
        assert hits[0]["match"] is True and answer["matches"] == 1, hits  # the other three scenes are not red circles
        assert answer["calibration"]["source"] == "default"
        _, hits = hits_of(client.predict(query="a white star", k=4, api_name="/search"))
        assert (hits[0]["start"], hits[0]["end"]) == (6.0, 8.0), hits
        # Nothing here is a green circle: no match, the closest segments all weak.
        _, answer = client.predict(query="a green circle", k=4, api_name="/search")
        assert answer["matches"] == 0 and len(answer["results"]) == 4
        assert not any(hit["match"] for hit in answer["results"])
        status = render.search_status(answer)
        assert "No match" in status and "a green circle" in status and status.count("opacity") == 4
        result = client.predict(clip=handle_file(str(base / "clip.mp4")), label_set="shapes-world", top=3,
                                api_name="/classify")
        assert result["labels"][0]["label"] == "a green square", result["labels"]
        assert result["n_labels"] == 28 and result["label"] == "a green square" and result["labels"][0]["match"]
        # The clip shows none of these labels: the answer is "none" (JSON null), each label not a match.
        result = client.predict(clip=handle_file(str(base / "clip.mp4")), labels="a red circle, a blue square",
                                per_segment=True, api_name="/classify")
        assert result["label"] is None and result["matches"] == [], result
        assert [row["match"] for row in result["labels"]] == [False, False]
        assert all(seg["label"] is None for seg in result["segments"])
        assert "None of these labels" in render.verdict(result)
    finally:
        demo.close()


# ---- the archive's models: served without --model, a second one indexed meanwhile, switched ------
def test_the_app_serves_the_archives_model_and_switches_without_downtime(tmp_path_factory):
    """`vidsift app` without --model serves the model the archive was indexed with. Another process
    indexes a second model into the same archive meanwhile: its own tables, and every search
    meanwhile answers with the first. The Library switches in one call, `vidsift models --default`
    from the shell; the running app follows either on its next search."""
    from vidsift.app.cli import main
    from vidsift.models.encoder import ClipEncoder
    from vidsift.models.spec import resolve_spec
    from vidsift.pipeline.indexing import index_sequential
    from vidsift.pipeline.store import VideoStore

    base = tmp_path_factory.mktemp("models")
    pairs = [("blue", "square"), ("red", "star"), ("yellow", "triangle"), ("white", "circle")]
    make_video(base / "archive" / "four.mp4", fps=10, durations=(2.0,) * 4, pairs=pairs, size=(320, 240))
    db = base / "db.lance"
    tiny = ClipEncoder.from_spec(resolve_spec("shapes-tiny"))
    assert index_sequential(VideoStore(str(db)), tiny, [str(base / "archive" / "four.mp4")], INDEX).indexed == 1
    demo, url, config = start_server(tmp_path_factory, db, None, None)  # no --model
    try:
        service = demo.vidsift_service
        assert config.spec is None and service.spec.key == tiny.model_key
        client = Client(url, verbose=False, download_files=str(base / "downloads"))

        def best() -> tuple[str, float]:
            _, answer = client.predict(query="a red star", k=1, api_name="/search")
            return answer["model"], answer["results"][0]["start"]

        assert best() == (tiny.model_key, 2.0)

        job = subprocess.Popen([sys.executable, "-m", "vidsift.app.cli", "index", str(base / "archive"), "--db", str(db),
                                "--model", "shapes-tiny", "--pretrained", "none", "--no-ray", "--segments", "fixed",
                                "--window", "2"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        during = []
        while job.poll() is None:
            during.append(best())
            time.sleep(0.3)
        assert job.returncode == 0, job.stderr.read()
        assert during and set(during) == {(tiny.model_key, 2.0)}, during
        assert best() == (tiny.model_key, 2.0)  # indexed, not served: the default did not change

        table, switch = demo.vidsift_page.models_view()
        assert switch["choices"] == [tiny.model_key, "shapes-tiny|random"] and switch["value"] == tiny.model_key
        assert table[["served", "model", "weights", "videos", "progress"]].values.tolist() == [
            ["●", "shapes-tiny", tiny.model_key.split("|")[1], 1, "100% of 1 videos"],
            ["", "shapes-tiny", "random", 1, "100% of 1 videos"]]

        assert client.predict("shapes-tiny|random", api_name="/switch_model") == "shapes-tiny|random"
        assert best()[0] == "shapes-tiny|random"
        assert VideoStore(str(db)).default_model().key == "shapes-tiny|random"
        header, *_ = demo.vidsift_page.refresh()
        assert "shapes-tiny|random" in header

        assert main(["models", "--db", str(db), "--default", tiny.model_key]) == 0  # from the shell
        assert best() == (tiny.model_key, 2.0)
        with pytest.raises(AppError, match="no model 'RN50'"):
            client.predict("RN50", api_name="/switch_model")
    finally:
        demo.close()


def test_a_storage_failure_is_one_clear_message(server, monkeypatch, tmp_path, caplog):
    """A full or read-only disk while adding to the archive: the page says so, naming the database."""
    import errno

    import gradio as gr

    from vidsift.pipeline.lock import write_error

    def full(*args, **kwargs):
        raise write_error(str(server.db), OSError(errno.ENOSPC, "No space left on device"))

    monkeypatch.setattr("vidsift.app.writes.index_sequential", full)
    clip = tmp_path / "clip.mp4"
    make_video(clip, fps=10, durations=(2.0,))
    with pytest.raises(gr.Error) as raised:
        server.page.add_to_archive(str(clip), ["x"], progress=lambda *a, **k: None)
    assert raised.value.title == "Adding to the archive failed"
    assert raised.value.message == (f"Adding to the archive failed: {server.db}: cannot write the database: the disk "
                                    "is full (no space left on device)")  # not a bug's "StoreWriteError: ..."
    assert not [r for r in caplog.records if r.exc_info]  # nor logged with a traceback, as a bug is


def test_library_shows_when_each_folder_was_last_scanned(server):
    """`vidsift index` and `--watch` record each folder's scan in the archive; the Library says when."""
    import datetime as dt

    from vidsift.pipeline.scans import ScanCounts, record_scan

    service = server.service
    before, _, _ = server.page.library()
    assert "last scanned" not in before
    at = dt.datetime(2026, 12, 1, 20, 0, 5, tzinfo=dt.timezone.utc)
    record_scan(service.store, str(server.archive), service.spec.key, ScanCounts(added=2, removed=1), "watch", at=at)
    summary, _, _ = server.page.library()
    assert (f"- folder `{server.archive}` last scanned 2026-12-01T20:00:05+00:00 (watch: 2 added, 0 changed, "
            "1 removed, 0 failed)") in summary
