"""MGeo through ModelScope vs. the same weights converted to plain BERT.

A tiny random MGeo (both heads) is built with ModelScope's own classes, in the layout the
hub ships (configuration.json, config.json, pytorch_model.bin, vocab.txt), so everything
runs offline. The checks: ``geogate mgeo convert`` reproduces MGeo's logits with
transformers' BERT classes; the modelscope backend's answers agree with MGeo's own
logits (label order, exact-match probability, spans); the hf backend serving the
converted directory agrees with the modelscope backend; and the converter refuses an
encoder with GIS fusion layers.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.mgeo
pytest.importorskip("modelscope.pipelines", reason="needs the mgeo extra: pip install 'geogate[mgeo]'")

import torch
from modelscope.models.multi_modal.mgeo import (
    MGeoForSequenceClassification,
    MGeoForTokenClassification,
)
from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    BertConfig,
    PreTrainedTokenizerBase,
)

from geogate.node.backends import modelscope_backend
from geogate.node.backends.base import LoadedModel, LoadSpec
from geogate.node.backends.tags import tag_set
from geogate.node.mgeo_convert import ConversionError, convert
from geogate.shared.schemas import EXACT_MATCH, LABELS

TOL = 1e-4
SEQ_LEN = 64  # LoadSpec.max_seq_len for the backends; ModelScope pads every input to it
PAIRS = [
    ("浙江省杭州市余杭区文一西路969号", "杭州市余杭区文一西路969号阿里巴巴西溪园区"),
    ("北京市朝阳区望京街道", "浙江省杭州市西湖区"),
    ("上海市浦东新区张江路88号", "上海浦东张江路88号3栋"),
    ("广东省深圳市南山区", "深圳南山区科技园"),
]
ADDRESSES = [
    "浙江省杭州市余杭区文一西路969号",
    "北京市朝阳区望京街道望京小区3栋2单元401室",
    "上海浦东",
    "广东省深圳市南山区科技园路1号",
]
ELEMENT_TYPES = ["prov", "city", "district", "town", "road", "roadno", "poi", "houseno"]
# Deliberately not LABELS' order: every stage must follow the checkpoint's own mapping.
SIMILARITY_LABELS = ["partial_match", "exact_match", "not_match"]


# --- building tiny MGeo checkpoints -----------------------------------------------------


def _vocab() -> list[str]:
    chars = sorted({c for text in ADDRESSES + [t for p in PAIRS for t in p] for c in text if not c.isdigit()})
    digits = [str(d) for d in range(10)]
    # "##d" pieces so that numbers tokenize as in bert-base-chinese (9, ##6, ##9), not as [UNK]
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *digits, *[f"##{d}" for d in digits], *chars]


def _mgeo_config(labels: list[str], *, fusion_layer: int = 2) -> BertConfig:
    return BertConfig(
        vocab_size=len(_vocab()),
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=96,
        max_position_embeddings=128,
        fusion_layer=fusion_layer,
        encoder_width=48,
        gis_embedding=0,
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
    )


def _write_mgeo(directory: Path, task: str, *, fusion_layer: int = 2, seed: int = 0) -> Path:
    """A random MGeo model directory as ModelScope ships one (labels in configuration.json)."""
    labels = SIMILARITY_LABELS if task == "similarity" else tag_set(ELEMENT_TYPES)
    cls = MGeoForSequenceClassification if task == "similarity" else MGeoForTokenClassification
    torch.manual_seed(seed)
    model = cls(_mgeo_config(labels, fusion_layer=fusion_layer))
    with torch.no_grad():
        # Default init (std 0.02) gives near-uniform outputs that any two models agree on
        # within the tolerance; wide weights make the parity checks mean something.
        for param in model.parameters():
            param.normal_(0.0, 0.3)
    directory.mkdir(parents=True)
    model.config.save_pretrained(directory)
    torch.save(model.state_dict(), directory / "pytorch_model.bin")
    (directory / "vocab.txt").write_text("\n".join(_vocab()) + "\n", encoding="utf-8")
    ms_task = "sentence-similarity" if task == "similarity" else "token-classification"
    preprocessor = (
        {"type": "sen-sim-tokenizer", "first_sequence": "sentence1", "second_sequence": "sentence2"}
        if task == "similarity"
        else {"type": "token-cls-tokenizer"}
    )
    configuration = {
        "framework": "pytorch",
        "task": ms_task,
        "model": {"type": "mgeo", "label2id": {name: i for i, name in enumerate(labels)}},
        "pipeline": {"type": ms_task},
        "preprocessor": preprocessor,
    }
    (directory / "configuration.json").write_text(json.dumps(configuration, ensure_ascii=False), encoding="utf-8")
    return directory


@pytest.fixture(scope="module")
def mgeo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle: ``similarity/`` and ``parse/`` MGeo directories."""
    root = tmp_path_factory.mktemp("mgeo")
    _write_mgeo(root / "similarity", "similarity", seed=1)
    _write_mgeo(root / "parse", "parse", seed=2)
    return root


@pytest.fixture(scope="module")
def converted(mgeo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dst = tmp_path_factory.mktemp("converted") / "bert"
    convert(mgeo, dst)
    return dst


@pytest.fixture(scope="module")
def ms_model(mgeo: Path) -> Iterator[LoadedModel]:
    yield modelscope_backend.load(LoadSpec(model=str(mgeo), max_seq_len=SEQ_LEN))


def _tokenizer(directory: Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(str(directory), use_fast=True)


def _mgeo_logits(directory: Path, task: str, enc: dict[str, torch.Tensor]) -> torch.Tensor:
    cls = MGeoForSequenceClassification if task == "similarity" else MGeoForTokenClassification
    model = cls.from_pretrained(str(directory))  # ModelScope's loader: configuration.json -> MGeo
    assert type(model) is cls
    model.eval()
    with torch.no_grad():
        return model(**enc).logits


# --- the converter -------------------------------------------------------------------------


def test_converted_similarity_logits_match_mgeo(mgeo: Path, converted: Path) -> None:
    tokenizer = _tokenizer(converted / "similarity")
    enc = tokenizer([a for a, _ in PAIRS], [b for _, b in PAIRS], padding=True, return_tensors="pt")
    assert (enc["input_ids"] == tokenizer.unk_token_id).sum() == 0
    bert = AutoModelForSequenceClassification.from_pretrained(str(converted / "similarity")).eval()
    with torch.no_grad():
        ours = bert(**enc).logits
    theirs = _mgeo_logits(mgeo / "similarity", "similarity", dict(enc))
    assert ours.shape == (len(PAIRS), 3)
    assert ours.abs().max() > 0.1  # not a degenerate, all-zero head
    torch.testing.assert_close(ours, theirs, atol=TOL, rtol=0)
    assert bert.config.id2label == dict(enumerate(SIMILARITY_LABELS))


def test_converted_parse_logits_match_mgeo(mgeo: Path, converted: Path) -> None:
    tokenizer = _tokenizer(converted / "parse")
    enc = tokenizer(ADDRESSES, padding=True, return_tensors="pt")
    bert = AutoModelForTokenClassification.from_pretrained(str(converted / "parse")).eval()
    with torch.no_grad():
        ours = bert(**enc).logits
    theirs = _mgeo_logits(mgeo / "parse", "parse", dict(enc))
    torch.testing.assert_close(ours, theirs, atol=TOL, rtol=0)
    assert [bert.config.id2label[i] for i in range(bert.config.num_labels)] == tag_set(ELEMENT_TYPES)


def test_converted_tokenizer_matches_mgeo_tokenizer(mgeo: Path, converted: Path) -> None:
    """ModelScope tokenizes with the slow BertTokenizer by default; the saved fast one agrees."""
    slow = AutoTokenizer.from_pretrained(str(mgeo / "similarity"), use_fast=False)
    fast = _tokenizer(converted / "similarity")
    for a, b in PAIRS:
        assert fast(a, b)["input_ids"] == slow(a, b)["input_ids"]


def test_converted_layout_and_metadata(mgeo: Path, converted: Path) -> None:
    for task, arch in (("similarity", "BertForSequenceClassification"), ("parse", "BertForTokenClassification")):
        config = json.loads((converted / task / "config.json").read_text())
        assert config["architectures"] == [arch]
        assert config["model_type"] == "bert"
        assert "fusion_layer" not in config and "gis_embedding" not in config
        assert (converted / task / "model.safetensors").is_file()
        assert (converted / task / "tokenizer.json").is_file()
    metadata = json.loads((converted / "geogate.json").read_text())
    assert metadata["model_version"].startswith("mgeo-converted-")
    # a single directory converts too, and twice to the same version: it is tied to the source weights
    versions = []
    for name in ("once", "twice"):
        convert(mgeo / "similarity", converted.parent / name)
        single = json.loads((converted.parent / name / "geogate.json").read_text())
        assert single["task"] == "similarity" and single["labels"] == SIMILARITY_LABELS
        versions.append(single["model_version"])
    assert versions[0] == versions[1] and versions[0].startswith("mgeo_similarity-converted-")


def test_convert_refuses_gis_fusion_layers(tmp_path: Path) -> None:
    src = _write_mgeo(tmp_path / "fused", "similarity", fusion_layer=1)
    weights = torch.load(src / "pytorch_model.bin", weights_only=True)
    assert any(".crossattention." in k for k in weights)  # layer 1 really is a fusion layer
    dst = tmp_path / "out"
    with pytest.raises(ConversionError, match="fusion_layer"):
        convert(src, dst)
    assert not dst.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["fused"]  # no temporary directory left behind


def test_convert_cli_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from geogate.shared.cli import main

    src = _write_mgeo(tmp_path / "fused", "parse", fusion_layer=1)
    assert main(["mgeo", "convert", str(src), str(tmp_path / "out")]) == 2
    assert "fusion_layer" in capsys.readouterr().err
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    assert main(["mgeo", "convert", str(src), str(tmp_path / "busy")]) == 2


# --- the modelscope backend ------------------------------------------------------------


def test_modelscope_backend_similarity_follows_mgeo_logits(mgeo: Path, ms_model: LoadedModel) -> None:
    assert ms_model.tasks == ("similarity", "parse")
    assert ms_model.backend == "modelscope" and ms_model.dtype == "fp32" and ms_model.device == "cpu"
    assert len(ms_model.checksum) == 64 and ms_model.model_version.startswith(mgeo.name)
    runner = ms_model.similarity
    assert runner is not None
    results = runner.run(runner.prepare(PAIRS))
    tokenizer = _tokenizer(mgeo / "similarity")
    enc = tokenizer([a for a, _ in PAIRS], [b for _, b in PAIRS], padding=True, return_tensors="pt")
    probs = torch.softmax(_mgeo_logits(mgeo / "similarity", "similarity", dict(enc)), dim=-1)
    for result, row in zip(results, probs):
        assert type(result.score) is float and 0.0 <= result.score <= 1.0
        assert result.label in LABELS
        assert result.score == pytest.approx(row[SIMILARITY_LABELS.index(EXACT_MATCH)].item(), abs=TOL)
        assert result.label == SIMILARITY_LABELS[int(row.argmax())]
    assert len({r.label for r in results}) > 1 or len({round(r.score, 3) for r in results}) > 1


def test_modelscope_backend_parse_spans(ms_model: LoadedModel) -> None:
    runner = ms_model.parse
    assert runner is not None
    results = runner.run(runner.prepare(ADDRESSES))
    assert len(results) == len(ADDRESSES)
    assert any(r.elements for r in results)
    for text, result in zip(ADDRESSES, results):
        previous_end = 0
        for element in result.elements:
            assert type(element.start) is int and type(element.end) is int
            assert previous_end <= element.start < element.end <= len(text)
            assert element.text == text[element.start : element.end]
            assert element.type in ELEMENT_TYPES
            previous_end = element.end


def test_modelscope_backend_batch_equals_one_by_one(ms_model: LoadedModel) -> None:
    """ModelScope batches only when given batch_size; the batched answers must not differ."""
    sim, parse = ms_model.similarity, ms_model.parse
    assert sim is not None and parse is not None
    batched = sim.run(sim.prepare(PAIRS))
    single = [sim.run(sim.prepare([p]))[0] for p in PAIRS]
    for b, s in zip(batched, single):
        assert b.label == s.label and b.score == pytest.approx(s.score, abs=1e-6)
    assert parse.run(parse.prepare(ADDRESSES)) == [parse.run(parse.prepare([a]))[0] for a in ADDRESSES]


def test_modelscope_backend_sources(mgeo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    joined = modelscope_backend.load(LoadSpec(model=f"{mgeo / 'parse'},{mgeo / 'similarity'}", max_seq_len=SEQ_LEN))
    assert joined.tasks == ("similarity", "parse")
    single = modelscope_backend.load(LoadSpec(model=str(mgeo / "parse"), max_seq_len=SEQ_LEN))
    assert single.tasks == ("parse",)

    # a hub id resolves to the local cache only; the legacy layout is {cache}/models/{owner}/{name}
    cache = tmp_path / "cache"
    shutil.copytree(mgeo / "similarity", cache / "models" / modelscope_backend.SIMILARITY_MODEL_ID)
    monkeypatch.setenv("MODELSCOPE_CACHE", str(cache))
    by_id = modelscope_backend.load(LoadSpec(model=modelscope_backend.SIMILARITY_MODEL_ID, max_seq_len=SEQ_LEN))
    assert by_id.tasks == ("similarity",)
    with pytest.raises(FileNotFoundError, match="never downloads"):
        modelscope_backend.load(LoadSpec(model=modelscope_backend.PARSE_MODEL_ID))
    with pytest.raises(ValueError, match="two models for task similarity"):
        modelscope_backend.resolve_sources(f"{mgeo},{mgeo / 'similarity'}")
    with pytest.raises(ValueError, match="position embeddings"):
        modelscope_backend.load(LoadSpec(model=str(mgeo / "parse"), max_seq_len=256))


@pytest.mark.parametrize("dtype", ["fp16", "bf16", "int8"])
def test_modelscope_backend_is_fp32_only(mgeo: Path, dtype: str) -> None:
    with pytest.raises(ValueError, match="geogate mgeo convert"):
        modelscope_backend.load(LoadSpec(model=str(mgeo), dtype=dtype))


# --- the hf backend on the converted weights --------------------------------------------


def test_hf_backend_on_converted_matches_modelscope_backend(converted: Path, ms_model: LoadedModel) -> None:
    from geogate.node.backends import transformers_backend

    hf = transformers_backend.load(LoadSpec(model=str(converted), max_seq_len=SEQ_LEN))
    assert hf.tasks == ("similarity", "parse")
    assert hf.similarity is not None and ms_model.similarity is not None
    ours = hf.similarity.run(hf.similarity.prepare(PAIRS))
    theirs = ms_model.similarity.run(ms_model.similarity.prepare(PAIRS))
    for o, t in zip(ours, theirs):
        assert o.score == pytest.approx(t.score, abs=TOL)
        assert o.label == t.label
