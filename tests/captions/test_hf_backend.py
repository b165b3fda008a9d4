"""The hf backend on a tiny, randomly initialised BLIP built and saved inside the test (no
download): it proves the loading, batching and decoding path, not caption quality."""

from __future__ import annotations

import builtins
from pathlib import Path

import numpy as np
import pytest

from urbangeo.captions.base import ChipInfo
from urbangeo.errors import DataError, InputError, ModelError

transformers = pytest.importorskip("transformers", reason="the hf extra is not installed")

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
         *"a an the of road river city park building green water field house tree".split()]


def _tiny_blip(path: Path) -> Path:
    """Save a 1-layer BLIP with a 19-word WordPiece tokenizer made offline with `tokenizers`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    raw = Tokenizer(models.WordPiece({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    raw.decoder = decoders.WordPiece()
    tokenizer = transformers.BertTokenizerFast(
        tokenizer_object=raw, unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]",
        cls_token="[CLS]", mask_token="[MASK]")
    processor = transformers.BlipProcessor(
        image_processor=transformers.BlipImageProcessor(size={"height": 32, "width": 32}),
        tokenizer=tokenizer)
    small = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
             "num_attention_heads": 2}
    config = transformers.BlipConfig(
        vision_config={**small, "image_size": 32, "patch_size": 16},
        text_config={**small, "vocab_size": len(WORDS), "max_position_embeddings": 32,
                     "bos_token_id": 2, "sep_token_id": 3, "pad_token_id": 0},
        projection_dim=32)
    torch.manual_seed(0)
    transformers.BlipForConditionalGeneration(config).save_pretrained(path)
    processor.save_pretrained(path)
    return path


CHAT_WORDS = ["<pad>", "<unk>", "<s>", "</s>", "<image>", "USER", ":", "ASSISTANT",
              *"the a city road water green park river".split()]
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'].upper() }} : {% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image> {% else %}{{ c['text'] }} {% endif %}{% endfor %}"
    "{% endfor %}{% if add_generation_prompt %}ASSISTANT : {% endif %}"
)


def _tiny_llava(path: Path) -> Path:
    """Save a 1-layer LLaVA (CLIP vision + Llama text) whose processor has a chat template."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers

    raw = Tokenizer(models.WordLevel({w: i for i, w in enumerate(CHAT_WORDS)}, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=raw, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
        eos_token="</s>", additional_special_tokens=["<image>"])
    processor = transformers.LlavaProcessor(
        image_processor=transformers.CLIPImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tokenizer, patch_size=16, chat_template=CHAT_TEMPLATE,
        vision_feature_select_strategy="default", num_additional_image_tokens=1)
    small = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
             "num_attention_heads": 2}
    config = transformers.LlavaConfig(
        vision_config=transformers.CLIPVisionConfig(**small, image_size=32, patch_size=16),
        text_config=transformers.LlamaConfig(
            **small, vocab_size=len(CHAT_WORDS), num_key_value_heads=2,
            max_position_embeddings=128, pad_token_id=0, bos_token_id=2, eos_token_id=3),
        image_token_index=CHAT_WORDS.index("<image>"), vision_feature_layer=-1, pad_token_id=0)
    torch.manual_seed(0)
    model = transformers.LlavaForConditionalGeneration(config)
    with torch.no_grad():  # a random model would emit special tokens only, which decode to ""
        model.get_output_embeddings().weight[:5] = 0.0
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def blip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny_blip(tmp_path_factory.mktemp("tiny_blip"))


def _chips(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.integers(0, 256, (4, 48, 48), dtype=np.uint8) for _ in range(n)]


def test_tiny_blip_captions_deterministically_in_batches(blip_dir: Path) -> None:
    from urbangeo.captions.hf_backend import HFCaptioner

    captioner = HFCaptioner(blip_dir, max_new_tokens=6, batch_size=3)
    chips = _chips(3)
    infos = [ChipInfo(f"c{i}", ("red", "green", "blue", "nir"), 10.0) for i in range(3)]
    batch = captioner.caption_batch(chips, infos)
    assert len(batch) == 3 and all(isinstance(t, str) and t for t in batch)
    assert set(" ".join(batch).split()) <= set(WORDS)  # decoded through the saved tokenizer
    assert [captioner.caption(c, i) for c, i in zip(chips, infos, strict=True)] == batch
    assert HFCaptioner(blip_dir, max_new_tokens=6).caption_batch(chips, infos) == batch


def test_cache_key_tracks_prompt_and_length(blip_dir: Path) -> None:
    from urbangeo.captions.hf_backend import HFCaptioner

    plain = HFCaptioner(blip_dir, max_new_tokens=6)
    assert plain.prompt is None  # BLIP has no chat template: unconditional captions
    prefixed = HFCaptioner(blip_dir, max_new_tokens=6, prompt="a city of")
    assert len({plain.cache_key(), prefixed.cache_key(),
                HFCaptioner(blip_dir, max_new_tokens=7).cache_key()}) == 3
    assert prefixed.caption(_chips(1)[0], ChipInfo("c")).startswith("a city of")


def test_refuses_hub_ids_and_non_model_dirs(tmp_path: Path) -> None:
    from urbangeo.captions.hf_backend import HFCaptioner

    with pytest.raises(InputError, match="not a directory"):
        HFCaptioner("Salesforce/blip-image-captioning-base")
    with pytest.raises(ModelError, match="config.json"):
        HFCaptioner(tmp_path)


def test_cuda_without_a_gpu_is_an_input_error(blip_dir: Path) -> None:
    import torch

    from urbangeo.captions.hf_backend import HFCaptioner

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(InputError, match="--device cpu"):
        HFCaptioner(blip_dir, device="cuda")


def test_missing_transformers_names_the_extra(monkeypatch, blip_dir: Path) -> None:
    from urbangeo.captions import hf_backend

    real_import = builtins.__import__

    def no_transformers(name, *args, **kwargs):
        if name == "transformers":
            raise ImportError("No module named 'transformers'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_transformers)
    with pytest.raises(InputError, match=r"pip install urbangeo\[hf\]"):
        hf_backend.HFCaptioner(blip_dir)


def test_chat_model_gets_the_prompt_and_returns_only_new_text(tmp_path: Path) -> None:
    from urbangeo.captions.hf_backend import HFCaptioner
    from urbangeo.captions.registry import default_prompt

    model_dir = _tiny_llava(tmp_path / "tiny_llava")
    assert HFCaptioner(model_dir).prompt == default_prompt()  # instruction models get ours
    captioner = HFCaptioner(model_dir, prompt="the city", max_new_tokens=4, batch_size=2)
    chips = _chips(2)
    texts = captioner.caption_batch(chips, [ChipInfo("a"), ChipInfo("b")])
    # exactly the 4 new words: the echoed "USER : <image>... the city ASSISTANT :" is cut off
    assert all(len(t.split()) == 4 for t in texts)
    assert set(" ".join(texts).split()) <= set(CHAT_WORDS)
    assert captioner.caption(chips[1], ChipInfo("b")) == texts[1]


def test_fewer_than_three_bands_is_a_data_error(blip_dir: Path) -> None:
    from urbangeo.captions.hf_backend import HFCaptioner

    captioner = HFCaptioner(blip_dir, max_new_tokens=2)
    with pytest.raises(DataError, match=r"cell c2 .*at least 3 bands"):
        captioner.caption_batch([_chips(1)[0], _chips(1)[0][:2]], [ChipInfo("c1"), ChipInfo("c2")])
    with pytest.raises(DataError, match="at least 3 bands"):
        captioner.caption(np.zeros((48, 48), np.uint8), ChipInfo("flat"))


def test_gpu_out_of_memory_is_a_model_error(monkeypatch, blip_dir: Path) -> None:
    import torch

    from urbangeo.captions.hf_backend import HFCaptioner

    captioner = HFCaptioner(blip_dir, max_new_tokens=2, batch_size=3)

    def out_of_memory(**kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(captioner._model, "generate", out_of_memory)
    with pytest.raises(ModelError, match=r"out of memory .* smaller --batch-size \(now 3\).*cpu"):
        captioner.caption_batch(_chips(2), [ChipInfo("a"), ChipInfo("b")])


def test_missing_processor_dependency_names_the_package(monkeypatch, blip_dir: Path) -> None:
    from urbangeo.captions.hf_backend import HFCaptioner

    def needs_torchvision(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'torchvision'", name="torchvision")

    monkeypatch.setattr(transformers.AutoProcessor, "from_pretrained", needs_torchvision)
    with pytest.raises(InputError, match="pip install torchvision"):
        HFCaptioner(blip_dir)


def test_weights_load_from_safetensors_only(monkeypatch, blip_dir: Path, tmp_path: Path) -> None:
    import torch

    from urbangeo.captions.hf_backend import HFCaptioner

    blip = transformers.BlipForConditionalGeneration
    real_load = blip.from_pretrained.__func__
    seen: dict = {}

    def spy(cls, *args, **kwargs):
        seen.update(kwargs)
        return real_load(cls, *args, **kwargs)

    monkeypatch.setattr(blip, "from_pretrained", classmethod(spy))
    HFCaptioner(blip_dir)
    assert seen["use_safetensors"] is True  # transformers itself never falls back to .bin

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    for item in blip_dir.iterdir():
        if item.suffix != ".safetensors":
            (pickled / item.name).write_bytes(item.read_bytes())
    torch.save(real_load(blip, blip_dir).state_dict(), pickled / "pytorch_model.bin")
    with pytest.raises(ModelError, match=r"only pickled .*pytorch_model\.bin.*safetensors"):
        HFCaptioner(pickled)
