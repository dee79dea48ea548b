"""Model backends behind one seam (``base.LoadSpec`` -> ``base.LoadedModel``).

Backends are imported lazily: the modelscope one only with the ``mgeo`` extra.
"""

from __future__ import annotations

from dataclasses import replace

from node.backends.base import LoadedModel, LoadSpec

__all__ = ["load_model"]


def load_model(spec: LoadSpec, backend: str) -> LoadedModel:
    if spec.model == "demo":
        from node.demo import DEMO_MODEL_DIR

        spec = replace(spec, model=str(DEMO_MODEL_DIR), demo=True)
    if backend == "hf":
        from node.backends import transformers_backend

        return transformers_backend.load(spec)
    if backend == "modelscope":
        from node.backends import modelscope_backend

        return modelscope_backend.load(spec)
    raise ValueError(f"unknown backend {backend!r}")
