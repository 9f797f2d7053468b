"""Congestion controllers, selected by name (``SeamConfig.congestion``)."""

from __future__ import annotations

from seam.congestion import cubic, newreno
from seam.congestion.base import CongestionController, available, create, register

__all__ = ["CongestionController", "available", "create", "cubic", "newreno", "register"]
