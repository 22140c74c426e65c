"""lgvit: local-global vision transformers, exact against the reference code, at any input size."""

from . import models  # noqa: F401  (registers the variants)
from .convert import CheckpointError
from .factory import create_model, load_weights, read_state_dict, save_weights
from .registry import get_spec, list_models

__all__ = [
    "CheckpointError",
    "create_model",
    "get_spec",
    "list_models",
    "load_weights",
    "read_state_dict",
    "save_weights",
]
__version__ = "0.1.0"
