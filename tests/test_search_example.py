"""`vidsift search --image FILE` / `--clip FILE`: search by example through the CLI (in process,
``app.cli.main``), on the bundled shapes-tiny over a small shapes-world archive.

The example is cut from an indexed red-star scene; the archive also holds a red circle (same
colour) and a white star (same shape), so finding the red star first needs both."""
import json
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO, make_video

TINY = ["--model", "shapes-tiny"]
STAR_SCENE = (3.0, 6.0)  # red_star.mp4: a green circle for 3 s, then a red star for 3 s


def _main(argv, capfd):
    """`app.cli.main` in this process: status, stdout, stderr lines."""
    from vidsift.app.cli import main

    code = main([str(a) for a in argv])
    out, err = capfd.readouterr()
    return code, out, [line for line in err.splitlines() if line.strip()]


def _cut_frames(src, start, end):
    import av

    with av.open(str(src)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0) if start <= f.time < end]


def _write_clip(path, frames, fps=10):
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    from PIL import Image

    from vidsift.app.cli import main

    root = tmp_path_factory.mktemp("search-example")
    videos = root / "videos"
    make_video(videos / "red_star.mp4", fps=10, durations=(3.0, 3.0), pairs=[("green", "circle"), ("red", "star")])
    make_video(videos / "red_circle.mp4", fps=10, durations=(3.0,), pairs=[("red", "circle")])
    make_video(videos / "white_star.mp4", fps=10, durations=(3.0,), pairs=[("white", "star")])
    make_video(videos / "blue_square.mp4", fps=10, durations=(3.0,), pairs=[("blue", "square")])
    db = root / "db"
    assert main(["index", str(videos), "--db", str(db), *TINY, "--no-ray"]) == 0
    star = _cut_frames(videos / "red_star.mp4", *STAR_SCENE)
    image = root / "examples" / "star.png"
    image.parent.mkdir()
    Image.fromarray(star[len(star) // 2]).save(image)
    clip = root / "examples" / "star.mp4"
    _write_clip(clip, star[5:25])  # 2 s from inside the scene
    (root / "examples" / "notes.txt").write_text("not a picture\n")
    (root / "examples" / "notes.mp4").write_text("not a video\n")
    return {"db": db, "image": image, "clip": clip, "videos": videos, "examples": root / "examples"}


def _search(capfd, db, *argv):
    code, out, err = _main(["search", *argv, "--db", db, *TINY, "--json"], capfd)
    assert code == 0, err
    return json.loads(out)


@pytest.mark.parametrize("flag", ["--image", "--clip"])
def test_an_example_cut_from_the_red_star_scene_finds_that_scene_first(archive, capfd, flag):
    payload = _search(capfd, archive["db"], flag, archive[flag[2:]], "-k", "4")
    results = payload["results"]
    assert len(results) == 4 and [r["rank"] for r in results] == [1, 2, 3, 4]
    top = results[0]
    assert top["path"].endswith("red_star.mp4")
    assert top["start"] < STAR_SCENE[1] and top["end"] > STAR_SCENE[0] and top["start"] >= STAR_SCENE[0] - 0.2
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    assert top["score"] > 0.9  # embedded as the indexed frames were: nearly the scene's own vector
    assert payload["example"] == {"kind": flag[2:], "path": str(archive[flag[2:]])}


def test_example_search_has_the_text_searchs_json_fields_without_confidence(archive, capfd):
    text = _search(capfd, archive["db"], "a red star", "-k", "3")
    image = _search(capfd, archive["db"], "--image", archive["image"], "-k", "3")
    assert set(image) == set(text) | {"example"}
    assert [set(r) for r in image["results"]] == [set(r) for r in text["results"]]
    assert image["query"] is None and image["matches"] is None and image["calibration"] is None
    assert all(r["confidence"] is None and r["match"] is None for r in image["results"])
    assert text["results"][0]["match"] is True and text["calibration"] is not None  # text search unchanged


def test_example_search_takes_the_same_options(archive, capfd, tmp_path):
    db, image = archive["db"], archive["image"]
    per_video = _search(capfd, db, "--image", image, "--per-video", "-k", "10")["results"]
    assert len({r["video_id"] for r in per_video}) == len(per_video) == 4
    only = _search(capfd, db, "--image", image, "--where", "path LIKE '%white_star%'")["results"]
    assert only and all(r["path"].endswith("white_star.mp4") for r in only)
    qs = _search(capfd, db, "--clip", archive["clip"], "--pooling", "qs", "--exact", "-k", "2",
                 "--thumbnails", tmp_path / "thumbs")["results"]
    assert qs[0]["path"].endswith("red_star.mp4")
    assert all((tmp_path / "thumbs" / r["thumbnail_file"].rsplit("/", 1)[-1]).stat().st_size > 100 for r in qs)

    code, out, err = _main(["search", "--image", image, "--db", db, *TINY, "-k", "2"], capfd)
    lines = out.strip().splitlines()
    assert code == 0 and len(lines) == 2 and lines[0].split()[0] == "1" and lines[0].endswith("red_star.mp4")
    assert not any(word in out for word in ("match", "weak", "%"))  # no confidence to show


@pytest.mark.parametrize("argv,code,needle", [
    (["--image", "EX/missing.png"], 1, "EX/missing.png: open failed: file does not exist"),
    (["--image", "EX/notes.txt"], 1, "EX/notes.txt: open failed: not an image"),
    (["--image", "EX/star.mp4"], 1, "EX/star.mp4: open failed: not an image"),
    (["--clip", "EX/notes.mp4"], 1, "EX/notes.mp4: open failed: not a readable video"),
    (["--clip", "EX/missing.mp4"], 1, "EX/missing.mp4: open failed: file does not exist"),
    (["--clip", "EX/star.png"], 1, "EX/star.png: open failed"),
    ([], 2, "give a query, --image FILE or --clip FILE"),
    (["a red star", "--image", "EX/star.png"], 2, "give only one of a query, --image or --clip"),
    (["--image", "EX/star.png", "--clip", "EX/star.mp4"], 2, "got --image and --clip"),
    (["--image", "EX/star.png", "--matches-only"], 2, "--matches-only needs a text query"),
])
def test_a_bad_example_is_one_line_naming_it(archive, capfd, argv, code, needle):
    examples = str(archive["examples"])
    argv = [a.replace("EX", examples) for a in argv]
    status, out, err = _main(["search", *argv, "--db", archive["db"], *TINY], capfd)
    assert status == code
    assert len(err) == 1 and needle.replace("EX", examples) in err[0], err
    assert err[0].startswith("vidsift search: error: ") and out == ""


def test_a_bad_example_is_refused_before_the_model_or_the_archive_loads(archive):
    probe = ("import sys\nfrom app.cli import main\n"
             f"code = main(['search', '--image', {str(archive['examples'] / 'notes.txt')!r}, '--db', "
             f"{str(archive['db'])!r}, '--model', 'shapes-tiny'])\n"
             "print(code, sorted(m for m in ('torch', 'lancedb', 'open_clip') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.stdout.split("\n")[0] == "1 []", result.stdout + result.stderr
    assert "notes.txt: open failed: not an image" in result.stderr


def test_image_vector_takes_grey_and_rgba_like_rgb(archive):
    """The app hands arrays (grey, RGB, RGBA); they embed as the RGB picture they show."""
    from PIL import Image

    from vidsift.models.encoder import ClipEncoder
    from vidsift.models.spec import resolve_spec
    from vidsift.pipeline.search import image_vector, read_image

    encoder = ClipEncoder.from_spec(resolve_spec("shapes-tiny"))
    rgb = read_image(str(archive["image"]))
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
    assert np.allclose(image_vector(encoder, rgba), image_vector(encoder, rgb), atol=1e-6)
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    assert image_vector(encoder, grey).shape == image_vector(encoder, rgb).shape
    with pytest.raises(ValueError, match="unusable shape"):
        image_vector(encoder, rgb[:1, :1])
