"""Model families. Importing this package registers every variant."""

from . import gcvit  # noqa: F401
