"""Tests for the shapes-world renderer (pipeline/shapes/: spec, draw, encode, archive, manifest) and
vocabulary (pipeline/shapes/world.py).

The semantic tests and benchmarks of vidsift trust the manifest as ground truth, so these tests
check the manifest against what a real decoder (decord) sees: size, fps, frame count, duration
and which colour is on screen when, in every container the spec requires.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # the project is not pip-installed in every checkout
    sys.path.insert(0, str(REPO))

# shapes.encode loads PyAV before decord (see pipeline/video_libs.py on libvpx); the subprocess
# test below checks that the opposite order still works.
from vidsift.pipeline.shapes import encode
from vidsift.pipeline.shapes import archive, draw, manifest, spec
from vidsift.pipeline.errors import InputError
from vidsift.pipeline.shapes.world import (
    BACKGROUNDS,
    COLOURS,
    HELDOUT,
    SHAPES,
    all_labels,
    caption_variants,
    is_heldout,
    label,
    parse_label,
)
from vidsift.pipeline.shapes.spec import SceneSpec, VideoSpec

import decord  # noqa: E402


# --- vocabulary ----------------------------------------------------------------------------


def test_labels_and_articles():
    assert label("red", "circle") == "a red circle"
    assert label("orange", "star") == "an orange star"
    labels = all_labels()
    assert len(labels) == 28 == len(set(labels))
    assert labels == all_labels()  # stable order
    assert labels[0] == "a red circle"
    assert sum(l.startswith("an ") for l in labels) == 4  # only orange takes "an"
    assert parse_label("an orange star") == ("orange", "star")
    with pytest.raises(ValueError):
        label("pink", "circle")


def test_heldout_pairs():
    assert len(HELDOUT) == 5
    assert is_heldout("purple", "star") and is_heldout("blue", "star")
    assert not is_heldout("red", "star")
    assert all(c in COLOURS and s in SHAPES for c, s in HELDOUT)


def test_caption_variants():
    caps = caption_variants("orange", "star", "black")
    assert 10 <= len(caps) <= 25 and len(set(caps)) == len(caps)
    assert "an orange star" in caps and "orange star" in caps
    assert "an orange star on a black background" in caps
    assert all("orange star" in c for c in caps)
    assert not any("on a" in c and "background" in c for c in caption_variants("red", "circle"))


# --- frames --------------------------------------------------------------------------------


def _area(shape: str, r: float) -> float:
    """Analytic area of a shape with bounding-circle radius r."""
    return {
        "circle": math.pi * r * r,
        "square": 2 * r * r,
        "triangle": 3 * math.sqrt(3) / 4 * r * r,
        "star": 5 * r * (draw.STAR_INNER_RATIO * r) * math.sin(math.pi / 5),
    }[shape]


@pytest.mark.parametrize("shape", SHAPES)
def test_render_frame_shape_area_and_flat_colour(shape):
    video = VideoSpec([SceneSpec("purple", shape, 2.0, size_frac=0.45, rotation0=0.7)], 640, 480, 24)
    frame = draw.render_frame(video, video.scenes[0], 0.0)
    colour = np.array(COLOURS["purple"], dtype=np.uint8)
    obj = np.all(frame == colour, axis=-1)
    assert np.all(frame[~obj] == 0)  # black, no noise
    r = 0.45 * 480 / 2
    assert obj.sum() == pytest.approx(_area(shape, r), rel=0.03)


def test_noise_is_bounded_and_background_only():
    video = VideoSpec([SceneSpec("white", "square", 2.0)], 320, 240, 24, background="gray", noise_std=8)
    frame = draw.render_frame(video, video.scenes[0], 0.5, np.random.default_rng(0)).astype(float)
    mask = draw.object_mask(video, video.scenes[0], 0.5)
    assert np.all(frame[mask] == COLOURS["white"])
    bg = frame[~mask]
    assert abs(bg.mean() - 128) < 0.5 and 7.0 < bg.std() < 9.0


def test_object_fully_inside_frame():
    """Random specs at sampled times (incl. long after many bounces): nothing touches the edge."""
    rng = np.random.default_rng(7)
    for _ in range(40):
        video = archive.random_video_spec(rng)
        for scene in video.scenes:
            r = scene.size_frac * video.height / 2
            for t in np.linspace(0, scene.duration_s, 7):
                cx, cy, _ = draw.object_pose(video, scene, float(t))
                assert r <= cx <= video.width - r and r <= cy <= video.height - r
            mask = draw.object_mask(video, scene, scene.duration_s * 0.37)
            edges = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
            assert not edges.any()
            assert mask.sum() == pytest.approx(_area(scene.shape, r), rel=0.12)


def test_motion_is_continuous_and_bounded_in_speed():
    scene = SceneSpec("red", "circle", 15.0, size_frac=0.2, vx=0.3, vy=-0.4)
    video = VideoSpec([scene], 320, 240, 30)
    ts = np.arange(0, 15, 1 / 30)
    pos = np.array([draw.object_pose(video, scene, float(t))[:2] for t in ts])
    step = np.hypot(*np.diff(pos, axis=0).T)
    assert step.max() <= 0.5 * 320 / 30 + 1e-6  # never faster than |v|
    assert np.ptp(pos[:, 0]) > 100 and np.ptp(pos[:, 1]) > 100  # it really bounces around


# --- videos through a real decoder ---------------------------------------------------------

SCENES = [
    SceneSpec("red", "star", 2.0, size_frac=0.4, x0=0.3, vx=0.3, vy=0.2, spin=1.0),
    SceneSpec("blue", "square", 2.5, size_frac=0.45, y0=0.6, vx=-0.4, rotation0=0.3),
    SceneSpec("yellow", "circle", 2.0, size_frac=0.4, vy=0.5),
]


def _object_mean(frame: np.ndarray, background: str) -> tuple[np.ndarray, int]:
    """Mean colour of the pixels clearly different from the background, found without the renderer."""
    diff = np.abs(frame.astype(float) - BACKGROUNDS[background]).max(axis=-1)
    obj = diff > 70
    return frame[obj].astype(float).mean(axis=0), int(obj.sum())


def _check_decoded(path: Path, entry: dict, video: VideoSpec) -> None:
    vr = decord.VideoReader(str(path))
    n = entry["n_frames"]
    assert (entry["width"], entry["height"]) == (video.width, video.height)
    assert vr[0].shape == (video.height, video.width, 3)
    assert len(vr) == n == round(entry["duration"] * entry["fps"])
    assert vr.get_avg_fps() == pytest.approx(entry["fps"], abs=1e-3)
    # the last frame really decodes and ends where the manifest says (mkv/webm store ms)
    assert vr[n - 1].shape[0] == video.height
    assert vr.get_frame_timestamp(n - 1)[1] == pytest.approx(entry["duration"], abs=2e-3)
    mids = [round((s["start"] + s["end"]) / 2 * entry["fps"]) for s in entry["scenes"]]
    frames = vr.get_batch(mids).asnumpy()
    for drawn, scene, frame in zip(video.scenes, entry["scenes"], frames):
        mean, count = _object_mean(frame, entry["background"])
        expected = _area(drawn.shape, drawn.size_frac * video.height / 2)
        assert 0.7 * expected < count < 1.3 * expected, (scene, count, expected)
        assert np.all(np.abs(mean - COLOURS[scene["colour"]]) < 30), (scene, mean)


@pytest.mark.parametrize("container", list(spec.CONTAINERS))
@pytest.mark.parametrize("fps", [10, 24, 25, 30, 60, Fraction(30000, 1001)], ids=str)
def test_render_video_decodes_as_manifest_says(tmp_path, container, fps):
    noisy = fps in (25, 60)
    video = VideoSpec(
        SCENES[:2] if fps == 60 else SCENES,  # keep the 60 fps videos short
        214 if fps in (24, 30) else 160,
        120,
        fps,
        container,
        "gray" if noisy else "black",
        8.0 if noisy else 0.0,
    )
    path = tmp_path / f"v.{container}"
    entry = encode.render_video(path, video, seed=1)
    assert entry["path"] == str(path) and entry["container"] == container
    assert [s["label"] for s in entry["scenes"]] == [s.label for s in video.scenes]
    assert entry["scenes"][0]["start"] == 0.0
    assert entry["scenes"][-1]["end"] == entry["duration"]
    for a, b in zip(entry["scenes"], entry["scenes"][1:]):
        assert a["end"] == b["start"]
    _check_decoded(path, entry, video)


def test_scene_starts_on_frame_grid():
    video = VideoSpec([SceneSpec("red", "circle", 2.03), SceneSpec("blue", "star", 2.04)], 160, 120, 25)
    assert spec.scene_frame_starts(video) == [0, round(2.03 * 25), round(4.07 * 25)]
    entry = manifest.manifest_entry("x.mp4", video)
    assert entry["scenes"][1]["start"] == pytest.approx(51 / 25)
    assert entry["n_frames"] == 102 and entry["duration"] == pytest.approx(102 / 25)


def test_decoded_frames_match_rendered_frames(tmp_path):
    """Random access in decord returns exactly the frame the renderer drew at that index."""
    video = VideoSpec(SCENES, 160, 120, 15, "avi", "gray", 3.0)
    path = tmp_path / "v.avi"
    encode.render_video(path, video, seed=5)
    rendered = list(draw.iter_frames(video, 5))
    vr = decord.VideoReader(str(path))
    for i in [70, 3, 50, 31, 0, 95, 29]:
        decoded = vr[i].asnumpy().astype(float)
        errors = [np.abs(decoded - rendered[j]).mean() for j in range(len(rendered))]
        assert int(np.argmin(errors)) == i


def test_webm_works_when_decord_was_imported_first(tmp_path):
    """decord's libvpx shadows PyAV's if decord loads first; render_video must still work."""
    code = (
        "import decord, sys\n"
        "from vidsift.pipeline.shapes.spec import SceneSpec, VideoSpec\n"
        "from vidsift.pipeline.shapes.encode import render_video, _vp9_encoder_usable\n"
        "v = VideoSpec([SceneSpec('green', 'star', 2.0)], 160, 120, 10, 'webm')\n"
        "e = render_video(sys.argv[1], v)\n"
        "vr = decord.VideoReader(sys.argv[1])\n"
        "print(_vp9_encoder_usable(), len(vr), e['n_frames'])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "v.webm")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    usable, n_decoded, n_frames = out.stdout.split()
    assert int(n_decoded) == int(n_frames) == 20
    # whichever path the child took (fallback subprocess or not), the bytes are the same
    video = VideoSpec([SceneSpec("green", "star", 2.0)], 160, 120, 10, "webm")
    encode.render_video(tmp_path / "here.webm", video)
    assert (tmp_path / "here.webm").read_bytes() == (tmp_path / "v.webm").read_bytes()


# --- random specs and archives -------------------------------------------------------------


def test_random_specs_cover_the_spec_range():
    rng = np.random.default_rng(0)
    specs = [archive.random_video_spec(rng) for _ in range(400)]
    assert {v.container for v in specs} == set(spec.CONTAINERS)
    assert {v.background for v in specs} == set(BACKGROUNDS)
    assert {len(v.scenes) for v in specs} == {1, 2, 3, 4}
    assert {float(spec.fps_fraction(v.fps)) for v in specs} >= {10.0, 24.0, 25.0, 30.0, 60.0, 30000 / 1001}
    scenes = [s for v in specs for s in v.scenes]
    assert {(s.colour, s.shape) for s in scenes} == {(c, s) for c in COLOURS for s in SHAPES}
    assert min(s.duration_s for s in scenes) < 2.5 and max(s.duration_s for s in scenes) > 14
    assert any(v.noise_std > 6 for v in specs) and any(v.noise_std == 0 for v in specs)
    for v in specs:
        assert 4 / 3 - 0.01 <= v.width / v.height <= 16 / 9 + 0.02
        for a, b in zip(v.scenes, v.scenes[1:]):
            assert a.label != b.label
        for s in v.scenes:
            n = s.duration_s * spec.fps_fraction(v.fps)
            assert abs(n - round(n)) < 1e-6  # whole frames


def test_heldout_flags():
    rng = np.random.default_rng(1)
    for _ in range(200):
        train = archive.random_video_spec(rng, exclude_heldout=True)
        assert not any(is_heldout(s.colour, s.shape) for s in train.scenes)
        zero = archive.random_video_spec(rng, only_heldout=True)
        assert all(is_heldout(s.colour, s.shape) for s in zero.scenes)
    with pytest.raises(ValueError):
        archive.random_video_spec(rng, exclude_heldout=True, only_heldout=True)


def test_spec_validation():
    with pytest.raises(ValueError):
        SceneSpec("red", "circle", 1.0)  # scenes are 2-15 s
    with pytest.raises(ValueError):
        SceneSpec("red", "circle", 2.0, vx=0.4, vy=0.4)  # faster than half a width per second
    with pytest.raises(ValueError):
        SceneSpec("red", "circle", 2.0, size_frac=0.5)
    ok = SceneSpec("red", "circle", 2.0)
    with pytest.raises(ValueError):
        VideoSpec([ok, ok])  # consecutive scenes must differ
    with pytest.raises(ValueError):
        VideoSpec([ok], 1920, 1080)
    with pytest.raises(ValueError):
        VideoSpec([ok], 320, 240, fps=5)
    with pytest.raises(ValueError):
        VideoSpec([ok], container="mov")
    assert spec.fps_fraction(29.97) == Fraction(30000, 1001)


def _synth(out: Path, seed: int, **kw) -> dict:
    return archive.synthesize_archive(out, 4, seed, n_scenes=2, scene_len=(2, 3), max_size=320, **kw)


def test_synthesize_archive_is_deterministic(tmp_path):
    a = _synth(tmp_path / "a", 11)
    b = _synth(tmp_path / "b", 11)
    text_a = (tmp_path / "a" / "manifest.json").read_bytes()
    assert text_a == (tmp_path / "b" / "manifest.json").read_bytes()
    assert json.loads(text_a) == a == b
    assert a["spec"] == "shapes-world v1" and a["seed"] == 11
    for entry in a["videos"]:
        assert entry["path"].startswith("videos/") and entry["width"] <= 320
        frames = [
            decord.VideoReader(str(tmp_path / d / entry["path"])).get_batch([0, entry["n_frames"] - 1]).asnumpy()
            for d in ("a", "b")
        ]
        assert np.array_equal(*frames)
        assert (tmp_path / "a" / entry["path"]).read_bytes() == (tmp_path / "b" / entry["path"]).read_bytes()
    c = _synth(tmp_path / "c", 12)
    assert c["videos"] != a["videos"]


def test_synthesize_archive_heldout_only(tmp_path):
    m = archive.synthesize_archive(
        tmp_path, 2, 3, only_heldout=True, scene_len=(2, 2.5), max_size=214, formats=("mkv",)
    )
    assert all(v["container"] == "mkv" for v in m["videos"])
    assert all(is_heldout(s["colour"], s["shape"]) for v in m["videos"] for s in v["scenes"])
    assert all((tmp_path / v["path"]).is_file() for v in m["videos"])


def test_manifest_is_read_in_one_place_with_a_clear_error(tmp_path):
    made = archive.synthesize_archive(tmp_path / "a", 2, 4, n_scenes=2, scene_len=(2, 2.5), max_size=214,
                                      formats=("mp4",))
    for source in (tmp_path / "a", tmp_path / "a" / "manifest.json"):
        root, read = manifest.read_manifest(source)
        assert root == tmp_path / "a" and read == made
    _, videos = manifest.load_manifest(tmp_path / "a")
    assert [v["abspath"] for v in videos] == [str((tmp_path / "a" / v["path"]).resolve()) for v in made["videos"]]
    scenes = manifest.manifest_scenes(tmp_path / "a")
    assert len(scenes) == 4 and scenes[1]["path"] == videos[0]["abspath"]
    assert (scenes[1]["start"], scenes[1]["end"]) == (made["videos"][0]["scenes"][1]["start"],
                                                      made["videos"][0]["scenes"][1]["end"])
    with pytest.raises(InputError, match="No shapes-world manifest at"):
        manifest.read_manifest(tmp_path / "missing")
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="bad.json is not a shapes-world manifest"):
        manifest.read_manifest(tmp_path / "bad.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(InputError, match="broken.json is not a readable manifest"):
        manifest.read_manifest(tmp_path / "broken.json")
