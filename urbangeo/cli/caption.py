"""``urbangeo caption``: describe each cell's chip in words, then refine the text (paper §3.1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from urbangeo import api
from urbangeo.api import split_vector_spec as _split_spec
from urbangeo.captions.registry import BACKENDS, DEFAULT_BASE_URL
from urbangeo.cli.progress import progress_of, say


def _vector_layers(_ctx: click.Context, _param: click.Parameter,
                   values: tuple[str, ...]) -> tuple[tuple[str, str | None], ...]:
    return tuple(_split_spec(value) for value in values)


@click.command("caption")
@click.argument("cells", metavar="CELLS_FILE", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--backend", type=click.Choice(BACKENDS), default="describe",
              show_default=True,
              help="describe: embedded, measures land cover (no model, no network). openai: any "
                   "OpenAI-compatible chat-completions server with a vision model. hf: a local "
                   "Hugging Face model directory (pip install urbangeo[hf]).")
@click.option("--model", metavar="M",
              help="openai: the model name on the server. hf: path of a local model directory.")
@click.option("--base-url", metavar="URL", default=DEFAULT_BASE_URL, show_default=True,
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
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="hf: chips captioned per model call (lower it if the GPU runs out of memory).")
@click.option("--vector-context", "vector_context", multiple=True, metavar="PATH[:CATEGORY_FIELD]",
              callback=_vector_layers,
              help="describe: a vector layer (e.g. OSM POIs or roads as GeoPackage/GeoJSON) whose "
                   "features inside each cell are counted (by CATEGORY_FIELD values when given; "
                   "lines also by length) and written into the caption. Repeatable.")
@click.option("--rules", "rules", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="Extra refinement rules (JSON list or TOML [[rule]] tables with name, action, "
                   "pattern, ...) run after the built-in table. Refinement reruns on every "
                   "cached caption, so this never calls the backend again.")
@click.option("--recaption", is_flag=True,
              help="Ignore cached captions and caption every cell with a chip again.")
@click.pass_context
def caption(ctx: click.Context, **options: Any) -> None:
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
    progress = progress_of(ctx)
    result = api.caption(**options, progress=progress)
    for line in result.lines():
        say(progress, line)
    result.raise_for_failures()
