"""The single source of the package version (read by hatchling and by ``stemsplit --version``)."""

__version__ = "0.1.0.dev0"
