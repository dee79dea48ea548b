"""The one seam between the node and a model library.

A backend loads a model bundle and hands the node one ``TaskRunner`` per task it serves.
A runner's work is cut in two so that the batcher can overlap them: ``prepare`` (CPU:
tokenization) runs on a preparation thread while the device thread is still busy with the
previous batch, and ``run`` (the forward pass and decoding) runs on the one device thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

from geogate.shared.schemas import ParseResult, SimilarityResult

__all__ = [
    "LoadSpec",
    "LoadedModel",
    "Pair",
    "ParseRunner",
    "SimilarityRunner",
    "Task",
    "TaskRunner",
]

Task = Literal["similarity", "parse"]
Pair = tuple[str, str]

I_contra = TypeVar("I_contra", contravariant=True)
R_co = TypeVar("R_co", covariant=True)


class TaskRunner(Protocol[I_contra, R_co]):
    def prepare(self, items: Sequence[I_contra]) -> Any:
        """CPU-side work for one batch (tokenization); must be thread-safe."""

    def run(self, prepared: Any) -> Sequence[R_co]:
        """The forward pass and decoding, one result per item, in order."""


SimilarityRunner = TaskRunner[Pair, SimilarityResult]
ParseRunner = TaskRunner[str, ParseResult]

@dataclass(frozen=True)
class LoadSpec:
    """What to load and how; built by the node from its configuration."""

    model: str  # a bundle or model directory, a hub id, or several joined by ","
    device: str = "cpu"  # "cpu", "cuda" or "cuda:N"
    dtype: str = "fp32"  # fp32 | fp16 | bf16 | int8
    model_version: str | None = None  # overrides the bundle's metadata
    max_seq_len: int = 128  # tokens; inputs are padded to the batch's longest, never to this
    cpu_threads: int = 0  # torch intra-op threads; 0: all cores but one
    demo: bool = False


@dataclass(frozen=True)
class LoadedModel:
    """What a backend returns: runners plus the identity the node reports."""

    backend: str
    device: str
    dtype: str
    similarity: SimilarityRunner | None
    parse: ParseRunner | None
    model_version: str
    checksum: str  # sha256 over the weight files, hex
    source: str  # directory or hub id it was loaded from
    demo: bool = False
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def tasks(self) -> tuple[Task, ...]:
        out: list[Task] = []
        if self.similarity is not None:
            out.append("similarity")
        if self.parse is not None:
            out.append("parse")
        return tuple(out)
