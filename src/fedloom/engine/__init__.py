"""Engines that run a federation: the in-process simulation (default)."""

from fedloom.engine.inprocess import Federation, run

__all__ = ["Federation", "run"]
