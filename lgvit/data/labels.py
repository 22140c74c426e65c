"""Class-name files: one name a line (`read_labels`), and the ImageNet-1k names shipped as package data
(`imagenet_classes`, generated from torchvision's ImageNet weights metadata, BSD-3-Clause)."""

from functools import cache
from importlib.resources import files
from pathlib import Path

IMAGENET_CLASSES_FILE = "imagenet_classes.txt"


def _names(text: str) -> list[str]:
    """The names in `text`: one a line, blank lines and lines starting with # left out."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def pad_class_names(names: list[str], n: int) -> list[str]:
    """`names`, then "(unused i)" for each output of a head wider than the classes (`--num-classes` larger)."""
    return list(names) + [f"(unused {i})" for i in range(len(names), n)]


def read_labels(path: str | Path) -> list[str]:
    """Class names from a text file, one a line (blank lines and # comments ignored); an unreadable or
    empty file raises, naming it."""
    try:
        names = _names(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"--labels {path}: cannot read it ({type(e).__name__}: {e}); give a text file") from e
    if not names:
        raise ValueError(f"--labels {path} lists no class names: give a text file with one class name a line")
    return names


@cache
def _imagenet() -> tuple[str, ...]:
    return tuple(_names(files(__package__).joinpath(IMAGENET_CLASSES_FILE).read_text(encoding="utf-8")))


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet-1k class names in class-index order (short English names, e.g. 'tench', 'goldfish')."""
    return list(_imagenet())
