"""Tag names from zero-shot CLIP classification of tag crops.

The model is a tiny random CLIP built from config, with a byte-level CLIPTokenizer made from
a vocabulary written here and a 32 px image processor; all three are saved to a folder and
loaded back by `ClipNamer(model_id=folder)`, the same path a hub id takes, with no download.
Marks come from the real marker on a noise image (so every crop differs), with a small
mask inside a large one (so the large tag's residual has a hole) and a mask in the corner
(so padding is clipped). Expected answers are recomputed here with the model's own forward
pass, from crops cut with this file's own arithmetic.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from som.data.clip_namer import CLIP_MEAN_RGB, SOURCE_CLIP, ClipNamer, ClipTagName, coco_labels, load_labels
from som.data.naming import TagName, TagNames
from som.mark import MarkOptions, mark_image, rle
from som.segment.mask import Mask
from tests.helpers.tiny_clip import build_tiny_clip

HEIGHT, WIDTH = 96, 128
LABELS = ["cat", "dog", "traffic light", "person", "cup"]
# (x0, y0, x1, y1) end-exclusive; the second sits inside the first; the last touches the corner.
BOXES = [(20, 10, 90, 80), (40, 30, 60, 50), (0, 0, 16, 12), (100, 60, 128, 96), (95, 5, 120, 40)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="module")
def scene() -> tuple[np.ndarray, list[dict]]:
    image = np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    masks = []
    for x0, y0, x1, y1 in BOXES:
        full = np.zeros((HEIGHT, WIDTH), bool)
        full[y0:y1, x0:x1] = True
        masks.append(Mask.from_full(full))
    marks = mark_image(image, masks, MarkOptions(min_tag_area=50)).marks
    assert len(marks) == len(BOXES)
    return image, marks


@pytest.fixture(scope="module")
def namer(model_dir) -> ClipNamer:
    return ClipNamer(model_id=model_dir, labels=LABELS, device="cpu", batch_size=2)


def expected_crop(image: np.ndarray, bbox, padding: float) -> np.ndarray:
    x, y, w, h = bbox
    x0, x1 = max(math.floor(x - padding * w), 0), min(math.ceil(x + w + padding * w), image.shape[1])
    y0, y1 = max(math.floor(y - padding * h), 0), min(math.ceil(y + h + padding * h), image.shape[0])
    return image[y0:y1, x0:x1]


def reference_top1(namer: ClipNamer, crop: np.ndarray, labels: list[str]) -> tuple[str, float]:
    """Top-1 label and probability from CLIPModel's own forward pass (logits_per_image)."""
    inputs = namer.processor(
        text=[f"a photo of a {s}." for s in labels], images=[crop], return_tensors="pt", padding=True
    )
    with torch.no_grad():
        probs = namer.model(**inputs).logits_per_image.softmax(dim=-1)[0]
    k = int(probs.argmax())
    return labels[k], float(probs[k])


def test_names_in_tag_order_match_the_models_own_softmax(namer, scene):
    image, marks = scene
    names = namer.name_tags(image, marks)
    assert [n.tag for n in names] == [m["id"] for m in marks]
    assert [n.label for n in names] == [m["label"] for m in marks]
    for name, mark in zip(names, marks, strict=False):
        assert isinstance(name, TagName) and isinstance(name, ClipTagName)
        assert name.source == SOURCE_CLIP and name.labeled
        assert name.name in LABELS
        label, prob = reference_top1(namer, expected_crop(image, mark["bbox"], 0.1), LABELS)
        assert name.name == label
        assert name.probability == pytest.approx(prob, abs=1e-5)
        assert 1 / len(LABELS) <= name.probability <= 1


def test_deterministic_and_independent_of_batch_size(namer, model_dir, scene):
    image, marks = scene
    first = namer.name_tags(image, marks)
    assert namer.name_tags(image, marks) == first
    other = ClipNamer(model_id=model_dir, labels=LABELS, device="cpu", batch_size=32)
    again = other.name_tags(image, marks)
    assert [n.name for n in again] == [n.name for n in first]
    assert [n.probability for n in again] == pytest.approx([n.probability for n in first], abs=1e-5)


def test_text_embeddings_are_computed_once(model_dir, scene):
    image, marks = scene
    namer = ClipNamer(model_id=model_dir, labels=LABELS, device="cpu", batch_size=2)
    calls = []
    original = namer.model.get_text_features

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    namer.model.get_text_features = counting
    namer.name_tags(image, marks)
    assert len(calls) == math.ceil(len(LABELS) / 2)  # one call per prompt batch
    namer.name_tags(image, marks[:2])
    namer.name_tags(image, marks)
    assert len(calls) == math.ceil(len(LABELS) / 2)


def test_crops_are_padded_and_clipped_to_the_image(namer, scene):
    image, marks = scene
    crops = namer.crops(image, marks)
    for crop, mark in zip(crops, marks, strict=False):
        np.testing.assert_array_equal(crop, expected_crop(image, mark["bbox"], 0.1))
    corner = next(i for i, m in enumerate(marks) if m["bbox"][:2] == [0, 0])
    x, y, w, h = marks[corner]["bbox"]
    assert crops[corner].shape[:2] == (math.ceil(h * 1.1), math.ceil(w * 1.1))  # padded only right/below
    edge = next(i for i, m in enumerate(marks) if m["bbox"][0] + m["bbox"][2] == WIDTH)
    x, y, w, h = marks[edge]["bbox"]
    assert crops[edge].shape[1] == WIDTH - math.floor(x - 0.1 * w)


def test_masked_background_fills_pixels_outside_the_residual(model_dir, scene):
    image, marks = scene
    namer = ClipNamer(model_id=model_dir, labels=LABELS, device="cpu", mask_background=True, crop_padding=0.2)
    big = next(i for i, m in enumerate(marks) if m["bbox"] == [20, 10, 70, 70])  # has the small box as a hole
    for crop, mark in zip(namer.crops(image, marks), marks, strict=False):
        x, y, w, h = mark["bbox"]
        x0, y0 = max(math.floor(x - 0.2 * w), 0), max(math.floor(y - 0.2 * h), 0)
        plain = expected_crop(image, mark["bbox"], 0.2)
        inside = rle.decode(mark["segmentation"])[y0 : y0 + plain.shape[0], x0 : x0 + plain.shape[1]]
        assert inside.any() and (~inside).any()
        np.testing.assert_array_equal(crop[inside], plain[inside])
        assert (crop[~inside] == CLIP_MEAN_RGB).all()
    hole = namer.crops(image, [marks[big]])[0]
    # The small box (40..60, 30..50) in crop coordinates of the big tag (origin 6, -4 -> 0).
    assert (hole[30:50, 40 - 6 : 60 - 6] == CLIP_MEAN_RGB).all()
    names = namer.name_tags(image, marks)
    for name, crop in zip(names, namer.crops(image, marks), strict=False):
        label, prob = reference_top1(namer, crop, LABELS)
        assert (name.name, name.probability) == (label, pytest.approx(prob, abs=1e-5))


def test_labels_from_a_file_and_coco_by_default(model_dir, scene, tmp_path, monkeypatch):
    image, marks = scene
    path = tmp_path / "labels.txt"
    path.write_text("# vocabulary\nzebra\n\n  wine glass \nkite\n", "utf-8")
    assert load_labels(path) == ["zebra", "wine glass", "kite"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a local folder still loads
    namer = ClipNamer(model_id=model_dir, labels=str(path), device="cpu")
    assert namer.labels == ["zebra", "wine glass", "kite"]
    assert {n.name for n in namer.name_tags(image, marks)} <= {"zebra", "wine glass", "kite"}

    coco = coco_labels()
    assert len(coco) == 80 and len(set(coco)) == 80
    assert coco[0] == "person" and coco[-1] == "toothbrush" and "dining table" in coco
    assert ClipNamer(model_id=model_dir, device="cpu").labels == coco

    path.write_text("cat\ndog\ncat\n", "utf-8")
    with pytest.raises(ValueError, match="duplicate"):
        load_labels(path)


def test_whole_marks_json_and_no_tags(namer, scene):
    image, marks = scene
    names = namer.name_marks(image, {"image": "a.jpg", "sha256": "abc", "marks": marks})
    assert isinstance(names, TagNames) and names.source_counts() == {SOURCE_CLIP: len(marks)}
    assert namer.name_tags(image, []) == []


@pytest.mark.gpu
def test_cuda_bf16_agrees_with_cpu(model_dir, namer, scene):
    image, marks = scene
    gpu = ClipNamer(model_id=model_dir, labels=LABELS, device="cuda", batch_size=2)
    assert gpu.model.dtype == torch.bfloat16 and gpu.model.device.type == "cuda"
    crops = namer.crops(image, marks)
    np.testing.assert_allclose(gpu.probabilities(crops), namer.probabilities(crops), atol=0.03)
    names = gpu.name_tags(image, marks)
    assert [n.tag for n in names] == [m["id"] for m in marks]
    assert all(n.name in LABELS and 0 < n.probability <= 1 for n in names)
