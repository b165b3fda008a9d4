"""Build a caption backend from its name and options, and load the prompt it is given.

Backends are imported only when chosen, so ``describe`` never pulls in an HTTP client's setup
and ``openai`` never pulls in transformers.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

from urbangeo.captions.base import Captioner
from urbangeo.errors import InputError

BACKENDS = ("describe", "openai", "hf")
DEFAULT_BASE_URL = "http://localhost:11434/v1"  # Ollama's OpenAI-compatible endpoint


def default_prompt() -> str:
    """The shipped instruction: the paper's detailed prompt with an urban-infrastructure focus."""
    return resources.files("urbangeo.captions").joinpath("prompts/default.txt").read_text("utf-8")


def load_prompt(path: str | Path | None) -> str:
    """The prompt in ``path`` (UTF-8 text), or the shipped default when ``path`` is None."""
    if path is None:
        return default_prompt()
    path = Path(path)
    if not path.is_file():
        raise InputError(f"prompt file {path} does not exist: give a UTF-8 text file with the "
                         "instruction for the model")
    text = path.read_text(encoding="utf-8").strip()
    if not text:
        raise InputError(f"prompt file {path} is empty: write the instruction for the model in it")
    return text


def prompt_hash(text: str) -> str:
    """Short hash of a prompt: part of each backend's cache key, so a new prompt recaptions."""
    return hashlib.sha256(text.strip().encode("utf-8")).hexdigest()[:12]


def build_captioner(
    name: str,
    *,
    model: str | None = None,
    base_url: str | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    prompt_file: str | Path | None = None,
    timeout: float = 120.0,
    max_retries: int = 4,
    device: str = "cpu",
    batch_size: int = 8,
) -> Captioner:
    """A ready backend: ``describe`` (embedded), ``openai`` (HTTP endpoint) or ``hf`` (local dir).

    Options a backend does not use are ignored, except ``--model`` for ``describe`` and
    ``--prompt-file`` for ``describe``, which would silently do nothing and so are refused.
    """
    if name == "describe":
        if model or prompt_file:
            raise InputError("the describe backend has no model or prompt: drop --model and "
                             "--prompt-file, or choose --backend openai or hf")
        from urbangeo.captions.describe import DescribeCaptioner

        return DescribeCaptioner()
    if name == "openai":
        from urbangeo.captions.openai_backend import OpenAICaptioner

        if not model:
            raise InputError("--backend openai needs --model, the vision model's name on the "
                             "server (e.g. --model llava for Ollama)")
        return OpenAICaptioner(base_url=base_url or DEFAULT_BASE_URL, model=model,
                               prompt=load_prompt(prompt_file), api_key_env=api_key_env,
                               timeout=timeout, max_retries=max_retries)
    if name == "hf":
        from urbangeo.captions.hf_backend import HFCaptioner

        if not model:
            raise InputError("--backend hf needs --model, a local Hugging Face model directory "
                             "(downloaded beforehand; nothing is fetched from the hub)")
        prompt = load_prompt(prompt_file) if prompt_file else None
        return HFCaptioner(model, prompt=prompt, device=device, batch_size=batch_size)
    raise InputError(f"unknown caption backend {name!r}: choose one of {', '.join(BACKENDS)}")
