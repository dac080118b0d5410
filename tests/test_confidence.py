"""Calibrated confidence and an honest "no match" (pipeline/confidence*.py), through search, the
search output the CLI prints, classification, the stored calibration and the cached default bank.

Semantic claims use the bundled shapes-tiny on videos rendered here (an archive that shows six of
the 28 labels); random ViT-B-32 weights check that any open_clip model gets a calibration.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from vidsift.pipeline.config import IndexConfig
from vidsift.pipeline.confidence import CONTENT_FREE_PROMPTS, Calibration, load_calibration
from vidsift.pipeline.confidence_bank import BankCache, RivalBank, default_bank
from vidsift.pipeline.confidence_fit import fit_calibration
from vidsift.pipeline.confidence_words import content_words
from tests.conftest import imported_names, make_video

PRESENT = [("red", "circle"), ("blue", "square"), ("yellow", "triangle"), ("white", "star"), ("purple", "circle"),
           ("orange", "square")]
ABSENT = ["a green circle", "a red square", "a blue star", "a purple star", "a yellow circle", "an orange triangle",
          "a white square", "a green triangle"]
OUT_OF_WORLD = ["an airplane", "a bowl of soup", "xq zzv kk", "the of and", "a photo of the", "a dog on a beach"]


def label(colour: str, shape: str) -> str:
    return f"{'an' if colour[0] in 'aeiou' else 'a'} {colour} {shape}"


@pytest.fixture(scope="module")
def tiny():
    from vidsift.models.encoder import ClipEncoder
    from vidsift.models.spec import resolve_spec

    return ClipEncoder.from_spec(resolve_spec("shapes-tiny"))


@pytest.fixture(scope="module")
def archive(tmp_path_factory, tiny):
    """Four one-scene videos, one of two scenes (purple circle, then orange square); a green star
    clip outside the archive."""
    from vidsift.pipeline.indexing import index_sequential
    from vidsift.pipeline.store import VideoStore

    root = tmp_path_factory.mktemp("confidence")
    paths = []
    for i, pair in enumerate(PRESENT[:4]):
        paths.append(root / "archive" / f"{i}.mp4")
        make_video(paths[-1], fps=10, durations=(3.0,), pairs=[pair], size=(320, 240))
    paths.append(root / "archive" / "two.mp4")
    make_video(paths[-1], fps=10, durations=(3.0, 3.0), pairs=PRESENT[4:], size=(320, 240))
    make_video(root / "green-star.mp4", fps=10, durations=(3.0,), pairs=[("green", "star")], size=(320, 240))
    store = VideoStore(str(root / "db.lance"))
    report = index_sequential(store, tiny, [str(p) for p in paths], IndexConfig())
    assert report.indexed == 5 and not report.failures
    return type("Archive", (), {"root": root, "store": store, "two": str(paths[-1]),
                                "clip": str(root / "green-star.mp4")})


# ---- the rules, without a model -------------------------------------------------------------------
def test_content_words_and_which_phrases_are_rivals():
    assert content_words("a photo of a red circle") == {"red", "circle"}
    assert content_words("Red circles on a black background") == {"red", "circle", "black", "background"}
    assert content_words("the of and") == frozenset() and content_words("a video of the") == frozenset()
    bank = RivalBank(["red", "circle", "red circle", "circle red", "green circle", "green", "red circles on grass"],
                     np.eye(7, 8), "default")
    # Made only of the query's words (implied by it) or containing all of them (refining it): no rival.
    assert bank.valid_for(content_words("a red circle")).tolist() == [False, False, False, False, True, True, False]
    assert bank.valid_for(content_words("circle")).tolist() == [True, False, False, False, False, True, False]


def test_confidence_is_the_query_against_content_free_prompts_and_the_best_rival():
    e = np.eye(4, dtype=np.float32)
    calibration = Calibration(logit_scale=50.0, content_free=e[[3]],
                              bank=RivalBank(["green circle"], e[[1]], "default"))
    segments = np.array([[0.9, 0.1, 0.0, 0.3], [0.3, 0.9, 0.0, 0.3], [0.3, 0.0, 0.0, 0.95]], dtype=np.float32)
    segments /= np.linalg.norm(segments, axis=1, keepdims=True)
    conf = calibration.confidences("a red circle", e[0], segments)
    assert conf[0] > 0.99          # the query beats both alternatives by far
    assert conf[1] < 0.01          # the rival describes the segment better: a near miss
    assert conf[2] < 0.01          # "nothing in particular" describes it better
    q, c, r = segments[0] @ e[0], segments[0] @ e[3], segments[0] @ e[1]
    assert conf[0] == pytest.approx(1 / (1 + np.exp(50 * (c - q)) + np.exp(50 * (r - q))))
    # A rival made of the query's own words does not count; a text without content words matches nothing.
    assert calibration.confidences("a green circle", e[1], segments[1:2])[0] > 0.99
    assert calibration.confidences("the of", e[0], segments).tolist() == [0.0, 0.0, 0.0]
    matrix = calibration.confidence_matrix(["a red circle", "a green circle"], e[[0, 1]], segments)
    assert matrix[0] == pytest.approx(conf) and matrix[1, 1] > 0.99


def test_with_prompt_ensembles_query_and_rivals_are_weighed_as_their_ensembles():
    """The rules with prompt ensembles: a search query is weighed against the rivals' ensembles, not
    their plain phrases; under "ensembles" the query is weighed as what ``embed_query`` gives (its
    prompt ensemble), not as the plain vector the search ranked with; labels meet the rivals'
    ensembles only under "ensembles"."""
    e = np.eye(4, dtype=np.float32)
    bank = RivalBank(["green circle"], e[[1]], "default", ensembles=e[[2]])
    segment = np.array([[0.5, 0.9, 0.6, 0.0]], dtype=np.float32)
    segment /= np.linalg.norm(segment)
    plain = Calibration(logit_scale=50.0, content_free=e[[3]], bank=RivalBank(["green circle"], e[[1]], "default"))
    assert plain.confidences("a red circle", e[0], segment)[0] < 0.01          # loses to "green circle"
    ensembles = Calibration(logit_scale=100.0, content_free=e[[3]], bank=bank, embed_query=lambda text: e[0])
    assert ensembles.confidences("a red circle", e[0], segment)[0] < 0.01     # loses to the rival's ensemble
    ensembles.embed_query = lambda text: (e[0] + e[1]) / np.sqrt(2)           # the query's ensemble
    assert ensembles.confidences("a red circle", e[0], segment)[0] > 0.99     # cosine 0.83 against 0.50
    assert (ensembles.rivals(True) == e[[2]]).all() and (plain.rivals(True) == e[[1]]).all()
    assert (ensembles.rivals(False) == e[[1]]).all()                         # "ensemble-rivals": labels plain
    ensembles.ensembles_for_labels = True
    assert (ensembles.rivals(False) == e[[2]]).all()


def test_a_label_set_is_shown_when_its_labels_together_beat_what_is_outside_it():
    """Two labels the model confuses on a segment each lose to the other's phrase (each one's
    confidence < 1/2), yet the segment shows one of the set; a rival outside the set still wins."""
    e = np.eye(6, dtype=np.float32)
    bank = RivalBank(["blue triangle", "blue star", "purple orange"], e[[2, 3, 4]], "default")
    calibration = Calibration(logit_scale=50.0, content_free=e[[5]], bank=bank)
    texts, vectors = ["a blue triangle", "a blue star"], e[[0, 1]]
    segments = np.array([[0.70, 0.69, 0.75, 0.72, 0.0, 0.1],    # the two labels, confused
                         [0.30, 0.30, 0.30, 0.30, 0.9, 0.1],    # the outside rival describes it
                         [0.05, 0.05, 0.05, 0.05, 0.0, 0.99]], dtype=np.float32)  # nothing in particular
    segments /= np.linalg.norm(segments, axis=1, keepdims=True)
    per_label = calibration.confidence_matrix(texts, vectors, segments)
    assert (per_label < 0.5).all()
    both = calibration.set_confidences(texts, vectors, segments)
    assert both[0] > 0.99 and both[1] < 0.01 and both[2] < 0.01
    # one label alone: its own confidence (the other label's phrase is then a rival)
    assert calibration.set_confidences(texts[:1], vectors[:1], segments) == pytest.approx(per_label[0])
    assert calibration.set_confidences(["the of"], vectors[:1], segments).tolist() == [0.0, 0.0, 0.0]


def test_open_set_decides_only_whether_to_answer_never_which_label():
    from vidsift.pipeline.classify import open_set_answer

    labels = ["a", "b", "c"]
    clip = np.array([0.5, 0.3, 0.2])                          # CLIP's top-1 over the clip: "a"
    segs = [np.array([0.1, 0.8, 0.1]), np.array([0.2, 0.2, 0.6])]
    conf = np.array([[0.1, 0.2], [0.3, 0.1], [0.2, 0.9]])     # only "c" matches, in the second segment
    label, answers = open_set_answer(labels, clip, segs, conf)
    assert label == "a" and answers == [None, "c"]            # top-1 as before, not the matching label
    label, answers = open_set_answer(labels, clip, segs, np.full((3, 2), 0.4))
    assert label is None and answers == [None, None]
    # the set's confidence per segment, when given, decides instead
    label, answers = open_set_answer(labels, clip, segs, np.full((3, 2), 0.4), np.array([0.7, 0.2]))
    assert label == "a" and answers == ["b", None]


# ---- shapes-tiny: search ----------------------------------------------------------------------------
def test_present_labels_match_and_absent_ones_answer_no_match(archive, tiny):
    from vidsift.pipeline.search import search_text

    calibration = load_calibration(archive.store, tiny)
    assert calibration.source == "default" and "shapes-tiny" in calibration.describe()["note"]
    for pair in PRESENT:
        hits = search_text(archive.store, tiny, label(*pair), k=5, calibration=calibration, thumbnails=False)
        assert hits[0].match is True and hits[0].confidence > 0.5, (pair, hits[0])
        assert sum(h.match for h in hits) == 1, (pair, [(h.path, h.confidence) for h in hits])  # only its scene
    for query in ABSENT:
        hits = search_text(archive.store, tiny, query, k=5, calibration=calibration, thumbnails=False)
        assert len(hits) == 5 and not any(h.match for h in hits), (query, [(h.path, h.confidence) for h in hits])
        assert all(0.0 <= h.confidence <= 0.5 for h in hits)


def test_out_of_world_gibberish_and_stop_word_queries_answer_no_match(archive, tiny):
    from vidsift.pipeline.search import search_text

    for query in OUT_OF_WORLD:
        hits = search_text(archive.store, tiny, query, k=5, thumbnails=False)
        assert hits and not any(h.match for h in hits), (query, [h.confidence for h in hits])
    assert all(h.confidence == 0.0 for h in search_text(archive.store, tiny, "the of and", k=3, thumbnails=False))


def test_search_output_says_no_match_marks_weak_hits_and_keeps_the_existing_fields(archive, tiny, tmp_path):
    from vidsift.pipeline.search import search_report, search_text

    calibration = load_calibration(archive.store, tiny)
    hits = search_text(archive.store, tiny, "a green circle", k=3, calibration=calibration)
    payload, human = search_report("a green circle", tiny.model_key, hits, calibration)
    assert payload["matches"] == 0 and payload["query"] == "a green circle" and payload["model"] == tiny.model_key
    assert payload["calibration"]["source"] == "default"
    for row in payload["results"]:
        assert {"rank", "score", "path", "start", "end", "video_id", "segment_index", "n_frames", "tags"} <= set(row)
        assert row["match"] is False and isinstance(row["confidence"], float) and 0 <= row["confidence"] <= 1
    json.dumps(payload)  # what --json prints
    lines = human.splitlines()
    assert lines[0].startswith('no match for "a green circle"')
    assert [line.split()[3] for line in lines[1:4]] == ["weak"] * 3 and "calibration" in lines[-1]
    only, only_human = search_report("a green circle", tiny.model_key, hits, calibration, matches_only=True)
    assert only["results"] == [] and only["matches"] == 0
    assert only_human.splitlines()[0] == 'no match for "a green circle"' and "weak" not in only_human

    hits = search_text(archive.store, tiny, "a red circle", k=3, calibration=calibration)
    payload, human = search_report("a red circle", tiny.model_key, hits, calibration, thumbnail_dir=str(tmp_path))
    assert payload["matches"] == 1 and payload["results"][0]["match"] is True
    assert human.splitlines()[0].split()[3] == "match" and "no match" not in human
    assert all(row["thumbnail_file"].endswith(".jpg") for row in payload["results"])
    only, only_human = search_report("a red circle", tiny.model_key, hits, calibration, matches_only=True)
    assert [r["rank"] for r in only["results"]] == [1] and len(only_human.splitlines()) == 2


# ---- shapes-tiny: classification ------------------------------------------------------------------
def test_classify_answers_none_when_no_label_fits_and_both_labels_of_a_two_scene_clip(archive, tiny):
    from vidsift.pipeline.classify import ZeroShotClassifier, classify_clip, format_classification
    from vidsift.pipeline.shapes.world import all_labels

    calibration = load_calibration(archive.store, tiny)
    config = IndexConfig()
    result = classify_clip(tiny, archive.clip, ZeroShotClassifier(tiny, ["a red circle", "a blue square"]), config,
                           per_segment=True, calibration=calibration)
    out = result.to_dict()
    assert out["label"] is None and out["matches"] == [], out
    assert [row["match"] for row in out["labels"]] == [False, False]
    assert sum(row["probability"] for row in out["labels"]) == pytest.approx(1.0, abs=1e-4)  # as before
    assert out["segments"][0]["label"] is None and "none of these labels" in format_classification(result)
    everything = classify_clip(tiny, archive.clip, ZeroShotClassifier(tiny, all_labels()), config,
                               calibration=calibration)
    assert everything.label == "a green star" and everything.labels[0]["match"] is True
    both = classify_clip(tiny, archive.two, ZeroShotClassifier(tiny, all_labels()), config, per_segment=True,
                         calibration=calibration)
    assert {m["label"] for m in both.matches} == {"a purple circle", "an orange square"}, both.matches
    # The top-level label is CLIP's top-1 over the whole clip, as before open-set (for two scenes, the
    # blend of both); the scenes' own labels are in matches and in each segment's answer.
    assert both.label == both.labels[0]["label"]
    assert [seg["label"] for seg in both.segments] == ["a purple circle", "an orange square"]
    # Without a calibration the output is as it was: no label verdict, no confidence.
    plain = classify_clip(tiny, archive.clip, ZeroShotClassifier(tiny, ["a red circle", "a blue square"]), config)
    assert "confidence" not in plain.labels[0] and "matches" not in plain.to_dict()


# ---- the stored calibration -----------------------------------------------------------------------
def test_a_calibration_fitted_on_the_archive_is_stored_and_used(archive, tiny, tmp_path):
    import shutil

    from vidsift.pipeline.search import search_text
    from vidsift.pipeline.store import VideoStore

    shutil.copytree(archive.root / "db.lance", tmp_path / "db.lance")  # the other tests keep the default
    store = VideoStore(str(tmp_path / "db.lance"))
    report = fit_calibration(store, tiny, seed=1)
    assert report["phrases"] > 0 and report["segments"] == 6 and report["model"] == tiny.model_key
    calibration = load_calibration(store, tiny)
    assert calibration.source == "fitted" and calibration.describe()["segments"] == 6
    assert load_calibration(archive.store, tiny).source == "default"
    words = {w for phrase in calibration.bank.phrases for w in phrase.split()}
    # Words the model does not react to ("background", "moving") describe nothing.
    assert words and not words & {"background", "moving", "single", "around", "against"}
    assert words <= {"red", "green", "blue", "yellow", "purple", "orange", "white", "circle", "square", "triangle",
                     "star"}
    for query, present in (("a red circle", True), ("an orange square", True), ("a red square", False),
                           ("a purple star", False), ("an airplane", False)):
        hits = search_text(store, tiny, query, k=5, calibration=calibration, thumbnails=False)
        assert any(h.match for h in hits) is present, (query, [h.confidence for h in hits])


def test_any_open_clip_model_gets_a_calibration(tmp_path, random_vit):
    """Plumbing with random ViT-B-32 weights (the confidences mean nothing): without a fitted
    calibration an English-reading model compares with content-free prompts only and says so; a
    fitted one reads English words and is stored per model."""
    from vidsift.pipeline.indexing import index_sequential
    from vidsift.pipeline.search import search_text
    from vidsift.pipeline.store import VideoStore

    make_video(tmp_path / "v.mp4", fps=10, durations=(2.0, 2.0))
    store = VideoStore(str(tmp_path / "db"))
    assert index_sequential(store, random_vit, [str(tmp_path / "v.mp4")], IndexConfig()).indexed == 1
    calibration = load_calibration(store, random_vit)
    assert calibration.source == "none" and "content-free prompts only" in calibration.describe()["note"]
    assert calibration.content_free.shape == (len(CONTENT_FREE_PROMPTS), random_vit.embed_dim)
    hits = search_text(store, random_vit, "a red circle", k=2, calibration=calibration, thumbnails=False)
    assert all(0.0 <= h.confidence <= 1.0 and h.match is (h.confidence > 0.5) for h in hits)
    report = fit_calibration(store, random_vit, vocabulary_size=12)
    assert report["vocabulary"].startswith("the 12 most frequent English words") and report["phrases"] > 0
    fitted = load_calibration(store, random_vit)
    assert fitted.source == "fitted" and fitted.bank.vectors.shape[1] == random_vit.embed_dim
    assert all(w.isalpha() for phrase in fitted.bank.phrases for w in phrase.split())


def test_shapes_tiny_weighs_a_query_against_the_descriptions_of_its_world(tiny, tmp_path):
    """A closed-world model's rivals are what its world can show (every colour-shape pair), not
    pairs of its caption words: "single green" or "green black" fit a green square as well as "a
    green square" does (compatible, not an alternative) and would make true hits look weak."""
    from vidsift.pipeline.shapes.world import COLOURS, SHAPES

    bank = default_bank(tiny, BankCache(tmp_path / "banks"))
    assert bank.source == "default" and "descriptions" in bank.info["vocabulary"]
    assert sorted(bank.phrases) == sorted(f"{c} {s}" for c in COLOURS for s in SHAPES)
    # A green square's own label and its shape alone are not rivals of "a green square"; other pairs are.
    valid = dict(zip(bank.phrases, bank.valid_for(content_words("a green square"))))
    assert not valid["green square"] and valid["green circle"] and valid["blue square"]
    # Other weights under the same name (a checkpoint) read English: no closed world, no default rivals.
    from vidsift.pipeline.confidence_words import world_descriptions
    from vidsift.models.spec import ModelSpec

    assert world_descriptions(ModelSpec("shapes-tiny", "/some/checkpoint.safetensors")) is None
    assert world_descriptions(ModelSpec("ViT-B-32", "laion2b_s34b_b79k")) is None


def test_confidence_knows_no_synthetic_world_and_shapes_tiny_ships_its_own():
    """The product's confidence code imports nothing of the shapes world: a closed world is data that
    ships beside the bundled model (models/worlds/), and shapes-tiny's file is what the world's spec
    gives (regenerate it with `python -m vidsift.pipeline.shapes.closed_world` when the spec changes)."""
    from vidsift.models.registry import WORLDS_DIR, bundled
    from vidsift.pipeline import confidence, confidence_bank, confidence_fit, confidence_words
    from vidsift.pipeline.shapes.closed_world import closed_world_record

    for module in (confidence, confidence_bank, confidence_fit, confidence_words):
        imported = imported_names(module)
        assert not any("shapes" in name or "synth" in name for name in imported), module.__name__
    model = bundled("shapes-tiny")
    assert json.loads((WORLDS_DIR / model.world_file).read_text()) == closed_world_record()
    world = model.closed_world()
    assert len(world.descriptions) == 28 and "purple star" in world.descriptions
    assert {"circle", "star", "purple", "background"} <= set(world.words) and "car" not in world.words


# ---- the default bank, embedded once per model --------------------------------------------------
class CountingEncoder:
    """The encoder, counting the texts it embeds."""

    def __init__(self, inner):
        self.inner, self.texts = inner, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode_texts(self, texts):
        self.texts += len(texts)
        return self.inner.encode_texts(texts)


def test_the_default_bank_is_embedded_once_per_model_and_read_back_from_the_cache(tiny, tmp_path):
    counting, cache = CountingEncoder(tiny), BankCache(tmp_path / "banks")
    first = default_bank(counting, cache)
    assert first.source == "default" and counting.texts >= len(first.phrases) > 0
    files = list((tmp_path / "banks").glob("*.npz"))
    assert len(files) == 1
    counting.texts = 0
    again = default_bank(counting, cache)
    assert counting.texts == 0                                   # nothing embedded again
    assert again.phrases == first.phrases and np.allclose(again.vectors, first.vectors)
    assert again.source == "default" and again.info["vocabulary"] == first.info["vocabulary"]
    # Another model's weights (another spec.key) have another file; a file that does not hold what
    # its key says, or cannot be read, is not used: the bank is embedded again and the file replaced.
    assert cache.path("shapes-tiny|ckpt-0123456789ab", first.phrases) != cache.path(tiny.model_key, first.phrases)
    assert cache.load(files[0], "shapes-tiny|ckpt-0123456789ab") is None
    files[0].write_bytes(b"not a bank")
    rebuilt = default_bank(counting, cache)
    assert counting.texts > 0 and rebuilt.phrases == first.phrases
    assert cache.load(files[0], tiny.model_key) is not None
