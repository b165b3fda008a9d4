"""urbangeo: urban region profiling from satellite imagery and language (UrbanCLIP).

Importing the package is cheap and torch-free; the model lives in :mod:`urbangeo.model`.
"""

__version__ = "0.1.0"
