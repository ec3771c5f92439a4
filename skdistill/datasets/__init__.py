"""Data sets: toy volumes for tests and examples; simulator physics in ``physics``."""

from ._toy import TOY_SHAPES, make_toy_volumes

__all__ = ["TOY_SHAPES", "make_toy_volumes"]
