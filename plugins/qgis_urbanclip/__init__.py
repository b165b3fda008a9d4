"""QGIS plugin "UrbanCLIP": the urbangeo pipeline as Processing algorithms.

The folder is ``qgis_urbanclip`` (not ``urbangeo``) so that it never shadows the urbangeo
library on QGIS's ``sys.path``; nothing here imports urbangeo or torch: every algorithm runs
the ``urbangeo`` command line in a subprocess.
"""


def classFactory(iface):
    """Entry point QGIS calls with its interface object when it loads the plugin."""
    from .plugin import UrbanClipPlugin

    return UrbanClipPlugin(iface)
