"""Placeholder while being written (issue 3)."""


def register(subparsers) -> None:
    """Nothing yet."""
