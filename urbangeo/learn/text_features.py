"""The "Text only" baseline: what the captions alone say about a cell, without any pixels.

It answers the question UrbanCLIP raises: is the gain from fusing text into the image encoder,
or would the captions have done it alone? TF-IDF over word 1- and 2-grams, then a seeded
truncated SVD (latent semantic analysis) to a dense, ridge-friendly vector.
"""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer

from urbangeo.errors import ModelError
from urbangeo.learn.data import CellData
from urbangeo.progress import SILENT, Progress

#: Upper bound on the feature size; a small corpus caps it lower (see ``TextOnlyFeatures.fit``).
TEXT_COMPONENTS = 64


class TextOnlyFeatures:
    """TF-IDF (1-2-grams, sublinear tf) -> TruncatedSVD, both fitted on the fit cells' captions."""

    key = "text-only"
    label = "Text only"

    def __init__(self, *, seed: int = 0, caption_column: str = "caption",
                 n_components: int = TEXT_COMPONENTS) -> None:
        self.seed = seed
        self.caption_column = caption_column
        self.n_components = n_components
        self.vectorizer: TfidfVectorizer | None = None
        self.svd: TruncatedSVD | None = None

    def fit(self, data: CellData, *, progress: Progress = SILENT) -> None:
        progress.start(self.label, None)
        self.fit_texts(data.caption_texts(self.caption_column))
        progress.finish()

    def transform(self, data: CellData, *, progress: Progress = SILENT) -> np.ndarray:
        return self.transform_texts(data.caption_texts(self.caption_column))

    def fit_texts(self, texts: list[str]) -> None:
        """Fit on captions that do not come from a cells file (e.g. the paper's own corpus)."""
        vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
        tfidf = vectorizer.fit_transform(texts)
        # SVD needs fewer components than both terms and documents.
        k = max(1, min(self.n_components, tfidf.shape[1] - 1, tfidf.shape[0] - 1))
        self.svd = TruncatedSVD(n_components=k, random_state=self.seed).fit(tfidf)
        self.vectorizer = vectorizer

    def transform_texts(self, texts: list[str]) -> np.ndarray:
        if self.vectorizer is None or self.svd is None:
            raise ModelError("the text-only baseline is not fitted yet: call fit() first")
        return self.svd.transform(self.vectorizer.transform(texts)).astype(np.float32)
