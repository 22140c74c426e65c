"""Datasets for training and evaluation: Fashion-MNIST IDX files (`idx`) or ImageFolder trees (`folder`),
their transforms and augmentation recipe (`transforms`), and `build_data` choosing between them (`build`)."""

from .build import DataBundle, build_data, resolve_data_dir
from .folder import load_image, pil_mode
from .idx import DEFAULT_IDX_DIR, FASHION_MNIST_CLASSES, TensorImages, read_idx
from .transforms import AUGMENTS, AugmentConfig, eval_transform, mix_transform

__all__ = [
    "AUGMENTS",
    "DEFAULT_IDX_DIR",
    "FASHION_MNIST_CLASSES",
    "AugmentConfig",
    "DataBundle",
    "TensorImages",
    "build_data",
    "eval_transform",
    "load_image",
    "mix_transform",
    "pil_mode",
    "read_idx",
    "resolve_data_dir",
]
