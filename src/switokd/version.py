"""The package version (its own module, so that no module needs to import the top package for it)."""
__version__ = "0.1.0"
