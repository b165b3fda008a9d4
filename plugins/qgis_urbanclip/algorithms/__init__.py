"""One Processing algorithm per urbangeo command, plus "Check installation"."""

from .caption import CaptionAlgorithm
from .check import CheckInstallationAlgorithm
from .grid import GridAlgorithm
from .predict import PredictAlgorithm
from .similar import SimilarAlgorithm
from .train import TrainAlgorithm

ALGORITHMS = (GridAlgorithm, CaptionAlgorithm, TrainAlgorithm, PredictAlgorithm,
              SimilarAlgorithm, CheckInstallationAlgorithm)
