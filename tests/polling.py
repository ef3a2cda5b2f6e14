"""Kept so that ``from polling import eventually`` keeps working; see :mod:`support.polling`."""

from support.polling import eventually

__all__ = ["eventually"]
