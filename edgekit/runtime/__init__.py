"""Run a bundle: load it on the best backend here, classify frames, read cameras and files, write
results, serve a live view, measure speed. Device tier: no torch."""

from __future__ import annotations
