"""``urbangeo caption`` end to end on a real cells GeoPackage + chip store made in tmp_path:
the describe backend offline, and the openai backend against the local protocol double."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import Point

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "captions"))  # shared test helpers
from chat_double import ChatDouble, serve  # noqa: E402
from test_cache_and_run import COVERS, NO_CHIP, make_cells  # noqa: E402

from urbangeo.captions.cache import default_cache_path  # noqa: E402
from urbangeo.cli.main import main  # noqa: E402
from urbangeo.geo.cells import read_cells  # noqa: E402

KEY = "sk-cli-secret-0987654321"


def _urbangeo(*args: str) -> int:
    try:
        main(["--progress", "none", *map(str, args)])
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_help_teaches_the_servers(capsys) -> None:
    assert _urbangeo("caption", "--help") == 0
    out = capsys.readouterr().out
    for needle in ("Ollama", "llama-server", "vllm serve", "--api-key-env", "--vector-context"):
        assert needle in out


def test_describe_captions_resume_and_vector_context(tmp_path: Path, capsys) -> None:
    path = make_cells(tmp_path)
    assert _urbangeo("caption", path) == 0
    out = capsys.readouterr().out
    assert "5 captioned, 0 from cache, 1 without chip skipped, 0 failed" in out
    cells = read_cells(path).cells.set_index("cell_id")
    assert cells.loc[list(COVERS), "caption"].notna().all()
    assert pd_isna(cells.loc[NO_CHIP, "caption"])

    assert _urbangeo("caption", path) == 0
    assert "0 captioned, 5 from cache" in capsys.readouterr().out

    # a POI layer changes what describe can say, so it recaptions; r0c1 gets two cafes
    pois = tmp_path / "pois.gpkg"
    gpd.GeoDataFrame({"amenity": ["cafe", "cafe", "school"]},
                     geometry=[Point(1500, 500), Point(1600, 400), Point(2500, 500)],
                     crs="EPSG:32610").to_file(pois)
    assert _urbangeo("caption", path, "--vector-context", f"{pois}:amenity") == 0
    assert "5 captioned" in capsys.readouterr().out
    assert "2 cafes" in read_cells(path).cells.set_index("cell_id").loc["r0c1", "caption_raw"]


def test_extra_rules_refine_again_without_backend_calls(tmp_path: Path, capsys) -> None:
    path = make_cells(tmp_path)
    assert _urbangeo("caption", path) == 0
    water_cell = read_cells(path).cells.set_index("cell_id").loc["r0c0"]
    assert "water" in water_cell["caption"]
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps([{"name": "no_water", "action": "remove-sentence",
                                  "pattern": r"\bwater\b"}]))
    capsys.readouterr()
    assert _urbangeo("caption", path, "--rules", rules) == 0
    out = capsys.readouterr().out
    assert "0 captioned, 5 from cache" in out and "no_water" in out
    cf = read_cells(path)
    water_cell = cf.cells.set_index("cell_id").loc["r0c0"]
    assert "water" in water_cell["caption_raw"] and "water" not in water_cell["caption"]
    assert cf.metadata["captions"]["refine"] == {"extra_rules": ["no_water"]}


def pd_isna(value: object) -> bool:
    return value is None or value != value


def test_openai_failed_cell_exits_non_zero_and_rerun_fills_it(tmp_path: Path, capsys,
                                                              monkeypatch) -> None:
    monkeypatch.setenv("CAPTION_TEST_KEY", KEY)
    path = make_cells(tmp_path)
    failing_rgb = np.array(COVERS["r0c2"])
    double = ChatDouble(model="vlm", api_key=KEY, expected_px=16, delay_s=0.05,
                        fail_if=lambda img: bool((img[0, 0] == failing_rgb).all()))
    args = ["caption", path, "--backend", "openai", "--model", "vlm", "--api-key-env",
            "CAPTION_TEST_KEY", "--max-retries", "1", "--timeout", "60", "--workers", "2"]
    with serve(double):
        code = _urbangeo(*args, "--base-url", double.url)
        first = capsys.readouterr()
        double.fail_if = None
        n_before = len(double.requests)
        assert _urbangeo(*args, "--base-url", double.url) == 0
        second = capsys.readouterr()
        n_second = len(double.requests)
        prompt = tmp_path / "prompt.txt"
        prompt.write_text("List the roads and rivers you can see.\n")
        assert _urbangeo(*args, "--base-url", double.url, "--prompt-file", prompt) == 0
    assert len(double.requests) - n_second == 5  # a new prompt recaptions every chip
    assert double.requests[-1]["messages"][-1]["content"][0]["text"].startswith("List the roads")
    assert double.problems == [] and double.max_in_flight <= 2  # --workers 2
    assert code == 3, first
    assert "1 cells failed (first: r0c2" in first.err and "rerun" in first.err, first
    assert "4 captioned" in first.out, first
    assert n_second - n_before == 1 and "1 captioned, 4 from cache" in second.out
    cells = read_cells(path).cells
    assert cells["caption_raw"].notna().sum() == 5
    assert set(cells["caption_backend"].dropna()) == {"openai"}
    for text in (first.out, first.err, second.out, second.err,
                 default_cache_path(path).read_text(), str(read_cells(path).metadata)):
        assert KEY not in text


def test_user_mistakes_are_one_line_errors(tmp_path: Path, capsys) -> None:
    path = make_cells(tmp_path)
    assert _urbangeo("caption", path, "--backend", "openai") == 2
    assert "needs --model" in capsys.readouterr().err
    assert _urbangeo("caption", path, "--backend", "hf", "--model", tmp_path / "nope") == 2
    assert "not a directory" in capsys.readouterr().err
    assert _urbangeo("caption", path, "--model", "llava") == 2
    assert "describe backend has no model" in capsys.readouterr().err
    assert _urbangeo("caption", path, "--backend", "openai", "--model", "m",
                     "--vector-context", "pois.gpkg") == 2
    assert "describe backend only" in capsys.readouterr().err
    assert _urbangeo("caption", tmp_path / "missing.gpkg") == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("spec,expected", [
    ("pois.gpkg", ("pois.gpkg", None)),
    ("pois.gpkg:amenity", ("pois.gpkg", "amenity")),
    ("C:\\data\\pois.gpkg", ("C:\\data\\pois.gpkg", None)),
    ("C:\\data\\pois.gpkg:amenity", ("C:\\data\\pois.gpkg", "amenity")),
])
def test_vector_context_spec_parsing(spec: str, expected: tuple[str, str | None]) -> None:
    from urbangeo.cli.caption import _split_spec

    assert _split_spec(spec) == expected


def test_sigkill_mid_run_loses_nothing_finished(tmp_path: Path) -> None:
    """A real `kill -9` of the CLI: the GeoPackage stays as it was, finished captions survive
    in the cache, and the rerun asks the server only for the rest."""
    path = make_cells(tmp_path)
    cache = default_cache_path(path)
    with serve(ChatDouble(model="vlm", delay_s=0.3)) as double:
        args = ["caption", str(path), "--backend", "openai", "--model", "vlm", "--workers", "1",
                "--base-url", double.url]
        proc = subprocess.Popen([sys.executable, "-m", "urbangeo.cli.main", "--progress", "none",
                                 *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None and (
                not cache.exists() or cache.read_text().count("\n") < 2):
            time.sleep(0.02)
        proc.kill()
        proc.wait()
        n_cached = cache.read_text().count("\n")
        assert 2 <= n_cached < 5
        assert "caption_raw" not in read_cells(path).cells.columns  # untouched, still readable
        n_before = len(double.requests)
        assert _urbangeo(*args) == 0
    assert len(double.requests) - n_before == 5 - n_cached
    assert read_cells(path).cells["caption_raw"].notna().sum() == 5
