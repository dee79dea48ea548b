"""Model backends behind one seam (``base.LoadSpec`` -> ``base.LoadedModel``).

Backends are imported lazily: the modelscope one only with the ``mgeo`` extra.
"""

from __future__ import annotations

import os

from geogate.node.backends.base import LoadedModel, LoadSpec

__all__ = ["load_model"]


def load_model(spec: LoadSpec, backend: str) -> LoadedModel:
    import torch

    # torch defaults to one thread per core; with the event loop and the tokenizer on
    # the same cores, OpenMP's spinning threads then slow small forward passes 10-100x.
    torch.set_num_threads(spec.cpu_threads or max(1, (os.cpu_count() or 2) - 1))
    if backend == "hf":
        from geogate.node.backends import transformers_backend

        return transformers_backend.load(spec)
    if backend == "modelscope":
        from geogate.node.backends import modelscope_backend

        return modelscope_backend.load(spec)
    raise ValueError(f"unknown backend {backend!r}")
