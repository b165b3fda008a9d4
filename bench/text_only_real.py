"""The "Text only" row of ``urbangeo evaluate`` on the paper's REAL captions and indicators.

The UrbanCLIP dataset (``../shared/data/urbanclip``) ships LLaMA-Adapter captions and per-tile
carbon, population and GDP for Beijing and Guangzhou, but no georeferenced imagery, so only the
captions-alone row of Table 2 can be run on it. This script runs exactly that row's pipeline:
:class:`urbangeo.learn.text_features.TextOnlyFeatures` (TF-IDF 1-2-grams -> SVD, fitted
without labels on every tile) -> :func:`urbangeo.learn.probe.fit_probe` on log1p targets,
random and spatial-block 60/20/20 splits from :func:`urbangeo.learn.splits.split_cells`, for
the raw captions and for the same captions after :func:`urbangeo.captions.refine.refine`.

Tiles are placed by their WGS84 corner point projected to UTM (blocks of 4 x 4 tiles, ~3.1 km).
Beijing's and Guangzhou's GDP hold fill rows of exactly 10000.0: they are left out (NaN).

    .venv/bin/python bench/text_only_real.py [--seeds 3] [--cities Beijing,Guangzhou]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
from pyproj import Transformer

from urbangeo._atomic import write_text_atomic
from urbangeo.captions.refine import refine
from urbangeo.learn.probe import fit_probe
from urbangeo.learn.splits import split_cells
from urbangeo.learn.text_features import TextOnlyFeatures

sys.path.insert(0, str(Path(__file__).resolve().parent))
from caption_probe import GDP_FILL, PIXEL_SIZE_M, TARGETS, load_captions  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "urbanclip"
UTM = {"Beijing": "EPSG:32650", "Guangzhou": "EPSG:32649", "Shanghai": "EPSG:32651"}
TILE_M = 785.0  # Baidu zoom-16 tile side on the ground, about
RIDGE_FLOOR = {"carbon": 0.43, "population": 0.44, "gdp": 0.41}  # ../shared/data/README.md


def load_tiles(data_dir: Path, city: str) -> tuple[list[str], dict[str, np.ndarray], np.ndarray]:
    """Images with both a caption and indicators: raw captions, targets, projected xy."""
    captions = load_captions(data_dir / "captions" / f"{city}_captions.json")
    to_utm = Transformer.from_crs("EPSG:4326", UTM[city], always_xy=True)
    texts, xy, values = [], [], {name: [] for name in TARGETS}
    with (data_dir / "indicators" / f"{city}.csv").open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["satellite_img_name"] not in captions:
                continue
            lat, lon = (float(v) for v in row["WGS84 coordinate"].strip("()").split(","))
            xy.append(to_utm.transform(lon, lat))
            texts.append(captions[row["satellite_img_name"]])
            for name, column in TARGETS.items():
                value = float(row[column])
                values[name].append(np.nan if name == "gdp" and value == GDP_FILL else value)
    return texts, {k: np.asarray(v) for k, v in values.items()}, np.asarray(xy)


def run_city(data_dir: Path, city: str, seeds: list[int]) -> list[dict]:
    raw, targets, xy = load_tiles(data_dir, city)
    refined = [refine(text, PIXEL_SIZE_M).text for text in raw]
    rows = []
    for variant, texts in (("raw", raw), ("refined", refined)):
        extractor = TextOnlyFeatures(seed=0)
        extractor.fit_texts(texts)
        features = extractor.transform_texts(texts)
        for kind in ("random", "blocks"):
            for seed in seeds:
                split = split_cells(xy, kind, seed, block_size_m=4 * TILE_M)
                for name, y in targets.items():
                    m = fit_probe(features, y, split, seed=seed).metrics("test")
                    rows.append({"city": city, "captions": variant, "split": kind,
                                 "seed": seed, "indicator": name, "r2": m.r2, "rmse": m.rmse,
                                 "mae": m.mae, "n_test": m.n, "n_tiles": len(texts)})
    return rows


def table(rows: list[dict]) -> list[str]:
    lines = ["| city | split | captions | " + " | ".join(f"{t} R²" for t in TARGETS) + " |",
             "|---|---|---|" + "---|" * len(TARGETS)]
    keys = sorted({(r["city"], r["split"], r["captions"]) for r in rows},
                  key=lambda k: (k[0], k[1] != "random", k[2]))
    for city, split, variant in keys:
        cells = []
        for name in TARGETS:
            r2 = [r["r2"] for r in rows if (r["city"], r["split"], r["captions"],
                                            r["indicator"]) == (city, split, variant, name)]
            cells.append(f"{np.mean(r2):.3f} ± {np.std(r2, ddof=1):.3f}")
        lines.append(f"| {city} | {split} | {variant} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--cities", default="Beijing,Guangzhou")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    if not args.data_dir.is_dir():
        sys.exit(f"error: {args.data_dir} is absent (the UrbanCLIP dataset; see "
                 "../shared/data/README.md)")
    started = time.perf_counter()
    rows = [row for city in args.cities.split(",")
            for row in run_city(args.data_dir, city.strip(), list(range(args.seeds)))]
    n = {r["city"]: r["n_tiles"] for r in rows}
    lines = ["# Text-only row on the paper's real captions (urbangeo evaluate's pipeline)", "",
             "TF-IDF (1-2-grams) -> SVD (64) fitted without labels on every tile -> MLP probe "
             "(urbangeo.learn.probe) on log1p targets; 60/20/20 splits, random or 4 x 4-tile "
             f"spatial blocks; mean ± std (ddof=1) test R² over {args.seeds} seeds. Tiles: "
             + ", ".join(f"{c} {k}" for c, k in n.items()) + ". GDP fill rows (10000.0) "
             "left out. For scale, the data README's TF-IDF ridge floor (80/20 random split) "
             "for Beijing: " + ", ".join(f"{k} {v}" for k, v in RIDGE_FLOOR.items()) + ".", "",
             *table(rows), "", f"`{' '.join(sys.argv)}` in {time.perf_counter() - started:.0f} s"]
    print("\n".join(lines))
    write_text_atomic(args.out / "text_only_real.md", "\n".join(lines) + "\n")
    write_text_atomic(args.out / "text_only_real.json", json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
