"""``geogate mgeo convert SRC DST``: an MGeo text checkpoint -> a plain transformers BERT directory.

MGeo's fine-tuned text models wrap a BERT text encoder (``bert.text_encoder.*``) and, in
multi-modal mode only, a GIS encoder. The text pipelines run the encoder's layers
``0 .. fusion_layer``; layers from ``fusion_layer`` on carry cross-attention to GIS
features. So when ``fusion_layer == num_hidden_layers`` the text path *is* BERT, and
renaming ``bert.text_encoder.*`` to ``bert.*`` yields a ``BertForSequenceClassification``
(similarity) or ``BertForTokenClassification`` (parse) that the hf backend serves with
dynamic batching, fp16 and int8. Anything else is refused rather than approximated.

SRC is a ModelScope model directory (configuration.json, config.json, pytorch_model.bin or
model.safetensors, vocab.txt) or a bundle of them (``similarity/``, ``parse/``); DST gets
the same shape. The output is written beside DST and renamed into place only after it
loads back with no missing or unexpected keys, so a failed conversion leaves nothing.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geogate.node.backends.base import Task
from geogate.node.backends.modelscope_backend import MS_TASKS
from geogate.node.identity import METADATA_FILE, read_metadata, weights_checksum
from geogate.shared.schemas import LABELS

if TYPE_CHECKING:
    import torch

__all__ = ["ConversionError", "convert"]

log = logging.getLogger("geogate.node.mgeo_convert")

_ARCHITECTURES: dict[Task, str] = {
    "similarity": "BertForSequenceClassification",
    "parse": "BertForTokenClassification",
}
# BertConfig fields MGeo's text encoder reads; everything else in MGeo's config.json
# (fusion_layer, encoder_width, gis_* ...) describes the GIS side and is dropped.
_BERT_FIELDS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
    "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
    "type_vocab_size", "initializer_range", "layer_norm_eps", "pad_token_id", "classifier_dropout",
)
_TEXT_PREFIX = "bert.text_encoder."
_GIS_PREFIXES = ("bert.gis_encoder.", "bert.gis2text.", "bert.gis_type.")
# Index buffers, rebuilt by BertEmbeddings and not saved by transformers.
_BUFFER_SUFFIXES = ("embeddings.position_ids", "embeddings.token_type_ids")


class ConversionError(Exception):
    """SRC is not an MGeo checkpoint this converter can turn into BERT exactly."""


def convert(src: Path, dst: Path) -> None:
    """Convert the model (or bundle) at ``src`` into ``dst``, which must not exist or be empty."""
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: no such directory")
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise ConversionError(f"{dst} exists and is not an empty directory; refusing to overwrite it")
    tasks = _task_dirs(src)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
    tmp.chmod(0o755)  # mkdtemp's 0700 would hide the model from a node running as another user
    try:
        if tasks is None:
            _convert_model(src, tmp)
        else:
            for task, task_src in tasks.items():
                _convert_model(task_src, tmp / task, expected=task)
            _write_bundle_metadata(src, tmp, list(tasks.values()))
        if dst.exists():
            dst.rmdir()  # empty, checked above; rename() cannot replace it otherwise
        tmp.rename(dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("converted %s -> %s", src, dst)


def _task_dirs(src: Path) -> dict[Task, Path] | None:
    """None for a single model directory; the task directories of a bundle otherwise."""
    if (src / "configuration.json").is_file():
        return None
    found: dict[Task, Path] = {t: src / t for t in ("similarity", "parse") if (src / t).is_dir()}
    if not found:
        raise ConversionError(
            f"{src}: neither a ModelScope model directory (configuration.json) nor a bundle (similarity/, parse/)"
        )
    return found


# --- one model directory ----------------------------------------------------------------


def _convert_model(src: Path, out: Path, expected: Task | None = None) -> None:
    ms_config = _read_json(src / "configuration.json")
    config = _read_json(src / "config.json")
    task = _task(src, ms_config, expected)
    _check_plain_bert(src, config)
    labels = _labels(src, ms_config, config)
    if task == "similarity" and {label.lower() for label in labels} != set(LABELS):
        raise ConversionError(f"{src}: similarity labels are {labels}; geogate needs {list(LABELS)}")

    weights = _bert_weights(src, _load_state_dict(src), task)
    classes = weights["classifier.weight"].shape[0]
    if classes != len(labels):
        raise ConversionError(f"{src}: the classifier has {classes} outputs but there are {len(labels)} labels")

    out.mkdir(parents=True, exist_ok=True)  # the staging directory itself for a single model
    bert_config = _bert_config(config, task, labels)
    bert_config.save_pretrained(out)
    _save_weights(weights, out / "model.safetensors")
    _save_tokenizer(src, out, bert_config.max_position_embeddings)
    _write_metadata(src, out, task, labels)
    _verify(out, task)


def _task(src: Path, ms_config: dict[str, Any], expected: Task | None) -> Task:
    ms_task = ms_config.get("task")
    task = MS_TASKS.get(ms_task) if isinstance(ms_task, str) else None
    if task is None:
        raise ConversionError(f"{src}: configuration.json task {ms_task!r} is not one of {sorted(MS_TASKS)}")
    if expected is not None and task != expected:
        raise ConversionError(f"{src}: expected a {expected} model, but its task is {ms_task!r}")
    return task


def _check_plain_bert(src: Path, config: dict[str, Any]) -> None:
    """Refuse any config under which MGeo's text path is not exactly BERT's forward pass."""
    layers = config.get("num_hidden_layers")
    fusion = config.get("fusion_layer")
    if fusion is None:
        raise ConversionError(f"{src}/config.json has no fusion_layer; not an MGeo checkpoint")
    if fusion != layers:
        raise ConversionError(
            f"{src}: fusion_layer ({fusion}) differs from num_hidden_layers ({layers}), so the text encoder "
            "is not a plain BERT (layers from fusion_layer on are GIS cross-attention layers, which MGeo's "
            "text path skips); refusing to convert rather than truncate the encoder"
        )
    if config.get("gis_embedding", 0) != 0:
        raise ConversionError(f"{src}: gis_embedding is set; its embeddings are not BERT's")
    position = config.get("position_embedding_type", "absolute")
    if position != "absolute":
        raise ConversionError(f"{src}: position_embedding_type {position!r} is not supported (absolute only)")


def _labels(src: Path, ms_config: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """Label names in id order, found where ModelScope's pipelines look, in the same order
    (``modelscope.utils.hub.parse_label_mapping``), so the names match what the pipeline says."""
    label2id = _label2id(src, ms_config, config)
    if label2id is None:
        raise ConversionError(f"{src}: no label mapping in label_mapping.json, configuration.json or config.json")
    by_id = {int(i): str(name) for name, i in label2id.items()}
    if sorted(by_id) != list(range(len(by_id))) or len(by_id) != len(label2id):
        raise ConversionError(f"{src}: label ids {sorted(label2id.values())} are not 0..n-1, each once")
    return [by_id[i] for i in range(len(by_id))]


def _label2id(src: Path, ms_config: dict[str, Any], config: dict[str, Any]) -> dict[str, Any] | None:
    mapping = src / "label_mapping.json"
    if mapping.is_file():
        return _read_json(mapping)
    for section in ("model", "preprocessor"):
        part = ms_config.get(section)
        if not isinstance(part, dict):
            continue
        if isinstance(part.get("label2id"), dict):
            return dict(part["label2id"])
        if isinstance(part.get("id2label"), dict):
            return {name: i for i, name in part["id2label"].items()}
    if isinstance(config.get("label2id"), dict):
        return dict(config["label2id"])
    return None


def _load_state_dict(src: Path) -> dict[str, torch.Tensor]:
    import torch

    if (src / "model.safetensors").is_file():
        from safetensors.torch import load_file

        return load_file(str(src / "model.safetensors"))
    if (src / "pytorch_model.bin").is_file():
        state = torch.load(src / "pytorch_model.bin", map_location="cpu", weights_only=True)
        return state.get("state_dict", state) if isinstance(state, dict) else state
    if any(src.glob("*.index.json")):
        raise ConversionError(f"{src}: sharded checkpoints are not supported")
    raise ConversionError(f"{src}: no model.safetensors or pytorch_model.bin")


def _bert_weights(src: Path, state: dict[str, torch.Tensor], task: Task) -> dict[str, torch.Tensor]:
    """MGeo keys -> BERT keys; GIS-only weights and index buffers are dropped, anything
    unexpected stops the conversion (a surprise means the checkpoint is not what we think)."""
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, tensor in state.items():
        if key.endswith(_BUFFER_SUFFIXES) or key.startswith(_GIS_PREFIXES):
            continue
        if key.startswith("classifier."):
            out[key] = tensor
        elif key.startswith(_TEXT_PREFIX):
            rest = key[len(_TEXT_PREFIX):]
            if task == "parse" and rest.startswith("pooler."):
                continue  # token classification has no pooler; MGeo ignores it on load as well
            out["bert." + rest] = tensor
        else:
            unknown.append(key)
    if unknown:
        raise ConversionError(f"{src}: weights neither MGeo text encoder, GIS, nor classifier: {unknown[:8]}")
    if "classifier.weight" not in out:
        raise ConversionError(f"{src}: no classifier weights; not a fine-tuned MGeo model")
    return out


def _bert_config(config: dict[str, Any], task: Task, labels: list[str]) -> Any:
    from transformers import BertConfig

    fields = {k: config[k] for k in _BERT_FIELDS if k in config}
    return BertConfig(
        **fields,
        position_embedding_type="absolute",
        architectures=[_ARCHITECTURES[task]],
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
    )


def _save_weights(weights: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    # Clone: safetensors refuses tensors that share storage (views of one checkpoint blob).
    save_file({k: v.detach().clone().contiguous() for k, v in weights.items()}, str(path), {"format": "pt"})


def _save_tokenizer(src: Path, out: Path, max_positions: int) -> None:
    """The tokenizer ModelScope builds for MGeo (BERT WordPiece on vocab.txt, with the
    directory's tokenizer_config), saved as a fast tokenizer: the hf backend needs offsets."""
    from transformers import BertTokenizerFast

    if not (src / "vocab.txt").is_file():
        raise ConversionError(f"{src}: no vocab.txt")
    tokenizer = BertTokenizerFast.from_pretrained(str(src))
    tokenizer.model_max_length = min(tokenizer.model_max_length, max_positions)  # so truncation=True never exceeds the positions
    tokenizer.save_pretrained(str(out))


def _write_metadata(src: Path, out: Path, task: Task, labels: list[str]) -> None:
    source_checksum = weights_checksum([src])
    metadata = {
        "model_version": _version(src, f"mgeo_{task}", source_checksum),
        "task": task,
        "labels": labels,
        "converted_from": str(src.resolve()),
        "source_checksum": source_checksum,
        "converter": "geogate mgeo convert",
    }
    (out / METADATA_FILE).write_text(json.dumps(metadata, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def _write_bundle_metadata(src: Path, out: Path, task_dirs: list[Path]) -> None:
    source_checksum = weights_checksum(task_dirs)
    metadata = {
        "model_version": _version(src, "mgeo", source_checksum),
        "converted_from": str(src.resolve()),
        "source_checksum": source_checksum,
        "converter": "geogate mgeo convert",
    }
    (out / METADATA_FILE).write_text(json.dumps(metadata, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def _version(src: Path, base: str, source_checksum: str) -> str:
    """The source's own version if it has one, else one tied to the source weights, so
    converting the same checkpoint twice gives the same version."""
    version = read_metadata(src).get("model_version")
    return str(version) if version else f"{base}-converted-{source_checksum[:12]}"


def _verify(out: Path, task: Task) -> None:
    """Load the result the way the hf backend will; any key it misses or ignores is fatal."""
    from transformers import (
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
    )

    auto = AutoModelForSequenceClassification if task == "similarity" else AutoModelForTokenClassification
    try:
        _, info = auto.from_pretrained(str(out), output_loading_info=True)
    except Exception as exc:  # shape mismatches surface as exceptions, not as loading info
        raise ConversionError(f"the converted model in {out} does not load: {exc}") from exc
    problems = {k: v for k, v in info.items() if v}
    if problems:
        raise ConversionError(f"the converted model does not load cleanly: {problems}")


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConversionError(f"{path} is missing")
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ConversionError(f"{path}: expected a JSON object")
    return data
