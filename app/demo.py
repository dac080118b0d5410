"""`vidsift demo`: the whole path on the bundled model, offline, in a couple of minutes.

Renders a small shapes-world archive, indexes it with `shapes-tiny` (the in-process pipeline of
`vidsift index`), runs a few searches and a classification (each checked against the archive's
manifest), then opens the app.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from vidsift.app.app_config import AppConfig
from vidsift.models.encoder import ClipEncoder
from vidsift.models.spec import resolve_spec
from vidsift.pipeline.classify import ZeroShotClassifier, classify_clip
from vidsift.pipeline.config import IndexConfig
from vidsift.pipeline.local_run import run_local_job
from vidsift.pipeline.search import search_text
from vidsift.pipeline.shapes.archive import synthesize_archive
from vidsift.pipeline.shapes.manifest import load_manifest
from vidsift.pipeline.shapes.world import all_labels, is_heldout, parse_label
from vidsift.pipeline.storage import list_inputs
from vidsift.pipeline.store import VideoStore


def demo_queries(manifest: list[dict], n: int = 4) -> list[str]:
    """The archive's most frequent labels, then its held-out pairs (never seen in training), each
    phrased freely once to show that queries need not match the label exactly."""
    counts = Counter(s["label"] for v in manifest for s in v["scenes"])
    seen = [label for label, _ in counts.most_common() if not is_heldout(*parse_label(label))][:n]
    heldout = [label for label in counts if is_heldout(*parse_label(label))][:2]
    if seen:
        background = next(v["background"] for v in manifest if any(s["label"] == seen[-1] for s in v["scenes"]))
        seen[-1] = f"{seen[-1]} on a {background} background"
    return seen + [f"{label} (held out)" for label in heldout]


def run_demo(out: str, videos: int = 16, seed: int = 7, with_app: bool = True, port: int | None = None) -> int:
    root = Path(out)
    archive = root / "archive"
    if not (archive / "manifest.json").exists():
        print(f"1/4 rendering {videos} shapes-world videos into {archive} ...")
        synthesize_archive(archive, videos, seed, max_size=640, scene_len=(2.0, 8.0), progress=True)
    else:
        print(f"1/4 reusing the archive in {archive}")
    _, manifest = load_manifest(archive)
    truth = {v["abspath"]: v["scenes"] for v in manifest}

    spec = resolve_spec("shapes-tiny")
    db = str(root / "vidsift.lance")
    print(f"2/4 indexing with {spec.key} into {db} ...")
    report = run_local_job(VideoStore(db), spec, list_inputs(sorted(truth)), IndexConfig())
    print(f"    {report.indexed} indexed, {report.skipped} already indexed, {len(report.failures)} failed")

    encoder = ClipEncoder.from_spec(spec)
    store = VideoStore(db)
    print("3/4 searching (top 3; [ok] = the segment overlaps a scene of that label per the manifest)")
    for shown_query in demo_queries(manifest):
        query = shown_query.replace(" (held out)", "")
        print(f'  "{shown_query}"')
        for hit in search_text(store, encoder, query, k=3):
            scenes = [s for s in truth.get(hit.path, []) if s["start"] < hit.end and s["end"] > hit.start]
            shown = ", ".join(s["label"] for s in scenes)
            mark = "ok" if any(query.startswith(s["label"]) for s in scenes) else "--"
            print(f"    [{mark}] {hit.score:+.3f}  {hit.start:5.1f}-{hit.end:5.1f} s  {Path(hit.path).name}  ({shown})")

    clip = min(truth, key=lambda p: len(truth[p]))
    classifier = ZeroShotClassifier(encoder, all_labels())
    result = classify_clip(encoder, clip, classifier, IndexConfig(), top=3)
    print(f"4/4 classifying {Path(clip).name} (truth: {', '.join(s['label'] for s in truth[clip])}) "
          "over the 28 shapes-world labels:")
    for row in result.labels:
        print(f"    {row['probability']:.3f}  {row['label']}")
    if with_app:
        # lazy: gradio takes seconds to import; `vidsift demo --no-app` does without it
        from vidsift.app.web import serve

        print("opening the app (Ctrl-C to stop) ...")
        serve(AppConfig(db=db, spec=spec, allow_dirs=(str(archive),), port=port), block=True)
    return 0
