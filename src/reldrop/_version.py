"""The package version (one place; ``reldrop.__version__`` and run environments read it)."""

__version__ = "0.1.0"
