"""Model families. Importing this package registers every variant."""

from . import (
    gcvit,  # noqa: F401
    localvit,  # noqa: F401
    maxvit,  # noqa: F401
    pvt,  # noqa: F401
    swin,  # noqa: F401
    tnt,  # noqa: F401
    vit,  # noqa: F401
)
