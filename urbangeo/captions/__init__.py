"""Captions: one description per cell from an image-to-text backend, then rule-based refinement.

The embedded ``describe`` backend needs no torch, weights or network.
"""
