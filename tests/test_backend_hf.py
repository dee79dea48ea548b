"""The transformers backend in-process: bundles and single directories, dtypes, labels.

These use a tiny model with random weights (built by the test in a second), because they
check the loading and decoding code, not what a model learned; the demo model's quality
is checked over HTTP in test_node_contract.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import build_tiny_bundle

from geogate.node.backends import load_model
from geogate.node.backends.base import LoadSpec

PAIRS = [("浙江省杭州市余杭区文一西路969号", "杭州余杭文一西路969号"), ("上海黄浦南京东路", "北京海淀中关村大街")]
TEXTS = ["浙江省杭州市余杭区文一西路969号", "上海市"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bundle(tmp_path_factory.mktemp("tiny") / "bundle")


def _scores(spec: LoadSpec) -> list[float]:
    model = load_model(spec, "hf")
    assert model.similarity is not None
    return [r.score for r in model.similarity.run(model.similarity.prepare(PAIRS))]


def test_bundle_serves_both_tasks_with_identity(bundle: Path) -> None:
    model = load_model(LoadSpec(model=str(bundle)), "hf")
    assert model.tasks == ("similarity", "parse")
    assert model.model_version == "tiny_random-test-20261123" and len(model.checksum) == 64
    assert model.demo is False and model.backend == "hf" and model.device == "cpu"
    assert model.parse is not None
    for text, result in zip(TEXTS, model.parse.run(model.parse.prepare(TEXTS))):
        for el in result.elements:
            assert text[el.start : el.end] == el.text and el.end > el.start


def test_batched_equals_one_by_one(bundle: Path) -> None:
    """Padding to the batch's longest must not change any item's result."""
    model = load_model(LoadSpec(model=str(bundle)), "hf")
    runner = model.similarity
    assert runner is not None
    together = runner.run(runner.prepare(PAIRS))
    alone = [runner.run(runner.prepare([p]))[0] for p in PAIRS]
    for a, b in zip(together, alone):
        assert a.label == b.label and a.score == pytest.approx(b.score, abs=1e-5)


@pytest.mark.parametrize("dtype", ["bf16", "fp16", "int8"])
def test_reduced_precision_stays_close_to_fp32(bundle: Path, dtype: str) -> None:
    reference = _scores(LoadSpec(model=str(bundle)))
    reduced = _scores(LoadSpec(model=str(bundle), dtype=dtype))
    assert reduced == pytest.approx(reference, abs=0.05)


def test_single_model_directory_serves_its_task(tmp_path: Path) -> None:
    bundle = build_tiny_bundle(tmp_path / "b", tasks=("parse",), version=None)
    model = load_model(LoadSpec(model=str(bundle / "parse")), "hf")
    assert model.tasks == ("parse",)
    assert model.model_version.startswith("parse-local-")  # derived: no metadata given


def test_unnamed_three_labels_are_taken_in_mgeo_order(tmp_path: Path) -> None:
    bundle = build_tiny_bundle(tmp_path / "b", tasks=("similarity",), labels=["LABEL_0", "LABEL_1", "LABEL_2"])
    model = load_model(LoadSpec(model=str(bundle)), "hf")
    assert model.similarity is not None
    assert {r.label for r in model.similarity.run(model.similarity.prepare(PAIRS))} <= {
        "not_match", "partial_match", "exact_match"}


def test_clear_errors(tmp_path: Path, bundle: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not one"):
        load_model(LoadSpec(model=str(tmp_path / "missing")), "hf")
    with pytest.raises(ValueError, match="CPU only"):
        load_model(LoadSpec(model=str(bundle), device="cuda", dtype="int8"), "hf")
    bad = build_tiny_bundle(tmp_path / "bad", tasks=("similarity",), labels=["yes", "no", "maybe"])
    with pytest.raises(ValueError, match="exact_match"):
        load_model(LoadSpec(model=str(bad)), "hf")
    empty = tmp_path / "empty"
    shutil.copytree(bundle, empty)
    for weights in empty.rglob("*.safetensors"):
        weights.unlink()
    with pytest.raises(FileNotFoundError, match="no weight files"):
        load_model(LoadSpec(model=str(empty)), "hf")


def test_encoder_gives_the_tensors_transformers_gives() -> None:
    """The backend tokenizes through the Rust tokenizer directly (for speed); it must
    agree with transformers' own call, truncation and padding included."""
    import random

    import torch
    from transformers import AutoTokenizer

    from geogate.node.backends.transformers_backend import Encoder
    from geogate.node.demo import DEMO_MODEL_DIR, synth

    path = DEMO_MODEL_DIR / "similarity"
    reference = AutoTokenizer.from_pretrained(path)
    encode = Encoder(AutoTokenizer.from_pretrained(path), max_len=24)  # short: truncation happens
    rng = random.Random(5)
    pairs = [synth.make_pair(rng)[:2] for _ in range(40)] + [("5F", "B座 3-2-501")]
    texts = [synth.make_address(rng)[0] for _ in range(40)] + ["No.12 x"]
    for inputs, second in ((pairs, True), (texts, False)):
        first_side = [p[0] for p in inputs] if second else inputs
        expected = reference(
            first_side, [p[1] for p in inputs] if second else None,
            padding="longest", truncation="longest_first", max_length=24, return_tensors="pt",
            return_offsets_mapping=True,
        )
        encodings, got = encode(inputs)
        assert set(got) == {"input_ids", "token_type_ids", "attention_mask"}
        for name, tensor in got.items():
            assert torch.equal(tensor, expected[name]), name
        for i, e in enumerate(encodings):
            assert e.word_ids == expected.word_ids(i)[: len(e.ids)]
            assert [tuple(o) for o in expected["offset_mapping"][i][: len(e.ids)].tolist()] == e.offsets
