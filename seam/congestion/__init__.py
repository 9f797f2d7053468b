"""Congestion controllers, selected by name (``SeamConfig.congestion``)."""

from __future__ import annotations

from seam.congestion import bbr, cubic, newreno
from seam.congestion.base import CongestionController, available, create, register

__all__ = ["CongestionController", "available", "bbr", "create", "cubic", "newreno", "register"]
