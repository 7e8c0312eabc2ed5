"""Moved: the parse-time plan is :mod:`pnp_ovss.plan`, the rule scripts' helpers :mod:`pnp_ovss.stages.job`.
Only ``make_plan`` is still importable from here, for tests/test_pins.py (which is not edited)."""

from .plan import make_plan

__all__ = ["make_plan"]
