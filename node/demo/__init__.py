"""The shipped DEMO models (tiny BERTs trained on synthetic addresses) and their trainer.

``demo`` is the first training run; ``demo-v2`` a short continued run from it, so the
local deployment's green color serves a version of its own and a switch is visible.
"""

from pathlib import Path

__all__ = ["DEMO_MODELS", "DEMO_MODEL_DIR"]

DEMO_MODEL_DIR = Path(__file__).parent / "model"
DEMO_MODELS = {"demo": DEMO_MODEL_DIR, "demo-v2": Path(__file__).parent / "model-v2"}
