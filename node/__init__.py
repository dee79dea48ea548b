"""The scoring node: one model replica behind the scoring API (docs/design.md)."""
