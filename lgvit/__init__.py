"""lgvit: local-global vision transformers, exact against the reference code, at any input size.

The public API: build a registered model, load and save weights, make it a detection or segmentation
backbone. The rooms behind it and what each may import are in docs/architecture.md.
"""

from .convert import CheckpointError
from .data import transform_for
from .dense import create_backbone, create_segmenter
from .factory import create_model, load_weights, read_state_dict, save_weights
from .registry import get_spec, list_models

__all__ = [
    "CheckpointError",
    "create_backbone",
    "create_model",
    "create_segmenter",
    "get_spec",
    "list_models",
    "load_weights",
    "read_state_dict",
    "save_weights",
    "transform_for",
]
__version__ = "0.1.0"  # the one place the version is written: pyproject.toml and `lgvit --version` read it
