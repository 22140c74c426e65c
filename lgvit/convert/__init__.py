"""Per-family checkpoint key maps (official and timm layouts <-> lgvit)."""
