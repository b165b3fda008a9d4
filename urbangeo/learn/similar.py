"""Cells that look alike to the model, within and across cities (paper §4.4.2).

One cell's image embedding is compared by cosine with every cell of one or more cells files;
the closest come back with their captions and indicators, so a reader can check whether what
the model finds similar is also similar in words and numbers. Embeddings are cached beside
each cells file (the same cache ``urbangeo predict`` uses), so asking again is instant.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from urbangeo._atomic import atomic_path
from urbangeo.errors import InputError
from urbangeo.learn.data import CellData
from urbangeo.learn.embed import default_cache, embed_cells
from urbangeo.learn.report import sample_name
from urbangeo.progress import SILENT, Progress

LAYER = "similar"
CAPTION_CHARS = 100
"""Captions are cut to this many characters in :meth:`SimilarReport.lines` (not in the file)."""


@dataclass(frozen=True)
class Match:
    """One cell of the answer; ``rank`` 0 is the query itself (cosine 1 by definition)."""

    rank: int
    file: str
    file_index: int
    position: int
    cell_id: str
    cosine: float
    caption: str
    indicators: dict[str, float] = field(default_factory=dict)


@dataclass
class SimilarReport:
    """The query cell and its ``k`` nearest cells by cosine of the image embeddings."""

    query: Match
    matches: list[Match]
    output: Path | None = None

    def lines(self) -> list[str]:
        lines = [f"query {self.query.cell_id} ({self.query.file}): "
                 f"{_indicator_text(self.query)}", f"  {_cut(self.query.caption)}"]
        for m in self.matches:
            lines.append(f"{m.rank:>3}. cosine {m.cosine:.3f}  {m.cell_id} ({m.file}): "
                         f"{_indicator_text(m)}")
            lines.append(f"     {_cut(m.caption)}")
        if self.output is not None:
            lines.append(f"-> {self.output} (layer {LAYER}, EPSG:4326)")
        return lines


def _cut(text: str) -> str:
    return text if len(text) <= CAPTION_CHARS else text[:CAPTION_CHARS - 3] + "..."


def _indicator_text(m: Match) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in m.indicators.items()) or "no indicators"


def file_names(datas: Sequence[CellData]) -> list[str]:
    """Short names of the cells files, made unique with ``#n`` where two would coincide."""
    names = [sample_name(d.cells_path) for d in datas]
    return [name if names.count(name) == 1 else f"{name}#{i + 1}"
            for i, name in enumerate(names)]


def find_cell(datas: Sequence[CellData], cell_id: str) -> tuple[int, int]:
    """(file index, position) of ``cell_id`` in the first file that has it with a chip; an
    InputError naming the closest ids otherwise."""
    for i, data in enumerate(datas):
        if cell_id in data.cell_ids:
            return i, data.cell_ids.index(cell_id)
    known = [cid for data in datas for cid in data.cell_ids]
    close = difflib.get_close_matches(cell_id, known, n=5, cutoff=0.5)
    hint = f"close ids: {', '.join(close)}" if close else f"ids look like {known[0]}"
    files = ", ".join(str(d.cells_path) for d in datas)
    raise InputError(f"no cell '{cell_id}' with a chip in {files} ({hint}); cells without a "
                     "chip have no embedding")


def _match(data: CellData, name: str, file_index: int, position: int, rank: int,
           cosine: float) -> Match:
    captions = data.captions.get("caption") or [""] * len(data)
    return Match(rank, name, file_index, position, data.cell_ids[position], cosine,
                 captions[position],
                 {k: float(v[position]) for k, v in data.targets.items()})


def similar(datas: Sequence[CellData], model_dir: str | Path, cell_id: str, k: int = 10, *,
            other_files_only: bool = False, output: Path | None = None, batch_size: int = 64,
            device: str = "auto", progress: Progress = SILENT) -> SimilarReport:
    """The ``k`` cells of ``datas`` whose embedding is closest (cosine) to ``cell_id``'s.

    The query comes from the first file that has ``cell_id``; it is never its own match, but
    an identical cell elsewhere (another copy of the file) is, with cosine 1.
    ``other_files_only`` leaves the query's own file out, as the paper's cross-city search
    does. With ``output`` the query and matches are written as a GeoPackage layer in EPSG:4326.
    """
    if k < 1:
        raise InputError(f"k must be at least 1, got {k}")
    if not datas:
        raise InputError("give at least one cells file to search")
    q_file, q_pos = find_cell(datas, cell_id)
    if other_files_only and len(datas) < 2:
        raise InputError("other_files_only needs a second cells file to search in")
    embeddings = []
    for data in datas:
        emb = embed_cells(model_dir, data, batch_size=batch_size, device=device,
                          cache=default_cache(data.cells_path), progress=progress)
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        embeddings.append(emb / np.where(norms > 0, norms, 1.0))
    query = embeddings[q_file][q_pos]
    names = file_names(datas)
    searched = [i for i in range(len(datas)) if not (other_files_only and i == q_file)]
    cosine = np.concatenate([embeddings[i] @ query for i in searched])
    file_of = np.concatenate([np.full(len(datas[i]), i) for i in searched])
    position = np.concatenate([np.arange(len(datas[i])) for i in searched])
    keep = ~((file_of == q_file) & (position == q_pos))
    cosine, file_of, position = cosine[keep], file_of[keep], position[keep]
    order = np.argsort(-cosine, kind="stable")[:k]  # stable: file order breaks ties
    matches = [_match(datas[file_of[j]], names[file_of[j]], int(file_of[j]), int(position[j]),
                      rank, min(1.0, float(cosine[j])))
               for rank, j in enumerate(order, 1)]
    report = SimilarReport(_match(datas[q_file], names[q_file], q_file, q_pos, 0, 1.0), matches)
    if output is not None:
        write_similar(output, datas, report)
        report.output = Path(output)
    return report


def write_similar(output: Path, datas: Sequence[CellData], report: SimilarReport) -> None:
    """The query (rank 0) and its matches as one GeoPackage layer in EPSG:4326 (the files may be
    in different CRSs), with file, cell_id, rank, cosine, caption and indicator columns."""
    import geopandas as gpd
    import pandas as pd

    frames = []
    for m in [report.query, *report.matches]:
        data = datas[m.file_index]
        cells = data.cells_file.cells
        geometry = cells.geometry.iloc[[int(data.index[m.position])]].to_crs("EPSG:4326")
        frames.append(gpd.GeoDataFrame(
            {"rank": [m.rank], "cosine": [m.cosine], "file": [m.file], "cell_id": [m.cell_id],
             "caption": [m.caption], **{k: [v] for k, v in m.indicators.items()}},
            geometry=geometry.to_numpy(), crs="EPSG:4326"))
    frame = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs="EPSG:4326")
    with atomic_path(output) as tmp:
        frame.to_file(tmp, layer=LAYER, driver="GPKG", engine="pyogrio")

