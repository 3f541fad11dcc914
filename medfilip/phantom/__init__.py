"""Phantom chest-radiograph simulator: ``render_phantom(findings, size=, seed=)`` -> uint8 image.

Kept light (medfilip.pipeline.config imports ``medfilip.phantom.settings``): the renderer is imported on
first use of its names.
"""

from __future__ import annotations

__all__ = ["APPEARANCE", "Anatomy", "Finding", "finding_region", "phantom_scene", "render_phantom", "severity_scale"]


def __getattr__(name: str):
    if name in ("Finding", "finding_region", "phantom_scene", "render_phantom", "severity_scale"):
        from medfilip.phantom import render

        return getattr(render, name)
    if name == "APPEARANCE":
        from medfilip.phantom.appearance import APPEARANCE

        return APPEARANCE
    if name == "Anatomy":
        from medfilip.phantom.anatomy import Anatomy

        return Anatomy
    raise AttributeError(f"module 'medfilip.phantom' has no attribute {name!r}")
