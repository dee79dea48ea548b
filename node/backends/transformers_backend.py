"""Backend ``hf``: local transformers directories, batched, padded to each batch's longest.

Similarity is an ``AutoModelForSequenceClassification`` over the pair with three labels
(not_match, partial_match, exact_match); parse is an ``AutoModelForTokenClassification``
whose BIO/BIES tags are decoded into MGeo element spans through the offset mapping.
Real MGeo weights reach this backend through ``geogate mgeo convert``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from node.backends.base import LoadedModel, LoadSpec, Pair, Task
from node.backends.tags import decode_tags
from node.identity import read_metadata, resolve_version, weights_checksum
from shared.schemas import EXACT_MATCH, LABELS, Element, ParseResult, SimilarityResult

__all__ = ["find_task_dirs", "load"]

log = logging.getLogger("geogate.node.backend")

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def find_task_dirs(root: Path) -> dict[Task, Path]:
    """``root/similarity`` and ``root/parse`` of a bundle, or ``root`` itself by its config."""
    found: dict[Task, Path] = {}
    tasks: tuple[Task, ...] = ("similarity", "parse")
    for task in tasks:
        if (root / task / "config.json").is_file():
            found[task] = root / task
    if found:
        return found
    config = root / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{root}: neither a model bundle (similarity/, parse/) nor a model directory")
    architectures = json.loads(config.read_text(encoding="utf-8")).get("architectures") or []
    if any("TokenClassification" in a for a in architectures):
        return {"parse": root}
    if any("SequenceClassification" in a for a in architectures):
        return {"similarity": root}
    raise ValueError(f"{config}: architectures {architectures} are neither sequence nor token classification")


def load(spec: LoadSpec) -> LoadedModel:
    root = Path(spec.model)
    if "," in spec.model or not root.is_dir():
        raise FileNotFoundError(f"backend hf loads a local directory; {spec.model!r} is not one")
    device = torch.device(spec.device)
    if spec.dtype == "int8" and device.type != "cpu":
        raise ValueError("dtype int8 is dynamic quantization, which runs on the CPU only; use fp16 on CUDA")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but torch sees no CUDA device")

    dirs = find_task_dirs(root)
    checksum = weights_checksum(list(dirs.values()))
    metadata = read_metadata(root)
    version = resolve_version(spec.model_version, metadata, root.name, checksum)
    similarity = _SimilarityRunner(dirs["similarity"], spec, device) if "similarity" in dirs else None
    parse = _ParseRunner(dirs["parse"], spec, device) if "parse" in dirs else None
    return LoadedModel(
        backend="hf",
        device=str(device),
        dtype=spec.dtype,
        similarity=similarity,
        parse=parse,
        model_version=version,
        checksum=checksum,
        source=str(root),
        demo=spec.demo or bool(metadata.get("demo")),
        details={"metadata": metadata, "task_dirs": {k: str(v) for k, v in dirs.items()}},
    )


def _prepare_model(model: PreTrainedModel, spec: LoadSpec, device: torch.device) -> torch.nn.Module:
    model.eval()
    if spec.dtype == "int8":
        # Dynamic quantization of the Linear layers: int8 weights, fp32 activations.
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    moved: torch.nn.Module = model.to(device=device, dtype=_DTYPES[spec.dtype])  # type: ignore[call-arg]
    return moved


def _tokenizer(path: Path) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(path, use_fast=True)
    if not tokenizer.is_fast:
        raise ValueError(f"{path}: a fast tokenizer is needed (offsets for element spans)")
    return tokenizer


class _SimilarityRunner:
    def __init__(self, path: Path, spec: LoadSpec, device: torch.device) -> None:
        self.tokenizer = _tokenizer(path)
        model = AutoModelForSequenceClassification.from_pretrained(path)
        labels = _label_names(model.config.id2label, model.config.num_labels, path)
        self.labels = labels
        self.exact = labels.index(EXACT_MATCH)
        self.model = _prepare_model(model, spec, device)
        self.device = device
        self.max_len = spec.max_seq_len

    def prepare(self, items: Sequence[Pair]) -> Any:
        return self.tokenizer(
            [a for a, _ in items],
            [b for _, b in items],
            padding="longest",
            truncation="longest_first",
            max_length=self.max_len,
            return_tensors="pt",
        )

    def run(self, prepared: Any) -> list[SimilarityResult]:
        with torch.inference_mode():
            logits = self.model(**prepared.to(self.device)).logits
            probs = torch.softmax(logits.float(), dim=-1).cpu()
        best = probs.argmax(dim=-1).tolist()
        exact = probs[:, self.exact].tolist()
        return [SimilarityResult(score=round(s, 6), label=self.labels[b]) for s, b in zip(exact, best)]


class _ParseRunner:
    def __init__(self, path: Path, spec: LoadSpec, device: torch.device) -> None:
        self.tokenizer = _tokenizer(path)
        model = AutoModelForTokenClassification.from_pretrained(path)
        self.tags = [model.config.id2label[i] for i in range(model.config.num_labels)]
        self.model = _prepare_model(model, spec, device)
        self.device = device
        self.max_len = spec.max_seq_len

    def prepare(self, items: Sequence[str]) -> Any:
        enc = self.tokenizer(
            list(items),
            padding="longest",
            truncation=True,
            max_length=self.max_len,
            return_offsets_mapping=True,
            return_tensors="pt",
        )
        offsets = enc.pop("offset_mapping").tolist()
        words = [enc.word_ids(i) for i in range(len(items))]
        return list(items), offsets, words, enc

    def run(self, prepared: Any) -> list[ParseResult]:
        texts, offsets, words, enc = prepared
        with torch.inference_mode():
            predicted = self.model(**enc.to(self.device)).logits.argmax(dim=-1).cpu().tolist()
        results = []
        for text, row_offsets, row_words, row in zip(texts, offsets, words, predicted):
            tags = [self.tags[i] for i in row]
            elements: list[Element] = decode_tags(tags, [tuple(o) for o in row_offsets], text, row_words)
            results.append(ParseResult(elements=elements))
        return results


def _label_names(id2label: dict[int, str], num_labels: int, path: Path) -> list[str]:
    """Label names in id order; a 3-class model without names is taken in MGeo's order."""
    names = [str(id2label.get(i, "")).lower() for i in range(num_labels)]
    if EXACT_MATCH in names:
        return names
    if num_labels == len(LABELS) and all(n.startswith("label_") for n in names):
        log.warning("%s has unnamed labels; assuming MGeo's order %s", path, LABELS)
        return list(LABELS)
    raise ValueError(f"{path}: labels {names} do not include {EXACT_MATCH!r}")
