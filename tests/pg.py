"""Kept so that ``import pg`` keeps working; the helpers live in :mod:`support.pg`."""

from support.pg import *  # noqa: F403
