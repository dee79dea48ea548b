"""The shipped DEMO model (a tiny BERT trained on synthetic addresses) and its trainer."""

from pathlib import Path

__all__ = ["DEMO_MODEL_DIR"]

DEMO_MODEL_DIR = Path(__file__).parent / "model"
