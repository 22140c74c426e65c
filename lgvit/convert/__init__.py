"""Per-family checkpoint key maps (official and timm layouts <-> lgvit)."""

from .common import CheckpointError

__all__ = ["CheckpointError"]
