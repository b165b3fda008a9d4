"""``urbangeo caption``: describe each cell's chip in words, then refine the text (paper §3.1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from urbangeo.cli.progress import progress_of, say
from urbangeo.errors import DataError, InputError, RemoteError
from urbangeo.progress import Progress


def _vector_context(cells: Any, specs: tuple[str, ...],
                    progress: Progress) -> dict[str, dict[str, Any]]:
    """cell id -> {layer name (file stem): counts} for each ``PATH[:CATEGORY_FIELD]``."""
    from urbangeo.geo.context import vector_context

    context: dict[str, dict[str, Any]] = {}
    for spec in specs:
        path, field = _split_spec(spec)
        for cell_id, record in vector_context(cells, path, category_field=field,
                                              progress=progress).items():
            context.setdefault(cell_id, {})[Path(path).stem] = record
    return context


def _split_spec(spec: str) -> tuple[str, str | None]:
    """``PATH[:FIELD]``; a colon inside a path (``C:\\data``) is not a field separator."""
    path, sep, field = spec.rpartition(":")
    if not sep or not field or any(ch in field for ch in "/\\") or len(path) < 2:
        return spec, None
    return path, field


@click.command("caption")
@click.argument("cells_file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--backend", type=click.Choice(["describe", "openai", "hf"]), default="describe",
              show_default=True,
              help="describe: embedded, measures land cover (no model, no network). openai: any "
                   "OpenAI-compatible chat-completions server with a vision model. hf: a local "
                   "Hugging Face model directory (pip install urbangeo[hf]).")
@click.option("--model", metavar="M",
              help="openai: the model name on the server. hf: path of a local model directory.")
@click.option("--base-url", metavar="URL", default="http://localhost:11434/v1", show_default=True,
              help="openai: the server's OpenAI-compatible base URL (ends in /v1).")
@click.option("--api-key-env", metavar="VAR", default="OPENAI_API_KEY", show_default=True,
              help="openai: environment variable holding the API key (unset is fine for local "
                   "servers). The key itself is never taken on the command line nor logged.")
@click.option("--prompt-file", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="Text file with the instruction sent with each chip (default: urbangeo's "
                   "detailed urban-infrastructure prompt). Changing it recaptions every cell.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Concurrent requests to the server [default: 4 for openai, 1 otherwise].")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=120.0,
              show_default=True, help="openai: seconds to wait for one answer.")
@click.option("--max-retries", type=click.IntRange(min=0), default=4, show_default=True,
              help="openai: retries per chip after timeouts, 429 and 5xx (exponential backoff).")
@click.option("--device", default="cpu", show_default=True, help="hf: cpu, cuda or cuda:N.")
@click.option("--vector-context", "vector_layers", multiple=True, metavar="PATH[:CATEGORY_FIELD]",
              help="describe: a vector layer (e.g. OSM POIs or roads as GeoPackage/GeoJSON) whose "
                   "features inside each cell are counted (by CATEGORY_FIELD values when given; "
                   "lines also by length) and written into the caption. Repeatable.")
@click.option("--rules", "rules_file", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="Extra refinement rules (JSON list or TOML [[rule]] tables with name, action, "
                   "pattern, ...) run after the built-in table. Refinement reruns on every "
                   "cached caption, so this never calls the backend again.")
@click.option("--recaption", is_flag=True,
              help="Ignore cached captions and caption every cell with a chip again.")
@click.pass_context
def caption(ctx: click.Context, cells_file: Path, backend: str, model: str | None, base_url: str,
            api_key_env: str, prompt_file: Path | None, workers: int | None, timeout: float,
            max_retries: int, device: str, vector_layers: tuple[str, ...],
            rules_file: Path | None, recaption: bool) -> None:
    """Caption every cell of CELLS_FILE that has a chip; write raw and refined text columns.

    Adds caption_raw, caption (after rule-based refinement: hedges, objects too small for the
    pixel size, boilerplate and repeats removed), caption_backend and caption_prompt_hash.
    Captions are cached in CELLS.captions.jsonl as they arrive: rerunning after a crash, Ctrl-C
    or failed cells asks the backend only for what is missing, or for everything when the
    backend, model or prompt changed. Cells without a chip are skipped and counted. Exits
    non-zero when any cell failed; the others are saved.

    \b
    Examples:
      # embedded, offline
      urbangeo caption cells.gpkg
      # Ollama (ollama pull llava)
      urbangeo caption cells.gpkg --backend openai --model llava
      # llama.cpp: llama-server -m model.gguf --mmproj mmproj.gguf --port 8080
      urbangeo caption cells.gpkg --backend openai --base-url http://localhost:8080/v1 --model local
      # vLLM: vllm serve Qwen/Qwen2.5-VL-7B-Instruct --port 8000
      urbangeo caption cells.gpkg --backend openai --base-url http://localhost:8000/v1 \\
          --model Qwen/Qwen2.5-VL-7B-Instruct --workers 8
      # a hosted API; the key stays in the environment
      export OPENAI_API_KEY=...
      urbangeo caption cells.gpkg --backend openai --base-url https://api.openai.com/v1 \\
          --model gpt-4o-mini
      # a downloaded Hugging Face model directory on a GPU
      urbangeo caption cells.gpkg --backend hf --model ./blip-image-captioning-large --device cuda
    """
    from urbangeo.captions.refine import load_rules
    from urbangeo.captions.registry import build_captioner
    from urbangeo.captions.run import caption_cells
    from urbangeo.geo.cells import read_cells, write_cells

    progress: Progress = progress_of(ctx)
    cells = read_cells(cells_file)
    captioner = build_captioner(backend, model=model, base_url=base_url, api_key_env=api_key_env,
                                prompt_file=prompt_file, timeout=timeout, max_retries=max_retries,
                                device=device)
    if vector_layers and backend != "describe":
        raise InputError("--vector-context is used by the describe backend only: drop it or use "
                         "--backend describe")
    context = _vector_context(cells.cells, vector_layers, progress)
    workers = workers or (4 if backend == "openai" else 1)
    refine_options = {"extra_rules": load_rules(rules_file)} if rules_file else {}
    updated, report = caption_cells(cells, cells_file, captioner, workers=workers,
                                    refine_options=refine_options, recaption=recaption,
                                    context=context, progress=progress)
    write_cells(cells_file, updated)
    say(progress, f"{cells_file}: {report.summary()}")
    if report.rule_hits:
        hits = ", ".join(f"{rule} {n}" for rule, n in report.rule_hits.items())
        say(progress, f"refinement removed: {hits}")
    if report.failures:
        error = RemoteError if backend == "openai" else DataError
        cell_id, message = next(iter(report.failures.items()))
        raise error(f"{report.n_failed} cells failed (first: {cell_id}: {message}); their "
                    "captions are missing, the others are saved: rerun the same command to retry")
