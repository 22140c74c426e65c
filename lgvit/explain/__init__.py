"""Seeing inside the models: attention maps, GC ViT's global-query maps, attention rollout, Grad-CAM and
Layer-CAM, as tensors (`attention_maps`, `attention_rollout`, `grad_cam`, `layer_cam`) and as figures
(`lgvit explain`).

See docs/explain.md for the layout of every map and the pointing-game numbers.
"""

from .cam import default_stage, grad_cam, layer_cam
from .maps import Layout, attention_maps, attention_rollout

__all__ = ["Layout", "attention_maps", "attention_rollout", "default_stage", "grad_cam", "layer_cam"]
