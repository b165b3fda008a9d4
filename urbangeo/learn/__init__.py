"""The learning stages: pretraining UrbanCLIP, embedding cells, probing indicators, baselines
and the paper's evaluation. They glue the geo and caption layers to :mod:`urbangeo.model`."""
