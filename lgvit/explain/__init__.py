"""Seeing inside the models: attention maps, GC ViT's global-query maps, attention rollout and Grad-CAM,
as tensors (`attention_maps`, `attention_rollout`, `grad_cam`) and as figures (`lgvit explain`).

See docs/explain.md for the layout of every map and the pointing-game numbers.
"""

from .cam import default_stage, grad_cam
from .maps import Layout, attention_maps, attention_rollout

__all__ = ["Layout", "attention_maps", "attention_rollout", "default_stage", "grad_cam"]
