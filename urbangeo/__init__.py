"""urbangeo: urban region profiling from satellite imagery and language (UrbanCLIP).

Importing the package is cheap and torch-free; the model lives in :mod:`urbangeo.model`.
The Python API mirroring the CLI is :mod:`urbangeo.api` (``from urbangeo import api``). Its
functions are not re-exported here: names such as ``demo`` are also submodules, and a
submodule import would silently replace a re-exported function.
"""

__version__ = "0.1.0"
