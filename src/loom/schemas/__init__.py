"""Typed shapes for workflow input and state."""
