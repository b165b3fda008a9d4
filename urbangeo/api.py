"""The Python API: one function per ``urbangeo`` command, with the same names and defaults.

Path in, path out, like the CLI: each function reads the files it is given, writes its outputs
atomically and returns what it did (the cells as written plus the library's reports), so a
script does exactly what the command line does. The click commands in :mod:`urbangeo.cli` only
parse options, call these functions and print ``result.lines()``; all the logic lives here or
below, so the two cannot drift.

    from urbangeo import api
    api.grid("city.geojson", output="cells.gpkg", indicators=["pop=worldpop.tif:sum"],
             imagery=["scene.tif"], bands=[3, 2, 1])
    api.caption("cells.gpkg")

Importing this module is cheap and torch-free: the geo and caption layers are imported by the
functions that use them. A default of ``None`` where the CLI shows a value (``cell_size``,
``min_valid_frac``, ``base_url``) means "the library's default", which is what the CLI shows.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from urbangeo.errors import DataError, InputError, RemoteError
from urbangeo.progress import SILENT, Progress

if TYPE_CHECKING:
    import geopandas as gpd

    from urbangeo.captions.run import CaptionReport
    from urbangeo.demo import DemoRun
    from urbangeo.geo.cells import CellsFile
    from urbangeo.geo.chips import ChipsReport
    from urbangeo.geo.indicators import IndicatorReport, IndicatorSpec
    from urbangeo.learn.evaluate import EvalReport
    from urbangeo.learn.predict import PredictReport
    from urbangeo.learn.pretrain import TrainReport
    from urbangeo.learn.similar import SimilarReport

__all__ = ["CaptionResult", "ChipsResult", "GridResult", "IndicatorsResult", "PredictResult",
           "RasterizeResult", "TrainResult", "caption", "chips", "demo", "evaluate", "grid",
           "indicators", "predict", "rasterize", "similar", "train"]

PathLike = str | os.PathLike[str]
VectorLayer = PathLike | tuple[PathLike, str | None]
"""``"PATH[:CATEGORY_FIELD]"``, a path object (no field) or a ``(path, field)`` pair."""


# ---- results ---------------------------------------------------------------------------------

@dataclass
class GridResult:
    """What :func:`grid` wrote: the cells file and the reports of the optional stages."""

    path: Path
    cells: CellsFile
    indicators: IndicatorReport | None = None
    chips: ChipsReport | None = None

    def lines(self) -> list[str]:
        meta = self.cells.metadata["grid"]
        size = (f"zoom {meta['zoom']}" if meta["scheme"] == "xyz"
                else f"{meta['cell_size_m']:g} m")
        lines = [f"{meta['n_cells']} cells ({size}, {meta['ground_cell_size_m']:g} m on the "
                 f"ground) in {meta['crs']}"]
        if self.indicators is not None:
            lines += indicator_lines(self.indicators)
        if self.chips is not None:
            lines.append(self.chips.summary())
        return [*lines, f"-> {self.path}"]


@dataclass
class ChipsResult:
    """What :func:`chips` did to the cells file at ``path``."""

    path: Path
    cells: CellsFile
    report: ChipsReport

    def lines(self) -> list[str]:
        return [self.report.summary()]


@dataclass
class IndicatorsResult:
    """What :func:`indicators` added to the cells file at ``path``."""

    path: Path
    cells: CellsFile
    report: IndicatorReport

    def lines(self) -> list[str]:
        return indicator_lines(self.report)


@dataclass
class CaptionResult:
    """What :func:`caption` wrote; cells that failed are in ``report.failures``."""

    path: Path
    cells: CellsFile
    report: CaptionReport

    def lines(self) -> list[str]:
        lines = [f"{self.path}: {self.report.summary()}"]
        if self.report.rule_hits:
            hits = ", ".join(f"{rule} {n}" for rule, n in self.report.rule_hits.items())
            lines.append(f"refinement removed: {hits}")
        return lines

    def raise_for_failures(self) -> None:
        """Raise when any cell failed (the CLI's non-zero exit); the others are already saved.

        A server that kept failing is a :class:`RemoteError`; a local backend's failure is a
        :class:`DataError`.
        """
        if not self.report.failures:
            return
        error = RemoteError if self.report.backend == "openai" else DataError
        cell_id, message = next(iter(self.report.failures.items()))
        raise error(f"{self.report.n_failed} cells failed (first: {cell_id}: {message}); their "
                    "captions are missing, the others are saved: rerun the same command to retry")


@dataclass
class RasterizeResult:
    """The COG :func:`rasterize` wrote (a ``.qml`` style lies beside it)."""

    path: Path
    columns: list[str]
    n_cells: int

    def lines(self) -> list[str]:
        return [f"{len(self.columns)} band(s) ({', '.join(self.columns)}) from {self.n_cells} "
                f"cells -> {self.path}"]


def indicator_lines(report: IndicatorReport) -> list[str]:
    """One line per indicator: coverage, and the total (sum) or mean (mean) over the cells."""
    lines = []
    for r in report.results:
        what = "total" if r.stat == "sum" else "area-weighted mean"
        units = f" {r.units}" if r.units else ""
        line = (f"{r.name} ({r.stat}): {r.n_with_values}/{r.n_cells} cells with values, "
                f"{what} {_number(r.cells_value)}{units}")
        if r.n_without_values:
            line += f"; {r.n_without_values} without data (NaN)"
        if r.n_partial:
            line += f"; {r.n_partial} partly covered"
        if r.raster_value_in_aoi is not None:
            line += f"; raster {what} inside the AOI {_number(r.raster_value_in_aoi)}{units}"
        lines.append(line)
    return lines


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.4g}"


# ---- commands --------------------------------------------------------------------------------

def grid(
    aoi: PathLike | None = None,
    *,
    output: PathLike,
    layer: str | None = None,
    bbox: str | Sequence[float] | None = None,
    bbox_crs: str = "EPSG:4326",
    crs: str | None = None,
    cell_size: float | None = None,
    scheme: str = "metric",
    zoom: int | None = None,
    min_overlap: float = 0.0,
    style_column: str | None = None,
    indicators: Sequence[str | IndicatorSpec] = (),
    imagery: PathLike | Sequence[PathLike] = (),
    tile_px: int = 256,
    bands: Sequence[int] | None = None,
    band_names: Sequence[str] | None = None,
    nir_band: int | None = None,
    store: PathLike | None = None,
    cache_dir: PathLike | None = None,
    workers: int = 4,
    max_connections: int = 4,
    min_valid_frac: float | None = None,
    overwrite: bool = False,
    progress: Progress = SILENT,
) -> GridResult:
    """Cover ``aoi`` (a vector file) or ``bbox`` with cells and write them to ``output``.

    With ``indicators`` and ``imagery`` it also does :func:`indicators` and :func:`chips`.
    The cells file is written (styled on ``style_column``) before chips are cut, so a run killed
    while cutting resumes with :func:`chips`. ``cell_size`` is in metres (default 1000) and is
    refused with ``scheme="xyz"``, whose tile size follows ``zoom``.
    """
    from urbangeo.geo.grid import build_grid
    from urbangeo.geo.indicators import add_indicators

    if aoi is None and bbox is None:
        raise InputError("give an AOI file or --bbox minx,miny,maxx,maxy "
                         "(see `urbangeo grid --help`)")
    if aoi is not None and bbox is not None:
        raise InputError("give either an AOI file or --bbox, not both")
    if scheme == "xyz" and cell_size is not None:
        raise InputError("--cell-size does not apply to --scheme xyz: the tile size follows "
                         "--zoom (each zoom level halves it)")
    output = Path(output)
    _check_output(output, overwrite, (".gpkg",), "a GeoPackage")
    specs = _indicator_specs(indicators)
    known = {"row", "col", *(spec.name for spec in specs)}
    if style_column is not None and style_column not in known:
        raise InputError(f"--style-column {style_column} is not a column grid writes: use one "
                         f"of {', '.join(sorted(known))}")
    if not isinstance(bbox, str | None):
        bbox = ",".join(repr(float(v)) for v in bbox)
    sizing = {} if cell_size is None else {"cell_size": cell_size}
    cf = build_grid(aoi, bbox=bbox, bbox_crs=bbox_crs, layer=layer, crs=crs, scheme=scheme,
                    zoom=zoom, min_overlap=min_overlap, progress=progress, **sizing)
    result = GridResult(output, cf)
    if specs:
        result.cells, result.indicators = add_indicators(result.cells, specs, progress=progress)
    _write_styled(result.cells, output, style_column)
    sources = _imagery(imagery)
    if sources:
        try:
            result.cells, result.chips = _cut_chips(
                result.cells, output, sources, tile_px=tile_px, bands=bands,
                band_names=band_names, nir_band=nir_band, store=store, cache_dir=cache_dir,
                workers=workers, max_connections=max_connections,
                min_valid_frac=min_valid_frac, overwrite=overwrite,
                progress=progress)
        except InputError:
            # A mistake in the imagery options is found before any chip is cut: leave no
            # cells file behind, so the corrected command runs without --overwrite.
            output.unlink(missing_ok=True)
            raise
    return result


def chips(
    cells: PathLike,
    imagery: PathLike | Sequence[PathLike],
    *,
    tile_px: int = 256,
    bands: Sequence[int] | None = None,
    band_names: Sequence[str] | None = None,
    nir_band: int | None = None,
    store: PathLike | None = None,
    cache_dir: PathLike | None = None,
    workers: int = 4,
    max_connections: int = 4,
    min_valid_frac: float | None = None,
    overwrite: bool = False,
    progress: Progress = SILENT,
) -> ChipsResult:
    """Cut one chip per cell of the cells file ``cells`` from ``imagery`` (rasters or XYZ URL
    templates; the first valid pixel wins). A rerun fills only the missing chips;
    ``overwrite`` starts a new chip store. ``min_valid_frac`` defaults to
    :data:`urbangeo.geo.chips.MIN_VALID_FRAC`."""
    from urbangeo.geo.cells import read_cells

    sources = _imagery(imagery)
    if not sources:
        raise InputError("give at least one --imagery SRC (a raster file or an XYZ URL)")
    path = Path(cells)
    cf, report = _cut_chips(read_cells(path), path, sources, tile_px=tile_px, bands=bands,
                            band_names=band_names, nir_band=nir_band, store=store,
                            cache_dir=cache_dir, workers=workers,
                            max_connections=max_connections,
                            min_valid_frac=min_valid_frac, overwrite=overwrite,
                            progress=progress)
    return ChipsResult(path, cf, report)


def indicators(cells: PathLike, indicators: Sequence[str | IndicatorSpec], *,
               progress: Progress = SILENT) -> IndicatorsResult:
    """Add one column per indicator (``"NAME=RASTER[:sum|mean]"`` or an
    :class:`~urbangeo.geo.indicators.IndicatorSpec`) to the cells file ``cells``; rerunning an
    indicator replaces its column."""
    from urbangeo.geo.cells import read_cells, write_cells
    from urbangeo.geo.indicators import add_indicators

    specs = _indicator_specs(indicators)
    if not specs:
        raise InputError("give at least one --indicator NAME=RASTER[:sum|mean]")
    path = Path(cells)
    cf, report = add_indicators(read_cells(path), specs, progress=progress)
    write_cells(path, cf)
    return IndicatorsResult(path, cf, report)


def caption(
    cells: PathLike,
    backend: str = "describe",
    *,
    model: str | None = None,
    base_url: str | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    prompt_file: PathLike | None = None,
    workers: int | None = None,
    timeout: float = 120.0,
    max_retries: int = 4,
    device: str = "cpu",
    batch_size: int = 8,
    vector_context: Sequence[VectorLayer] = (),
    rules: PathLike | None = None,
    recaption: bool = False,
    progress: Progress = SILENT,
) -> CaptionResult:
    """Caption every cell of ``cells`` that has a chip and write the caption columns.

    ``backend`` is ``describe`` (embedded), ``openai`` (a chat-completions server at
    ``base_url``, default Ollama's) or ``hf`` (a local model directory in ``model``).
    ``vector_context`` layers are counted per cell into describe's captions; ``rules`` adds
    refinement rules. ``workers`` defaults to 4 for openai and 1 otherwise. Captions are cached,
    so a rerun asks the backend only for what is missing. Failed cells do not raise: see
    :meth:`CaptionResult.raise_for_failures`.
    """
    from urbangeo.captions.refine import load_rules
    from urbangeo.captions.registry import build_captioner
    from urbangeo.captions.run import caption_cells
    from urbangeo.geo.cells import read_cells, write_cells

    if vector_context and backend != "describe":
        raise InputError("--vector-context is used by the describe backend only: drop it or use "
                         "--backend describe")
    path = Path(cells)
    cf = read_cells(path)
    refine_options = {"extra_rules": load_rules(rules)} if rules else {}
    captioner = build_captioner(backend, model=model, base_url=base_url, api_key_env=api_key_env,
                                prompt_file=prompt_file, timeout=timeout, max_retries=max_retries,
                                device=device, batch_size=batch_size)
    context = _vector_context(cf.cells, vector_context, progress)
    updated, report = caption_cells(cf, path, captioner,
                                    workers=workers or (4 if backend == "openai" else 1),
                                    refine_options=refine_options, recaption=recaption,
                                    context=context, progress=progress)
    write_cells(path, updated)
    return CaptionResult(path, updated, report)


def rasterize(cells: PathLike, columns: str | Sequence[str], output: PathLike, *,
              ramp: str = "viridis", overwrite: bool = False,
              progress: Progress = SILENT) -> RasterizeResult:
    """Write numeric ``columns`` of ``cells`` as a Cloud-Optimized GeoTIFF (one band per
    column, one pixel per cell) with a QGIS ``.qml`` style beside it."""
    from urbangeo.geo.cells import read_cells
    from urbangeo.geo.rasterize import write_cell_raster

    output = Path(output)
    _check_output(output, overwrite, (".tif", ".tiff"), "a Cloud-Optimized GeoTIFF")
    columns = [columns] if isinstance(columns, str) else list(columns)
    cf = read_cells(cells)
    path = write_cell_raster(cf, columns, output, ramp=ramp, progress=progress)
    return RasterizeResult(path, columns, len(cf.cells))


def demo(output: PathLike = Path("outputs"), seed: int = 0, overwrite: bool = False, *,
         epochs: int | None = None, eval_seeds: int = 3,
         eval_models: str | Sequence[str] | None = None, progress: Progress = SILENT,
         say: Callable[[str], None] | None = None) -> DemoRun:
    """Run the whole pipeline on a generated synthetic city in ``output`` (offline, minutes):
    grid, chips, captions, UrbanCLIP pretraining, predictions and the paper's evaluation.

    Each step's summary is passed to ``say`` as it finishes and kept in the returned run's
    ``lines``. ``epochs`` (default :data:`urbangeo.demo.EPOCHS`), ``eval_seeds`` and
    ``eval_models`` shorten the run.
    """
    from urbangeo.demo import EPOCHS, run_demo

    return run_demo(Path(output), seed=seed, overwrite=overwrite,
                    epochs=EPOCHS if epochs is None else epochs, eval_seeds=eval_seeds,
                    eval_models=_names(eval_models), progress=progress, say=say)


# ---- train (urbangeo.learn) ---------------------------------------------------------------

@dataclass
class TrainResult:
    """What :func:`train` wrote: the model directory and the run's report (grid trials too)."""

    path: Path
    report: TrainReport

    def lines(self) -> list[str]:
        return self.report.lines()


def train(
    cells: PathLike,
    output: PathLike,
    *,
    preset: str = "small",
    epochs: int = 10,
    batch_size: int = 32,
    lr: float = 5e-4,
    lambda_con: float = 1.0,
    lambda_lm: float = 1.0,
    caption_column: str = "caption",
    init_from: PathLike | None = None,
    tokenizer: PathLike | None = None,
    device: str = "auto",
    seed: int = 0,
    checkpoint_every: int = 200,
    val_frac: float = 0.1,
    image_size: int | None = None,
    grid_lr: Sequence[float] = (),
    grid_batch_size: Sequence[int] = (),
    grid_epochs: int | None = None,
    overwrite: bool = False,
    progress: Progress = SILENT,
) -> TrainResult:
    """Pretrain UrbanCLIP on the chips and captions of ``cells``; write the model to ``output``.

    Resumable: a killed run continues from its last checkpoint (``OUTPUT.partial/``) when the
    same call is made again. With ``grid_lr`` and/or ``grid_batch_size`` one trial per pair
    trains (``grid_epochs`` each, default ``epochs``) and the pair with the lowest validation
    loss is kept (paper §4.1.3). Other options: :class:`urbangeo.learn.train_options.TrainOptions`.
    """
    from urbangeo.learn.data import load_cell_data
    from urbangeo.learn.pretrain import grid_search, refuse_existing, train_model
    from urbangeo.learn.train_options import TrainOptions

    options = TrainOptions(
        preset=preset, epochs=epochs, batch_size=batch_size, lr=lr, lambda_con=lambda_con,
        lambda_lm=lambda_lm, caption_column=caption_column, val_frac=val_frac, seed=seed,
        device=device, checkpoint_every=checkpoint_every,
        init_from=None if init_from is None else str(init_from),
        tokenizer=None if tokenizer is None else str(tokenizer), image_size=image_size)
    options.validate()
    if grid_epochs is not None and not (grid_lr or grid_batch_size):
        raise InputError("--grid-epochs only applies to a grid search: add --grid-lr and/or "
                         "--grid-batch-size, or drop it")
    output = Path(output)
    refuse_existing(output, overwrite)  # before the chips are read
    data = load_cell_data(cells)
    if grid_lr or grid_batch_size:
        report = grid_search(data, output, options, lrs=grid_lr, batch_sizes=grid_batch_size,
                             trial_epochs=grid_epochs, overwrite=overwrite, progress=progress)
    else:
        report = train_model(data, output, options, overwrite=overwrite, progress=progress)
    return TrainResult(output, report)


# ---- predict (urbangeo.learn) ---------------------------------------------------------------

@dataclass
class PredictResult:
    """The predictions GeoPackage :func:`predict` wrote (and COGs), with the test metrics."""

    path: Path
    report: PredictReport

    def lines(self) -> list[str]:
        return self.report.lines()


def predict(cells: PathLike, model: PathLike, targets: str | Sequence[str], output: PathLike, *,
            raster_dir: PathLike | None = None, split: str = "random", seed: int = 0,
            batch_size: int = 64, device: str = "auto", overwrite: bool = False,
            progress: Progress = SILENT) -> PredictResult:
    """Predict ``targets`` for every cell of ``cells`` from the frozen image encoder of
    ``model`` (a directory written by :func:`train`): embeddings (cached beside the cells
    file) -> one MLP probe per target fitted on the ``split``'s train cells -> a GeoPackage
    layer ``predictions`` with every cell, plus one COG per target in ``raster_dir``."""
    from urbangeo.learn.data import load_cell_data
    from urbangeo.learn.predict import predict_cells

    targets = [targets] if isinstance(targets, str) else list(targets)
    report = predict_cells(load_cell_data(cells), Path(model), targets, Path(output),
                           raster_dir=Path(raster_dir) if raster_dir else None, split=split,
                           seed=seed, batch_size=batch_size, device=device, overwrite=overwrite,
                           progress=progress)
    return PredictResult(report.output, report)


# ---- evaluate (urbangeo.learn) ---------------------------------------------------------------

def evaluate(
    cells: PathLike | None,
    output_dir: PathLike,
    *,
    models: str | Sequence[str] | None = None,
    targets: str | Sequence[str] | None = None,
    seeds: int = 3,
    splits: str | Sequence[str] = ("random", "blocks"),
    epochs: int = 10,
    preset: str = "tiny",
    batch_size: int = 32,
    model: PathLike | None = None,
    train_on: PathLike | None = None,
    test_on: PathLike | None = None,
    pretrain_per_seed: bool = False,
    block_size: float | None = None,
    resnet_weights: PathLike | None = None,
    device: str = "auto",
    overwrite: bool = False,
    progress: Progress = SILENT,
) -> EvalReport:
    """The paper's Table 2 and ablations on ``cells``, or its transfer test (``train_on`` ->
    ``test_on``, no ``cells``): evaluation.md / .csv / _r2.png in ``output_dir``.

    ``models`` (default all: the seven baselines, three ablations, UrbanCLIP) and ``targets``
    (default every indicator) take lists or comma-separated strings. ``model`` is a trained
    model directory the UrbanCLIP row uses instead of pretraining one. Fitted models and
    features are kept in ``output_dir``, so the same call after a crash resumes; ``overwrite``
    starts over.
    """
    from urbangeo.learn.data import load_cell_data
    from urbangeo.learn.evaluate import EvalOptions, evaluate_transfer
    from urbangeo.learn.evaluate import evaluate as evaluate_cells

    if (train_on is None) != (test_on is None):
        raise InputError("the transfer test needs both --train-on and --test-on")
    if (cells is None) == (train_on is None):
        raise InputError("give either a CELLS file, or --train-on A.gpkg --test-on B.gpkg for "
                         "the transfer test, not both")
    options = EvalOptions(
        models=_names(models), targets=_names(targets), seeds=seeds,
        splits=_names(splits) or (), epochs=epochs, preset=preset, batch_size=batch_size,
        model_dir=None if model is None else Path(model), pretrain_per_seed=pretrain_per_seed,
        block_size_m=block_size,
        resnet_weights=None if resnet_weights is None else Path(resnet_weights),
        device=device).checked()
    if train_on is not None:
        return evaluate_transfer(load_cell_data(train_on), load_cell_data(test_on),
                                 Path(output_dir), options, overwrite=overwrite,
                                 progress=progress)
    return evaluate_cells(load_cell_data(cells), Path(output_dir), options, overwrite=overwrite,
                          progress=progress)


def _names(value: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """``"a,b"``, ``["a", "b"]`` or ``["a,b"]`` -> ``("a", "b")``; nothing -> ``None``."""
    if value is None:
        return None
    items = [value] if isinstance(value, str) else list(value)
    names = tuple(n.strip() for item in items for n in item.split(",") if n.strip())
    return names or None



# ---- similar (urbangeo.learn) ---------------------------------------------------------------

def similar(cells: PathLike | Sequence[PathLike], model: PathLike, cell_id: str, *, k: int = 10,
            output: PathLike | None = None, other_files_only: bool = False,
            batch_size: int = 64, device: str = "auto", overwrite: bool = False,
            progress: Progress = SILENT) -> SimilarReport:
    """The ``k`` cells of ``cells`` (one cells file or several, e.g. other cities) most similar
    to ``cell_id`` by cosine of ``model``'s image embeddings (paper §4.4.2). The query is taken
    from the first file that has it. ``output`` (a .gpkg) gets the query and its matches as a
    layer in EPSG:4326. Embeddings are cached beside each cells file."""
    from urbangeo.learn.data import load_cell_data
    from urbangeo.learn.similar import similar as similar_cells

    paths = [cells] if isinstance(cells, str | os.PathLike) else list(cells)
    if output is not None:
        output = Path(output)
        _check_output(output, overwrite, (".gpkg",), "a GeoPackage")
    return similar_cells([load_cell_data(p) for p in paths], Path(model), cell_id, k=k,
                         other_files_only=other_files_only, output=output,
                         batch_size=batch_size, device=device, progress=progress)



# ---- shared steps ----------------------------------------------------------------------------

def _check_output(path: Path, overwrite: bool, suffixes: tuple[str, ...], kind: str) -> None:
    """Refuse a wrong output name or an unwanted overwrite before any work is done."""
    if path.suffix.lower() not in suffixes:
        raise InputError(f"output {path} must end in {suffixes[0]} ({kind})")
    if path.exists() and not overwrite:
        raise InputError(f"{path} already exists: pass --overwrite to replace it, or choose "
                         "another -o")


def _write_styled(cf: CellsFile, output: Path, style_column: str | None) -> None:
    """Style the cells (graduated on ``style_column`` if given) and write them atomically."""
    from urbangeo.geo.cells import write_cells
    from urbangeo.geo.styles import cells_style

    cf.style_qml = cells_style(cf.cells, style_column)
    write_cells(output, cf)


def _indicator_specs(values: Sequence[str | IndicatorSpec]) -> list[IndicatorSpec]:
    from urbangeo.geo.indicators import IndicatorSpec

    if isinstance(values, str):
        values = [values]
    return [v if isinstance(v, IndicatorSpec) else IndicatorSpec.parse(v) for v in values]


def _imagery(imagery: PathLike | Sequence[PathLike]) -> list[str]:
    if isinstance(imagery, str | os.PathLike):
        imagery = [imagery]
    return [os.fspath(source) for source in imagery]


def _cut_chips(cf: CellsFile, cells_path: Path, sources: list[str], *,
               store: PathLike | None, cache_dir: PathLike | None,
               min_valid_frac: float | None, progress: Progress,
               **options: Any) -> tuple[CellsFile, ChipsReport]:
    """Cut the missing chips and rewrite the cells file with ``has_chip`` and the metadata."""
    from urbangeo.geo.cells import write_cells
    from urbangeo.geo.chips import MIN_VALID_FRAC, cut_chips

    cf, report = cut_chips(
        cf, cells_path, sources, store_path=Path(store) if store else None,
        cache_dir=Path(cache_dir) if cache_dir else None,
        min_valid_frac=MIN_VALID_FRAC if min_valid_frac is None else min_valid_frac,
        progress=progress, **options)
    write_cells(cells_path, cf)
    return cf, report


def split_vector_spec(spec: str) -> tuple[str, str | None]:
    """``PATH[:FIELD]``; a colon inside a path (``C:\\data``) is not a field separator."""
    path, sep, name = spec.rpartition(":")
    if not sep or not name or any(ch in name for ch in "/\\") or len(path) < 2:
        return spec, None
    return path, name


def _vector_context(cells: gpd.GeoDataFrame, layers: Sequence[VectorLayer],
                    progress: Progress) -> dict[str, dict[str, Any]]:
    """cell id -> {layer name (file stem): counts} for each vector layer."""
    from urbangeo.geo.context import vector_context

    context: dict[str, dict[str, Any]] = {}
    for layer in layers:
        if isinstance(layer, tuple):
            path, category = os.fspath(layer[0]), layer[1]
        elif isinstance(layer, str):
            path, category = split_vector_spec(layer)
        else:
            path, category = os.fspath(layer), None
        for cell_id, record in vector_context(cells, path, category_field=category,
                                              progress=progress).items():
            context.setdefault(cell_id, {})[Path(path).stem] = record
    return context
