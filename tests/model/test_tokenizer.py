"""Tokenizers: deterministic BPE training, open_clip parity, files, long captions."""

from __future__ import annotations

import gzip
import importlib.metadata
import itertools
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from recording import RecordingProgress

from urbangeo.errors import DataError, InputError, ModelError
from urbangeo.model import tokenizer as tokenizer_module
from urbangeo.model.tokenizer import (
    CLIP_VOCAB_FILE,
    UrbanTokenizer,
    clean_text,
    clip_tokenizer,
    find_clip_vocab,
    split_sentences,
    train_bpe,
)

# A small corpus in the style of the paper's captions, built deterministically.
_SUBJECTS = ["The image shows", "The scene depicts", "This area contains", "The photo captures"]
_THINGS = ["dense residential blocks", "a wide river", "green parks", "industrial warehouses",
           "a busy highway", "farmland and villages", "tall office towers", "a railway station"]
_DETAILS = ["with many trees.", "near the city centre.", "and several parked cars.",
            "surrounded by roads.", "under a clear sky."]
CORPUS = [f"{s} {t} {d}" for s, t, d in itertools.product(_SUBJECTS, _THINGS, _DETAILS)]

PARITY_STRINGS = [
    "A satellite image of a dense residential area.",
    "Hello,   world!!  It's 2024; the cost is $3.50... (approx.)",
    "Tab\tand\nnew line,  multiple    spaces ",
    "Café crème brûlée, naïve São Paulo, Zürich",
    "北京市朝阳区的卫星图像，显示了密集的建筑。",
    "東京タワー and 서울 downtown",
    "Emoji: 🏙️🌳🚗 👍🏽 family 👨‍👩‍👧",
    "“Curly quotes” and ‘single’ — dashes – and ﬁne ligatures",
    "ＦＵＬＬＷＩＤＴＨ　ｔｅｘｔ １２３",
    "HTML &amp; entities &lt;b&gt; &#39;quoted&#39; &amp;amp;",
    "<b>Tags</b> stop ftfy unescaping &amp; &lt;i&gt; &amp;amp;",
    "don't, we'll, I'M, they've, she'd, it's",
    "ΟΔΟΣ ΑΘΗΝΑΣ",
    "e\u0301 decomposed accent",
    "1234567890 0.5 km² 35°N -12.5%",
    'wow !"!"! great',
    "",
    "   ",
    "x" * 300,
    " ".join(["a long caption with many words"] * 40),
]


def _beijing(shared_data: Path) -> list[dict[str, str]]:
    path = shared_data / "urbanclip" / "captions" / "Beijing_captions.json"
    return json.loads(path.read_text(encoding="utf-8"))[0]


def _paragraphs(entries: list[dict[str, str]], n_images: int) -> list[str]:
    """One caption per image: its sentences (stored without a final period) as a paragraph."""
    by_image: dict[str, list[str]] = {}
    for entry in entries:
        by_image.setdefault(entry["image"], []).append(entry["caption"].strip().rstrip("."))
    return [". ".join(s) + "." for s in itertools.islice(by_image.values(), n_images)]


@pytest.fixture(scope="module")
def bpe() -> UrbanTokenizer:
    return train_bpe(CORPUS, vocab_size=400, min_frequency=2)


@pytest.fixture(scope="module")
def clip() -> UrbanTokenizer:
    try:
        return clip_tokenizer()
    except InputError as exc:
        pytest.skip(f"open-clip-torch (a dev dependency) is not installed: {exc}")


@pytest.fixture(scope="module")
def open_clip_tokenizer() -> Any:
    """open_clip's own SimpleTokenizer: the reference ids (open_clip is a dev dependency)."""
    open_clip = pytest.importorskip("open_clip")
    return open_clip.tokenizer.SimpleTokenizer()


# ---- trained BPE -------------------------------------------------------------------------

def test_bpe_training_is_deterministic(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    train_bpe(CORPUS, vocab_size=400).save(first)
    train_bpe(list(CORPUS), vocab_size=400).save(second)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes()


def test_bpe_special_ids_vocab_bound_and_progress() -> None:
    progress = RecordingProgress()
    tok = train_bpe(CORPUS, vocab_size=300, progress=progress)
    assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 2)
    assert tok.vocab_size == 300  # the corpus has enough pairs to fill the budget
    assert progress.events[0][:2] == ("start", "train tokenizer")
    assert progress.events[-1] == ("finish",)
    # A high min_frequency stops merging early: the size is an upper bound.
    assert train_bpe(CORPUS, vocab_size=5000, min_frequency=50).vocab_size < 5000


def test_bpe_round_trips_unseen_text_exactly(bpe: UrbanTokenizer) -> None:
    """Every byte stays encodable: scripts and emoji never seen in training are not dropped."""
    for text in [*CORPUS[:5], *PARITY_STRINGS]:
        assert bpe.decode(bpe.encode(text)) == clean_text(text)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"vocab_size": 100}, "too small"),
    ({"min_frequency": 0}, "min_frequency"),
    ({"context_length": 2}, "too short"),
])
def test_bpe_rejects_bad_arguments(kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(InputError, match=match):
        train_bpe(CORPUS, **kwargs)


def test_bpe_rejects_an_empty_corpus() -> None:
    with pytest.raises(InputError, match="no captions"):
        train_bpe(["", "   "])


# ---- batches, padding, decoding --------------------------------------------------------

def test_encode_batch_layout(bpe: UrbanTokenizer) -> None:
    texts = ["green parks", "The image shows a wide river near the city centre."]
    ids = bpe.encode_batch(texts, 16)
    assert ids.dtype == np.int64 and ids.shape == (2, 16)
    for row, text in zip(ids, texts, strict=True):
        content = bpe.encode(text)
        assert list(row[: len(content) + 2]) == [bpe.bos_id, *content, bpe.eos_id]
        assert (row[len(content) + 2:] == bpe.pad_id).all()
    assert bpe.encode_batch("green parks", 16).shape == (1, 16)


def test_encode_batch_truncates_keeping_eos_or_raises(bpe: UrbanTokenizer) -> None:
    text = " ".join(CORPUS[:6])
    content = bpe.encode(text)
    assert len(content) > 20
    row = bpe.encode_batch([text], 20)[0]
    assert list(row) == [bpe.bos_id, *content[:18], bpe.eos_id]
    with pytest.raises(DataError, match="fit_to_context"):
        bpe.encode_batch(["green parks", text], 20, overflow="error")
    with pytest.raises(InputError, match="return_tensors"):
        bpe.encode_batch(["green parks"], return_tensors="tf")  # type: ignore[arg-type]


def test_encode_batch_torch_and_padding_mask(clip: UrbanTokenizer) -> None:
    torch = pytest.importorskip("torch")
    texts = ['wow !"!"! great', "a"]
    assert 0 in clip.encode(texts[0])  # id 0 is a real token here, and also CLIP's padding
    ids = clip.encode_batch(texts, 12)
    tensor = clip.encode_batch(texts, 12, return_tensors="pt")
    assert tensor.dtype == torch.int64 and torch.equal(tensor, torch.from_numpy(ids))
    mask = clip.padding_mask(ids)
    n_real = [len(clip.encode(t)) + 2 for t in texts]
    expected = np.arange(12)[None, :] >= np.array(n_real)[:, None]
    assert (mask == expected).all()
    assert torch.equal(clip.padding_mask(tensor), torch.from_numpy(expected))


def test_decode_stops_at_eos_and_skips_specials(bpe: UrbanTokenizer) -> None:
    row = bpe.encode_batch(["green parks"], 10)[0]
    assert bpe.decode(row) == "green parks"
    ending = len(bpe.encode("green parks")) + 2
    assert bpe.decode([*row[:ending], *bpe.encode("surrounded by roads")]) == "green parks"


# ---- CLIP vocabulary and open_clip parity ----------------------------------------------

def test_clip_ids_equal_open_clip(clip: UrbanTokenizer, open_clip_tokenizer: Any) -> None:
    assert (clip.vocab_size, clip.bos_id, clip.eos_id, clip.pad_id) == (49408, 49406, 49407, 0)
    for text in PARITY_STRINGS:
        assert clip.encode(text) == open_clip_tokenizer.encode(text), text
    for length in (77, 16):
        expected = open_clip_tokenizer(PARITY_STRINGS, context_length=length).numpy()
        np.testing.assert_array_equal(clip.encode_batch(PARITY_STRINGS, length), expected)


def test_clip_ids_equal_open_clip_on_random_strings(clip: UrbanTokenizer,
                                                   open_clip_tokenizer: Any) -> None:
    pool = [*"abcdefXYZ0123456789 \t\n.,;:!?'\"()-_/@#$%&*<>", *"éüñßÆŒ北京市東京서울ДомΣςİı",
            "🙂", "👍🏽", "\u0301", "\u00a0", "\u200b", "&amp;", "&lt;", "'s", "'ll", "ﬁ", "“",
            "ｆ", "\u3000", "\x00", "\x85"]
    rng = random.Random(0)
    for _ in range(300):
        text = "".join(rng.choice(pool) for _ in range(rng.randint(0, 30)))
        ids = clip.encode(text)
        assert ids == open_clip_tokenizer.encode(text), text
        assert clip.decode(ids) == open_clip_tokenizer.decode(ids).strip(), text


def test_clip_decode_equals_open_clip(clip: UrbanTokenizer, open_clip_tokenizer: Any) -> None:
    for text in PARITY_STRINGS:
        ids = clip.encode(text)
        assert clip.decode(ids) == open_clip_tokenizer.decode(ids).strip(), text


def test_clip_parity_on_real_captions(clip: UrbanTokenizer, open_clip_tokenizer: Any,
                                      shared_data: Path) -> None:
    entries = _beijing(shared_data)
    texts = [e["caption"] for e in entries[:400]] + _paragraphs(entries, 60)
    expected = open_clip_tokenizer(texts).numpy()
    np.testing.assert_array_equal(clip.encode_batch(texts), expected)
    assert (expected[400:, -1] != 0).any()  # some paragraphs were long enough to be cut


def test_clip_vocab_found_without_importing_open_clip() -> None:
    script = ("import sys\n"
              "from urbangeo.model.tokenizer import clip_tokenizer, find_clip_vocab\n"
              "tok = clip_tokenizer()\n"
              "print(find_clip_vocab().name, tok.vocab_size, 'open_clip' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=False, timeout=120)
    if "InputError" in done.stderr:
        pytest.skip("open-clip-torch (a dev dependency) is not installed")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [CLIP_VOCAB_FILE, "49408", "False"]


def test_clip_vocab_from_explicit_path_when_package_is_absent(
        clip: UrbanTokenizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "elsewhere" / CLIP_VOCAB_FILE
    copy.parent.mkdir()
    shutil.copyfile(find_clip_vocab(), copy)

    def not_installed(name: str) -> None:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "files", not_installed)
    with pytest.raises(InputError, match="pip install --no-deps open-clip-torch"):
        clip_tokenizer()
    from_copy = clip_tokenizer(copy)
    np.testing.assert_array_equal(from_copy.encode_batch(PARITY_STRINGS),
                                  clip.encode_batch(PARITY_STRINGS))


def test_clip_vocab_errors(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_vocab.txt.gz"
    with pytest.raises(InputError, match="no_such_vocab.txt.gz does not exist"):
        clip_tokenizer(missing)
    not_gzip = tmp_path / "plain.txt.gz"
    not_gzip.write_text("this is not gzip")
    with pytest.raises(InputError, match="unreadable"):
        clip_tokenizer(not_gzip)
    wrong = tmp_path / "wrong.txt.gz"
    with gzip.open(wrong, "wt", encoding="utf-8") as handle:
        handle.write("#version\na b\nc d\n")
    with pytest.raises(InputError, match="not CLIP's merges file"):
        clip_tokenizer(wrong)
    with gzip.open(wrong, "wt", encoding="utf-8") as handle:
        handle.write("#version\n" + "a b\n" * 50_000)
    with pytest.raises(InputError, match="repeats merges"):
        clip_tokenizer(wrong)


def test_cleaning_without_ftfy_matches_ftfy_on_common_damage(
        monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ftfy")
    damaged = ["“Curly” ‘quotes’ ʼtwas", "ﬁne ﬂat ﬀ ligatures", "ＦＵＬＬ　ｗｉｄｔｈ！",
               "control\x00\x07chars\ufeff here", "e\u0301 and a\u0308", "plain text"]
    with_ftfy = [clean_text(t) for t in damaged]
    assert with_ftfy[:5] != [" ".join(t.split()).lower() for t in damaged[:5]]
    monkeypatch.setattr(tokenizer_module, "_ftfy_fix_text", lambda: None)
    assert [clean_text(t) for t in damaged] == with_ftfy


# ---- files ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["bpe", "clip"])
def test_save_load_round_trip(kind: str, request: pytest.FixtureRequest, tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    tok: UrbanTokenizer = request.getfixturevalue(kind)
    tok.save(tmp_path / "model")
    # Loading needs neither open_clip nor its vocabulary file.
    monkeypatch.setattr(tokenizer_module, "find_clip_vocab", None)
    loaded = UrbanTokenizer.load(tmp_path / "model")
    assert loaded.kind == kind and loaded.config == tok.config
    texts = [*CORPUS[:10], *PARITY_STRINGS]
    np.testing.assert_array_equal(loaded.encode_batch(texts), tok.encode_batch(texts))
    loaded.save(tmp_path / "again")
    assert ((tmp_path / "again" / "tokenizer.json").read_bytes()
            == (tmp_path / "model" / "tokenizer.json").read_bytes())


def test_load_errors(bpe: UrbanTokenizer, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="tokenizer_config.json is missing"):
        UrbanTokenizer.load(tmp_path / "empty")
    bpe.save(tmp_path / "model")
    config_path = tmp_path / "model" / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "eos_id": 7}))
    with pytest.raises(ModelError, match="does not match"):
        UrbanTokenizer.load(tmp_path / "model")
    config_path.write_text(json.dumps({"kind": "bpe"}))
    with pytest.raises(ModelError, match="not an urbangeo tokenizer config"):
        UrbanTokenizer.load(tmp_path / "model")
    config_path.write_text(json.dumps(config))
    (tmp_path / "model" / "tokenizer.json").write_text("{ corrupt")
    with pytest.raises(ModelError, match="corrupt"):
        UrbanTokenizer.load(tmp_path / "model")


# ---- long captions -------------------------------------------------------------------

def test_split_sentences() -> None:
    text = "第一句。第二句！Third one... Fourth is 3.5 km long?  Fifth"
    assert split_sentences(text) == ["第一句。", "第二句！", "Third one...",
                                     "Fourth is 3.5 km long?", "Fifth"]


def test_fit_truncates_at_the_last_sentence_border_that_fits(bpe: UrbanTokenizer) -> None:
    sentences = CORPUS[0], CORPUS[7], CORPUS[13]
    counts = [len(bpe.encode(s)) for s in sentences]
    caption = "  ".join(sentences)
    whole = bpe.fit_to_context(caption, 2 + sum(counts))
    assert whole.texts == [" ".join(caption.split())]
    assert (whole.n_truncated, whole.n_cut_mid_sentence) == (0, 0)
    for room, kept in [(counts[0] + counts[1] + counts[2] - 1, 2), (counts[0] + counts[1], 2),
                       (counts[0] + counts[1] - 1, 1)]:
        fitted = bpe.fit_to_context([caption], 2 + room)
        assert fitted.texts == [" ".join(sentences[:kept])]
        assert (fitted.n_truncated, fitted.n_chunked, fitted.n_cut_mid_sentence) == (1, 0, 0)


def test_fit_cuts_an_overlong_sentence_between_words_and_flags_it(bpe: UrbanTokenizer) -> None:
    long_sentence = " ".join(t.removesuffix(".") for t in CORPUS[:6]) + "."
    fitted = bpe.fit_to_context([long_sentence, CORPUS[0]], 24)
    first = fitted.texts[0]
    words = long_sentence.split()
    n_kept = len(first.split())
    assert first == " ".join(words[:n_kept]) and 0 < n_kept < len(words)
    assert len(bpe.encode(first)) <= 22 < len(bpe.encode(" ".join(words[:n_kept + 1])))
    assert fitted.texts[1] == CORPUS[0]
    assert (fitted.n_truncated, fitted.n_cut_mid_sentence) == (1, 1)
    # A fitting first sentence is kept whole; the over-long one after it is dropped, not cut.
    after = bpe.fit_to_context(f"{CORPUS[0]} {long_sentence}", 24)
    assert after.texts == [CORPUS[0]] and after.n_cut_mid_sentence == 0


def test_fit_chunks_losslessly_at_sentence_borders(bpe: UrbanTokenizer) -> None:
    caption = " ".join(CORPUS[:9])
    progress = RecordingProgress()
    fitted = bpe.fit_to_context([CORPUS[0], caption], 40, mode="chunk", progress=progress)
    assert [e[0] for e in progress.events].count("advance") == 2
    assert fitted.summary() in progress.infos and progress.events[-1] == ("finish",)
    assert fitted.texts[0] == CORPUS[0] and fitted.sources[0] == 0
    pieces = fitted.texts[1:]
    assert fitted.sources[1:] == [1] * len(pieces) and len(pieces) > 2
    assert " ".join(pieces) == caption
    sentences = set(CORPUS[:9])
    for piece in pieces:
        assert len(bpe.encode(piece)) <= 38
        assert set(split_sentences(piece)) <= sentences  # whole sentences only
    assert (fitted.n_chunked, fitted.n_truncated, fitted.n_cut_mid_sentence) == (1, 0, 0)


def test_fit_chunks_a_word_longer_than_the_context(bpe: UrbanTokenizer) -> None:
    word = "超长的没有空格的词" * 8 + "🙂" * 5
    fitted = bpe.fit_to_context(f"green parks {word}", 12, mode="chunk")
    assert all(len(bpe.encode(piece)) <= 10 for piece in fitted.texts)
    assert "".join(fitted.texts).replace(" ", "") == f"greenparks{word}"
    assert (fitted.n_chunked, fitted.n_cut_mid_sentence) == (1, 1)
    assert "1 chunked, 1 cut inside a sentence" in fitted.summary()


def test_fit_rejects_bad_arguments(bpe: UrbanTokenizer) -> None:
    with pytest.raises(InputError, match="unknown fit mode"):
        bpe.fit_to_context("green parks", mode="squash")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="too short"):
        bpe.fit_to_context("green parks", 5)


@pytest.mark.parametrize("kind", ["bpe", "clip"])
def test_fit_real_captions(kind: str, request: pytest.FixtureRequest, shared_data: Path) -> None:
    entries = _beijing(shared_data)
    tok: UrbanTokenizer = (train_bpe([e["caption"] for e in entries[:3000]], vocab_size=2000)
                           if kind == "bpe" else request.getfixturevalue("clip"))
    paragraphs = _paragraphs(entries, 150)
    truncated = tok.fit_to_context(paragraphs)
    assert truncated.n_truncated > 0 and truncated.sources == list(range(len(paragraphs)))
    tok.encode_batch(truncated.texts, overflow="error")  # everything fits now
    for piece, paragraph in zip(truncated.texts, paragraphs, strict=True):
        assert paragraph.startswith(piece) and piece.endswith(".")  # whole sentences
    chunked = tok.fit_to_context(paragraphs, mode="chunk")
    assert chunked.n_chunked == truncated.n_truncated
    tok.encode_batch(chunked.texts, overflow="error")
    for index, paragraph in enumerate(paragraphs):
        pieces = [t for t, s in zip(chunked.texts, chunked.sources, strict=True) if s == index]
        assert " ".join(pieces) == paragraph
