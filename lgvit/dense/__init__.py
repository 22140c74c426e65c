"""Dense prediction on lgvit's staged models: backbones for torchvision's detectors (`backbone`: `create_backbone`)
and a semantic-segmentation model (`segmenter`: `create_segmenter`, a Semantic-FPN head, optionally with
Panoptic-DeepLab's instance grouping). See docs/dense.md."""

from .backbone import Backbone, create_backbone
from .segmenter import Segmenter, SemanticFPNHead, create_segmenter

__all__ = ["Backbone", "SemanticFPNHead", "Segmenter", "create_backbone", "create_segmenter"]
