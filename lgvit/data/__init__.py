"""Datasets for training and evaluation: Fashion-MNIST IDX files (`idx`) or ImageFolder trees (`folder`),
their transforms and augmentation recipe (`transforms`), class-name files (`labels`, with the ImageNet-1k
names as package data), and `build_data` choosing between them (`build`); for dense prediction, the
Fashion-MNIST scenes (`scenes`) and COCO / label-map folders (`dense_folder`)."""

from .build import EVAL_DEFAULTS, DataBundle, build_data, data_kind, resolve_data_dir
from .dense_folder import CocoFolder, LabelMapFolder, save_coco_folder, save_label_map_folder
from .folder import UnreadableImage, check_image, load_image, pil_mode
from .idx import DEFAULT_IDX_DIR, FASHION_MNIST_CLASSES, TensorImages, read_idx, write_idx
from .labels import imagenet_classes, pad_class_names, read_labels
from .scenes import SCENE_CLASSES, FashionScenes, Placement, SceneConfig
from .transforms import AUGMENTS, AugmentConfig, eval_config, eval_transform, mix_transform, transform_for

__all__ = [
    "AUGMENTS",
    "DEFAULT_IDX_DIR",
    "EVAL_DEFAULTS",
    "FASHION_MNIST_CLASSES",
    "SCENE_CLASSES",
    "CocoFolder",
    "FashionScenes",
    "LabelMapFolder",
    "Placement",
    "SceneConfig",
    "AugmentConfig",
    "DataBundle",
    "TensorImages",
    "UnreadableImage",
    "build_data",
    "check_image",
    "data_kind",
    "eval_config",
    "eval_transform",
    "imagenet_classes",
    "load_image",
    "mix_transform",
    "pad_class_names",
    "pil_mode",
    "read_idx",
    "read_labels",
    "write_idx",
    "resolve_data_dir",
    "save_coco_folder",
    "save_label_map_folder",
    "transform_for",
]
