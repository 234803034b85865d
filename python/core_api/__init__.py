"""core-api: a self-hostable API platform core."""

__version__ = "0.1.0"
