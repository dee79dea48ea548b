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

import numpy as np
import torch
from tokenizers import Encoding
from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from geogate.node.backends.base import LoadedModel, LoadSpec, Pair, Task
from geogate.node.backends.tags import decode_tags
from geogate.node.identity import read_metadata, resolve_version, weights_checksum
from geogate.shared.schemas import EXACT_MATCH, LABELS, Element, ParseResult, SimilarityResult

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


class Encoder:
    """Batch tokenization straight through the Rust tokenizer, padded to the longest.

    Gives the same tensors as ``tokenizer(..., padding="longest", truncation=...)``, in
    about a third of the time: transformers' ``__call__`` spends most of its time turning
    encodings into Python lists and back into tensors, on the node's critical path.
    The Rust tokenizer is configured once here (truncation on, padding off) and then only
    read, so concurrent preparation threads may share it.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_len: int) -> None:
        self._rust = tokenizer.backend_tokenizer
        self._rust.no_padding()
        self._rust.enable_truncation(max_len, strategy="longest_first")
        self._pad_id = tokenizer.pad_token_id or 0
        self._names = set(tokenizer.model_input_names)

    def __call__(self, inputs: Sequence[str] | Sequence[Pair]) -> tuple[list[Encoding], dict[str, torch.Tensor]]:
        encodings = self._rust.encode_batch(list(inputs))
        shape = (len(encodings), max(len(e.ids) for e in encodings))
        ids = np.full(shape, self._pad_id, dtype=np.int64)
        types = np.zeros(shape, dtype=np.int64)
        mask = np.zeros(shape, dtype=np.int64)
        for row, e in enumerate(encodings):
            n = len(e.ids)
            ids[row, :n], types[row, :n], mask[row, :n] = e.ids, e.type_ids, e.attention_mask
        arrays = {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}
        return encodings, {k: torch.from_numpy(v) for k, v in arrays.items() if k in self._names}


class _SimilarityRunner:
    def __init__(self, path: Path, spec: LoadSpec, device: torch.device) -> None:
        self.tokenizer = _tokenizer(path)
        model = AutoModelForSequenceClassification.from_pretrained(path)
        labels = _label_names(model.config.id2label, model.config.num_labels, path)
        self.labels = labels
        self.exact = labels.index(EXACT_MATCH)
        self.model = _prepare_model(model, spec, device)
        self.device = device
        self.encode = Encoder(self.tokenizer, spec.max_seq_len)

    def prepare(self, items: Sequence[Pair]) -> dict[str, torch.Tensor]:
        return self.encode(items)[1]

    def run(self, prepared: dict[str, torch.Tensor]) -> list[SimilarityResult]:
        with torch.inference_mode():
            logits = self.model(**{k: v.to(self.device) for k, v in prepared.items()}).logits
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
        self.encode = Encoder(self.tokenizer, spec.max_seq_len)

    def prepare(self, items: Sequence[str]) -> tuple[list[str], list[Encoding], dict[str, torch.Tensor]]:
        encodings, tensors = self.encode(items)
        return list(items), encodings, tensors

    def run(self, prepared: tuple[list[str], list[Encoding], dict[str, torch.Tensor]]) -> list[ParseResult]:
        texts, encodings, tensors = prepared
        with torch.inference_mode():
            logits = self.model(**{k: v.to(self.device) for k, v in tensors.items()}).logits
            predicted = logits.argmax(dim=-1).cpu().tolist()
        results = []
        for text, encoding, row in zip(texts, encodings, predicted):
            tags = [self.tags[i] for i in row[: len(encoding.ids)]]
            elements: list[Element] = decode_tags(tags, encoding.offsets, text, encoding.word_ids)
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
