"""The bundled sample: a procedural synthetic city (imagery, land use, indicator rasters, AOI).

It lets ``urbangeo demo`` run the whole pipeline offline on a fresh clone; nothing in it is real.
"""

from urbangeo.sample.synthetic_city import CLASSES, SampleCity, make_synthetic_city

__all__ = ["CLASSES", "SampleCity", "make_synthetic_city"]
