"""Backend ``modelscope``: the real MGeo models through ModelScope's own pipelines.

This is the reference backend: it runs MGeo exactly as its authors ship it, so the hf
backend (``geogate mgeo convert`` + ``--backend hf``) can be checked against it. It is
not the fast path: ModelScope's preprocessors pad every input to ``max_seq_len``, and the
pipelines run fp32 only.

``LoadSpec.model`` is a local model directory, a bundle directory (``similarity/`` and/or
``parse/``), a ModelScope id, or several of these joined by ",". A hub id is resolved to
its local snapshot without touching the network; a model that is not on disk is an error,
never a download.

Quirks of ModelScope (1.40) this module works around:

- The text-classification pipeline returns ``labels``/``scores`` in no useful order (it
  reverses an ``argpartition``), so the label is taken at the argmax of ``scores``.
- A list input is processed one item at a time unless ``batch_size`` is given; batching
  works because the preprocessors pad to a fixed length, so every item has the same shape.
- A pair must be a ``tuple``: a list is taken as a batch of single sentences.
- The slow tokenizer path of the token-classification preprocessor crashes on any [UNK]
  token (it searches the token's text in the input), so the fast tokenizer is forced.
- ``pipeline()`` given a hub id asks the hub about it; only local paths are passed in.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geogate.node.backends.base import LoadedModel, LoadSpec, Pair, Task
from geogate.node.identity import read_metadata, resolve_version, weights_checksum
from geogate.shared.schemas import EXACT_MATCH, LABELS, Element, ParseResult, SimilarityResult

__all__ = [
    "KNOWN_MODELS",
    "MS_TASKS",
    "PARSE_MODEL_ID",
    "SIMILARITY_MODEL_ID",
    "ModelSource",
    "load",
    "resolve_sources",
]

log = logging.getLogger("geogate.node.backend")

SIMILARITY_MODEL_ID = "damo/mgeo_geographic_entity_alignment_chinese_base"
PARSE_MODEL_ID = "damo/mgeo_geographic_elements_tagging_chinese_base"
KNOWN_MODELS: dict[str, Task] = {SIMILARITY_MODEL_ID: "similarity", PARSE_MODEL_ID: "parse"}

# ModelScope task names (configuration.json "task") -> the geogate task they serve.
MS_TASKS: dict[str, Task] = {
    "sentence-similarity": "similarity",
    "text-classification": "similarity",
    "token-classification": "parse",
    "named-entity-recognition": "parse",
}
_CONFIGURATION = "configuration.json"
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_INSTALL_HINT = "pip install 'geogate[mgeo]'"

Pipeline = Callable[..., Any]  # a modelscope Pipeline; typed loosely as modelscope is optional


@dataclass(frozen=True)
class ModelSource:
    """One model directory on disk and the task it serves."""

    task: Task
    directory: Path
    origin: str  # what the operator named: a path or a hub id
    ms_task: str  # the ModelScope task to build its pipeline for
    bundle: Path | None = None  # the bundle it came from, if any


def load(spec: LoadSpec) -> LoadedModel:
    device = _check_device(spec.device)
    _check_dtype(spec.dtype)
    if spec.max_seq_len < 8:
        raise ValueError(f"max_seq_len {spec.max_seq_len} is too small for MGeo")
    sources = resolve_sources(spec.model)
    pipeline = _import_pipeline()

    by_task = {s.task: s for s in sources}
    checksum = weights_checksum([by_task[t].directory for t in ("similarity", "parse") if t in by_task])
    metadata = _metadata(sources)
    version = resolve_version(spec.model_version, metadata, _version_name(sources), checksum)

    similarity = parse = None
    if "similarity" in by_task:
        similarity = _SimilarityRunner(_build(pipeline, by_task["similarity"], spec, device))
    if "parse" in by_task:
        parse = _ParseRunner(_build(pipeline, by_task["parse"], spec, device))
    return LoadedModel(
        backend="modelscope",
        device=device,
        dtype="fp32",
        similarity=similarity,
        parse=parse,
        model_version=version,
        checksum=checksum,
        source=spec.model,
        details={
            "metadata": metadata,
            "task_dirs": {s.task: str(s.directory) for s in sources},
            "origins": {s.task: s.origin for s in sources},
            "sequence_length": spec.max_seq_len,
        },
    )


# --- resolving what to load -------------------------------------------------------------


def resolve_sources(model: str) -> list[ModelSource]:
    """Every comma-separated entry of ``model`` as model directories, one per task."""
    entries = [e.strip() for e in model.split(",") if e.strip()]
    if not entries:
        raise ValueError("no model given")
    sources: list[ModelSource] = []
    for entry in entries:
        sources.extend(_resolve_entry(entry))
    seen: dict[Task, ModelSource] = {}
    for source in sources:
        if source.task in seen:
            raise ValueError(
                f"two models for task {source.task}: {seen[source.task].origin} and {source.origin}"
            )
        seen[source.task] = source
    return sources


def _resolve_entry(entry: str) -> list[ModelSource]:
    path = Path(entry).expanduser()
    if path.is_dir():
        if (path / _CONFIGURATION).is_file():
            return [_model_dir(path, entry)]
        return _bundle(path, entry)
    if path.exists():
        raise ValueError(f"{entry}: not a directory")
    if _HUB_ID_RE.match(entry) and not entry.startswith((".", "/", "~")):
        return [_model_dir(_local_snapshot(entry), entry, expected=KNOWN_MODELS.get(entry))]
    raise FileNotFoundError(f"{entry}: no such model directory, and not a ModelScope id (owner/name)")


def _bundle(root: Path, entry: str) -> list[ModelSource]:
    found = []
    for task in ("similarity", "parse"):
        sub = root / task
        if sub.is_dir():
            found.append(_model_dir(sub, f"{entry}/{task}", expected=task, bundle=root))
    if not found:
        raise FileNotFoundError(
            f"{root}: neither a ModelScope model directory ({_CONFIGURATION}) nor a bundle (similarity/, parse/)"
        )
    return found


def _model_dir(directory: Path, origin: str, expected: Task | None = None, bundle: Path | None = None) -> ModelSource:
    ms_task = _configured_task(directory)
    task = MS_TASKS.get(ms_task)
    if task is None:
        raise ValueError(
            f"{directory}: task {ms_task!r} in {_CONFIGURATION} is neither similarity "
            f"({', '.join(k for k, v in MS_TASKS.items() if v == 'similarity')}) nor parse "
            f"({', '.join(k for k, v in MS_TASKS.items() if v == 'parse')})"
        )
    if expected is not None and task != expected:
        raise ValueError(f"{directory}: expected a {expected} model, but its task is {ms_task!r}")
    return ModelSource(task=task, directory=directory.resolve(), origin=origin, ms_task=ms_task, bundle=bundle)


def _configured_task(directory: Path) -> str:
    path = directory / _CONFIGURATION
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: no {_CONFIGURATION}; not a ModelScope model directory")
    config = json.loads(path.read_text(encoding="utf-8"))
    task = config.get("task") if isinstance(config, dict) else None
    if isinstance(task, str) and task:
        return task
    raise ValueError(f"{path}: no \"task\" field")


def _local_snapshot(model_id: str) -> Path:
    """The on-disk snapshot of a hub model; ``local_files_only`` so nothing is downloaded."""
    _quiet_modelscope()
    try:
        from modelscope.hub.snapshot_download import snapshot_download
    except ImportError as exc:
        raise _missing_extra(exc) from exc
    try:
        return Path(snapshot_download(model_id, local_files_only=True))
    except Exception as exc:  # modelscope_hub raises its own tree; all mean "not on disk"
        raise FileNotFoundError(
            f"{model_id} is not in the local ModelScope cache (MODELSCOPE_CACHE) and geogate never downloads "
            f"models; fetch it beforehand (modelscope download --model {model_id}) or pass its directory ({exc})"
        ) from exc


def _metadata(sources: list[ModelSource]) -> dict[str, Any]:
    """``geogate.json`` of the bundle, else of the first model directory that has one."""
    for directory in [s.bundle for s in sources if s.bundle] + [s.directory for s in sources]:
        metadata = read_metadata(directory)
        if metadata:
            return metadata
    return {}


def _version_name(sources: list[ModelSource]) -> str:
    bundles = {s.bundle for s in sources}
    if len(bundles) == 1 and None not in bundles:
        return next(iter(bundles)).name  # type: ignore[union-attr]
    if len(sources) == 1:
        return sources[0].origin.rstrip("/").rsplit("/", 1)[-1]
    return "mgeo"


# --- checks and pipeline construction --------------------------------------------------


def _check_device(device: str) -> str:
    if device == "cpu":
        return device
    if not re.fullmatch(r"cuda(:\d+)?", device):
        raise ValueError(f"device {device!r}: expected cpu, cuda or cuda:N")
    import torch

    if not torch.cuda.is_available():
        # ModelScope would silently fall back to the CPU; an operator asking for a GPU
        # should learn at start-up that there is none.
        raise RuntimeError(f"--device {device} was asked for, but torch sees no CUDA device")
    return device if ":" in device else "cuda:0"


def _check_dtype(dtype: str) -> None:
    if dtype != "fp32":
        raise ValueError(
            f"the modelscope backend runs fp32 only, not {dtype}; for {dtype}, convert the model with "
            "`geogate mgeo convert SRC DST` and serve DST with `--backend hf`"
        )


def _quiet_modelscope() -> None:
    # ModelScope logs INFO lines through its own stderr handler (propagate=False), past
    # geogate's JSON logs; keep it to warnings unless the operator chose a level.
    os.environ.setdefault("MODELSCOPE_LOG_LEVEL", str(logging.WARNING))


def _import_pipeline() -> Callable[..., Pipeline]:
    _quiet_modelscope()
    try:
        from modelscope.pipelines import pipeline
    except ImportError as exc:
        raise _missing_extra(exc) from exc
    return pipeline


def _check_positions(directory: Path, max_seq_len: int) -> None:
    """Every input is padded to max_seq_len, so it must fit the position embeddings."""
    config = directory / "config.json"
    if not config.is_file():
        return  # ModelScope will say what is missing
    positions = json.loads(config.read_text(encoding="utf-8")).get("max_position_embeddings")
    if isinstance(positions, int) and max_seq_len > positions:
        raise ValueError(f"max_seq_len {max_seq_len} exceeds {directory}'s {positions} position embeddings")


def _missing_extra(exc: ImportError) -> ImportError:
    missing = f" (missing module: {exc.name})" if exc.name else f" ({exc})"
    return ImportError(f"the modelscope backend needs the mgeo extra: {_INSTALL_HINT}{missing}")


def _build(pipeline: Callable[..., Pipeline], source: ModelSource, spec: LoadSpec, device: str) -> Pipeline:
    _check_positions(source.directory, spec.max_seq_len)
    log.info("building %s pipeline from %s", source.ms_task, source.directory)
    return pipeline(
        source.ms_task,
        model=str(source.directory),  # a local path: a hub id would make pipeline() query the hub
        device=device,
        # The default pads every input to 512 tokens; max_length also overrides a value
        # from configuration.json, which sequence_length alone does not.
        sequence_length=spec.max_seq_len,
        max_length=spec.max_seq_len,
        use_fast=True,
    )


# --- runners ----------------------------------------------------------------------------


class _SimilarityRunner:
    def __init__(self, pipe: Pipeline) -> None:
        labels = {str(v).lower() for v in (getattr(pipe, "id2label", None) or {}).values()}
        if labels != set(LABELS):
            raise ValueError(f"similarity model labels are {sorted(labels)}; geogate needs {list(LABELS)}")
        self._pipe = pipe

    def prepare(self, items: Sequence[Pair]) -> list[Pair]:
        return [(a, b) for a, b in items]  # tuples: a list would be read as two sentences

    def run(self, prepared: list[Pair]) -> list[SimilarityResult]:
        if not prepared:
            return []
        outputs = self._pipe(prepared, batch_size=len(prepared))
        return [_similarity_result(out) for out in outputs]


def _similarity_result(out: dict[str, Any]) -> SimilarityResult:
    scores = [float(s) for s in out["scores"]]
    labels = [str(label).lower() for label in out["labels"]]
    best = max(range(len(scores)), key=scores.__getitem__)  # the lists are not sorted
    # six digits, as the hf backend reports: the same model answers alike on either backend
    return SimilarityResult(score=round(dict(zip(labels, scores))[EXACT_MATCH], 6), label=labels[best])


class _ParseRunner:
    def __init__(self, pipe: Pipeline) -> None:
        self._pipe = pipe

    def prepare(self, items: Sequence[str]) -> list[str]:
        return list(items)

    def run(self, prepared: list[str]) -> list[ParseResult]:
        if not prepared:
            return []
        outputs = self._pipe(prepared, batch_size=len(prepared))
        return [_parse_result(text, out) for text, out in zip(prepared, outputs)]


def _parse_result(text: str, out: dict[str, Any]) -> ParseResult:
    elements = []
    for chunk in out["output"]:
        start, end = int(chunk["start"]), int(chunk["end"])  # numpy ints in the pipeline's output
        elements.append(Element(type=str(chunk["type"]), text=text[start:end], start=start, end=end))
    return ParseResult(elements=elements)
