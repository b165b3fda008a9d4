"""The ``hf`` backend: a local Hugging Face image-to-text model directory through transformers.

Optional (``pip install urbangeo[hf]``): transformers and torch are imported only when this
backend is built. Only a directory already on disk is accepted and it is loaded with
``local_files_only=True``, without remote code and from safetensors weights only, so nothing is
downloaded, executed from the hub or unpickled. Generation is greedy (no sampling), so the
same chip always gets the same caption.

Two model families are handled:
- captioners without a chat template (BLIP): unconditional captions, or continuing a text prefix
  when a prompt is given;
- instruction models with a chat template (Qwen2-VL, LLaVA, ...): the prompt (default: the
  shipped urban-infrastructure instruction) goes in a user turn beside the image, and only the
  newly generated tokens are kept.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from urbangeo.captions.base import ChipInfo
from urbangeo.captions.registry import default_prompt, prompt_hash
from urbangeo.errors import DataError, InputError, ModelError

_INSTALL_HINT = "the hf backend needs transformers and torch: pip install urbangeo[hf]"


def _import_transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:
        raise InputError(f"{_INSTALL_HINT} ({exc})") from None
    return transformers


def _check_safetensors(path: Path) -> None:
    """Refuse a directory without safetensors weights: pickled ``.bin`` files can run code."""
    if any(path.glob("*.safetensors")):
        return
    pickled = sorted(p.name for p in path.glob("*.bin"))
    found = f"only pickled PyTorch weights ({', '.join(pickled)})" if pickled else "no weights"
    raise ModelError(f"{path} has {found}; the hf backend loads model*.safetensors only, since "
                     "unpickling weights can run arbitrary code. Convert the weights to "
                     "safetensors in a trusted environment (load the model and call "
                     "save_pretrained(..., safe_serialization=True)), or download a "
                     "safetensors revision")


def _missing_package(exc: ImportError, path: Path) -> InputError:
    """A processor or model class needs an optional package (torchvision, sentencepiece, ...)."""
    package = getattr(exc, "name", None)
    detail = " ".join(str(exc).split())[:300]
    what = (f"install the package that provides {package!r} (usually `pip install "
            f"{package.split('.')[0]}`)" if package else "install the package it names")
    return InputError(f"the model in {path} needs a package that is not installed ({detail}): "
                      f"{what}, then rerun")


def _model_class(transformers: Any, config: Any) -> Any:
    """The generation class that fits ``config``: BLIP's own, else the image-text-to-text auto
    class (transformers >= 4.46), else the older vision-to-sequence auto class."""
    if config.model_type == "blip":
        return transformers.BlipForConditionalGeneration
    for name in ("AutoModelForImageTextToText", "AutoModelForVision2Seq"):
        auto = getattr(transformers, name, None)
        if auto is not None and type(config) in auto._model_mapping:
            return auto
    raise ModelError(f"model type {config.model_type!r} is not an image-to-text model that this "
                     "transformers version can load; use a BLIP, Florence-2, Qwen2-VL or LLaVA "
                     "directory, or upgrade transformers")


class HFCaptioner:
    """Captions chips with a local transformers vision-language model, in batches."""

    name = "hf"

    def __init__(self, model_dir: str | Path, *, prompt: str | None = None, device: str = "cpu",
                 max_new_tokens: int = 120, batch_size: int = 8) -> None:
        path = Path(model_dir).expanduser()
        if not path.is_dir():
            raise InputError(f"--model {model_dir} is not a directory: the hf backend takes a "
                             "local model directory (download it first, e.g. with `hf download`); "
                             "hub ids are never fetched")
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} has no config.json: point --model at a Hugging Face model "
                             "directory saved with save_pretrained")
        if batch_size < 1 or max_new_tokens < 1:
            raise InputError("batch size and max new tokens must be at least 1")
        transformers = _import_transformers()
        import torch

        if device.startswith("cuda") and not torch.cuda.is_available():
            raise InputError(f"--device {device} asked for, but torch sees no CUDA GPU: "
                             "use --device cpu")
        transformers.utils.logging.disable_progress_bar()  # library code never prints
        self.model_dir = path.resolve()
        self.model = str(self.model_dir)
        self.device = device
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self._torch = torch
        _check_safetensors(path)
        try:
            config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
            auto_processor = transformers.AutoProcessor
            self._processor = auto_processor.from_pretrained(path, local_files_only=True)
            model_class = _model_class(transformers, config)
            self._model = model_class.from_pretrained(
                path, local_files_only=True, use_safetensors=True).to(device).eval()
        except ImportError as exc:
            raise _missing_package(exc, path) from None
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(f"cannot load the model in {path}: {exc}") from None
        self._chat = bool(getattr(self._processor, "chat_template", None))
        self._encoder_decoder = bool(getattr(config, "is_encoder_decoder", False))
        tokenizer = getattr(self._processor, "tokenizer", None)
        if self._chat and not self._encoder_decoder and tokenizer is not None:
            tokenizer.padding_side = "left"  # batched decoder-only models continue on the right
        self.prompt = prompt if prompt is not None else (default_prompt() if self._chat else None)
        self._config_hash = hashlib.sha256((path / "config.json").read_bytes()).hexdigest()[:12]

    def __repr__(self) -> str:
        return f"HFCaptioner(model_dir={self.model!r}, device={self.device!r})"

    def cache_key(self) -> str:
        prompt = prompt_hash(self.prompt or "")
        return (f"hf|{self.model}|config={self._config_hash}|prompt={prompt}"
                f"|max_new_tokens={self.max_new_tokens}")

    def caption(self, chip: np.ndarray, info: ChipInfo) -> str:
        return self.caption_batch([chip], [info])[0]

    def caption_batch(self, chips: Sequence[np.ndarray], infos: Sequence[ChipInfo]) -> list[str]:
        """Caption several chips in one ``generate`` call (what makes a GPU worth using).

        Raises DataError for a chip with fewer than three bands and ModelError when the GPU
        runs out of memory; the run records either against each cell of the batch.
        """
        from PIL import Image

        for chip, info in zip(chips, infos, strict=True):
            if chip.ndim != 3 or chip.shape[0] < 3:
                raise DataError(f"chip of cell {info.cell_id} has shape {chip.shape}; the hf "
                                "backend needs (bands, y, x) chips with at least 3 bands (RGB): "
                                "rebuild the chips with `urbangeo chips` from RGB imagery")
        images = [Image.fromarray(np.ascontiguousarray(np.moveaxis(c[:3], 0, -1)), mode="RGB")
                  for c in chips]
        inputs = self._processor(images=images, text=self._texts(len(images)), return_tensors="pt",
                                 **({"padding": True} if self.prompt is not None else {}))
        inputs = inputs.to(self.device)
        try:
            with self._torch.inference_mode():
                out = self._model.generate(**inputs, do_sample=False, num_beams=1,
                                           max_new_tokens=self.max_new_tokens)
        except self._torch.cuda.OutOfMemoryError:
            out = None  # free the failed batch (held by the traceback) before emptying the cache
        if out is None:
            del inputs
            self._torch.cuda.empty_cache()  # so the run's next batches can still fit
            raise ModelError(f"{self.device} ran out of memory captioning {len(images)} chips "
                             f"with {self.model_dir.name}: caption with a smaller --batch-size "
                             f"(now {self.batch_size}) or on --device cpu")
        if self._chat and not self._encoder_decoder:  # decoder-only: output repeats the prompt
            out = out[:, inputs["input_ids"].shape[1]:]
        texts = self._processor.batch_decode(out, skip_special_tokens=True)
        return [" ".join(t.split()) for t in texts]

    def _texts(self, n: int) -> list[str] | None:
        if self.prompt is None:
            return None
        if not self._chat:
            return [self.prompt] * n
        messages = [{"role": "user", "content": [{"type": "image"},
                                                 {"type": "text", "text": self.prompt}]}]
        text = self._processor.apply_chat_template(messages, add_generation_prompt=True)
        return [text] * n
