"""Caption tokenizers: a byte-level BPE trained on the caption corpus, or CLIP's own vocabulary.

Both kinds sit behind :class:`UrbanTokenizer`, so the model only sees ``pad_id``, ``bos_id``
(``<start_of_text>``), ``eos_id`` (``<end_of_text>``), ``vocab_size`` and ``context_length``.
There is no ``<cls>`` token: the text decoder appends a learned CLS embedding itself.

* ``bpe`` (:func:`train_bpe`): GPT-2-style byte-level BPE, spaces carried inside tokens, so
  ``decode(encode(x))`` gives back the cleaned text exactly. Special tokens come first:
  ``<pad>`` = 0, ``<start_of_text>`` = 1, ``<end_of_text>`` = 2. Training is deterministic: with
  all 256 byte symbols given up front, the `tokenizers` trainer numbers them in a fixed order and
  breaks ties between equally frequent merges the same way on every run. (CLIP's ``</w>``
  end-of-word suffix is not used here because the trainer numbers the suffixed symbols in hash
  order, so tied merges come out differently from run to run.)
* ``clip`` (:func:`clip_tokenizer`): the 49,408-token vocabulary of OpenAI CLIP, read from the
  ``bpe_simple_vocab_16e6.txt.gz`` that the open-clip-torch wheel ships (found through package
  metadata, without importing open_clip and hence torchvision), so pretrained CLIP/CoCa text
  towers fit. Ids equal ``open_clip.tokenize``: ``<start_of_text>`` = 49406,
  ``<end_of_text>`` = 49407, padding 0, over-long text cut to the context with ``<end_of_text>``
  kept last. Like open_clip, padding is id 0, which is also the real token ``!``: find padding
  with :meth:`UrbanTokenizer.padding_mask`, never with ``ids == pad_id``.

Text is cleaned as open_clip does (ftfy when installed, HTML entities, whitespace, lower case).
Captions longer than the context are meant to go through :meth:`UrbanTokenizer.fit_to_context`
(truncate or chunk at sentence borders) rather than being silently cut by ``encode_batch``.
A caption that contains a special token's literal text (``<end_of_text>``) gets that token, as
in open_clip.
"""

from __future__ import annotations

import gzip
import html
import importlib.metadata
import json
import re
import unicodedata
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    trainers,
)

from urbangeo._atomic import write_text_atomic
from urbangeo.errors import DataError, InputError, ModelError
from urbangeo.progress import SILENT, Progress

if TYPE_CHECKING:
    import torch

TokenizerKind = Literal["bpe", "clip"]
FitMode = Literal["truncate_sentences", "chunk"]

PAD, BOS, EOS = "<pad>", "<start_of_text>", "<end_of_text>"
DEFAULT_CONTEXT_LENGTH = 77
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
CONFIG_FORMAT = "urbangeo-tokenizer/1"

CLIP_VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
CLIP_N_MERGES = 49152 - 256 - 2  # CLIP keeps this many merges of the file (its header excluded)
CLIP_VOCAB_SIZE = 2 * 256 + CLIP_N_MERGES + 2
CLIP_PAD_ID = 0
# CLIP's pre-tokenisation: contractions, letter runs, single digits, punctuation runs.
_CLIP_SPLIT = (
    "<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+"
)
_MIN_BPE_VOCAB = 3 + 256  # the special tokens and every byte


# --------------------------------------------------------------------------------------------
# Text cleaning (open_clip's "lower" clean function)
# --------------------------------------------------------------------------------------------

@cache
def _ftfy_fix_text() -> Any:
    """``ftfy.fix_text`` when ftfy is installed (open_clip depends on it), else None."""
    try:
        import ftfy
    except ImportError:
        return None
    return ftfy.fix_text


@cache
def _basic_fix_table() -> dict[int, str | None]:
    """What ftfy does that the Unicode standard can express, for installs without ftfy.

    Curly quotes become straight ones, full-width forms and Latin ligatures their compatibility
    (NFKC) forms, the ideographic space a space, and invisible control characters go. Mojibake
    repair (``Ã©`` -> ``é``) needs ftfy's heuristics and is not attempted.
    """
    table: dict[int, str | None] = {0x3000: " ", 0x2BC: "'"}
    table.update({c: "'" for c in range(0x2018, 0x201C)})
    table.update({c: '"' for c in range(0x201C, 0x2020)})
    ligatures = [0x132, 0x133, *range(0x1C4, 0x1CD), *range(0x1F1, 0x1F4), *range(0xFB00, 0xFB07)]
    for code in [*ligatures, *range(0xFF01, 0xFFF0)]:
        compat = unicodedata.normalize("NFKC", chr(code))
        if compat != chr(code):
            table[code] = compat
    controls = [*range(0x00, 0x09), 0x0B, *range(0x0E, 0x20), 0x7F, *range(0x206A, 0x2070),
                0xFEFF, *range(0xFFF9, 0xFFFD)]
    table.update({c: None for c in controls})
    return table


def _fix_text(text: str) -> str:
    fix = _ftfy_fix_text()
    if fix is not None:
        return fix(text)
    return unicodedata.normalize("NFC", text.translate(_basic_fix_table()))


def clean_text(text: str) -> str:
    """Clean a caption exactly as open_clip does before tokenising (both kinds use it).

    Fixes broken Unicode (ftfy when installed), unescapes HTML entities twice, collapses
    whitespace and lower-cases. Python's ``str.lower`` (not the Rust normaliser alone) keeps
    parity on context-dependent cases such as the Greek final sigma.
    """
    text = html.unescape(html.unescape(_fix_text(text)))
    return " ".join(text.split()).lower()


# --------------------------------------------------------------------------------------------
# The two kinds
# --------------------------------------------------------------------------------------------

def _lower_and_space_normalizer() -> normalizers.Normalizer:
    """Stored in tokenizer.json so the file alone still lower-cases and collapses spaces."""
    return normalizers.Sequence([normalizers.Replace(Regex(r"\s+"), " "), normalizers.Strip(),
                                 normalizers.Lowercase()])


def train_bpe(texts: Iterable[str], *, vocab_size: int = 8192, min_frequency: int = 2,
              context_length: int = DEFAULT_CONTEXT_LENGTH,
              progress: Progress = SILENT) -> UrbanTokenizer:
    """Train a byte-level BPE on captions; the same corpus always gives the same tokenizer.

    ``vocab_size`` is an upper bound (special tokens and the 256 byte symbols included): merges
    stop early once no pair is seen ``min_frequency`` times. Every byte stays encodable, so
    text unseen in training (other scripts, emoji) is never dropped.
    """
    if vocab_size < _MIN_BPE_VOCAB:
        raise InputError(f"vocab_size {vocab_size} is too small: a byte-level BPE needs at least "
                         f"{_MIN_BPE_VOCAB} tokens (3 special + 256 bytes); use a few thousand")
    if min_frequency < 1:
        raise InputError(f"min_frequency must be at least 1, got {min_frequency}")
    _check_context_length(context_length)
    corpus = [cleaned for cleaned in map(clean_text, texts) if cleaned]
    if not corpus:
        raise InputError("no captions to train the tokenizer on: every text is empty; "
                         "caption the cells first")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = _lower_and_space_normalizer()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
        special_tokens=[PAD, BOS, EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    progress.start("train tokenizer", None, f"{len(corpus)} captions")
    tokenizer.train_from_iterator(corpus, trainer, length=len(corpus))
    progress.info(f"tokenizer: {tokenizer.get_vocab_size()} tokens from {len(corpus)} captions")
    progress.finish()
    return UrbanTokenizer(tokenizer, "bpe", context_length=context_length)


def find_clip_vocab(vocab_path: str | Path | None = None) -> Path:
    """Locate CLIP's merges file: ``vocab_path`` if given, else inside open-clip-torch's wheel.

    The wheel is found through package metadata, so ``pip install --no-deps open-clip-torch``
    is enough and open_clip (which imports torchvision) is never imported.
    """
    if vocab_path is not None:
        path = Path(vocab_path)
        if not path.is_file():
            raise InputError(f"CLIP vocabulary {path} does not exist; pass the path of "
                             f"{CLIP_VOCAB_FILE} (shipped in the open-clip-torch wheel)")
        return path
    try:
        files = importlib.metadata.files("open_clip_torch") or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for entry in files:
        if entry.name == CLIP_VOCAB_FILE:
            path = Path(str(entry.locate()))
            if path.is_file():
                return path
    raise InputError(f"cannot find CLIP's vocabulary {CLIP_VOCAB_FILE}: install it with "
                     "`pip install --no-deps open-clip-torch`, or pass the path of the file")


def _read_clip_merges(path: Path) -> list[tuple[str, str]]:
    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            lines = handle.read().split("\n")
    except (OSError, EOFError, UnicodeDecodeError, zlib.error) as exc:
        raise InputError(f"CLIP vocabulary {path} is unreadable ({exc}); it must be the gzip "
                         f"file {CLIP_VOCAB_FILE} from open-clip-torch") from exc
    merges = [tuple(line.split()) for line in lines[1:CLIP_N_MERGES + 1]]
    if len(merges) != CLIP_N_MERGES or any(len(merge) != 2 for merge in merges):
        raise InputError(f"CLIP vocabulary {path} is not CLIP's merges file (need "
                         f"{CLIP_N_MERGES} lines of two symbols); use {CLIP_VOCAB_FILE} from "
                         "open-clip-torch")
    return merges  # type: ignore[return-value]


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins for bytes, in CLIP's (and GPT-2's) vocabulary order.

    Printable Latin-1 bytes stand for themselves and come first; the others (controls, space,
    soft hyphen) take the code points from 256 upwards, in byte order.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    others = sorted(set(range(256)) - set(printable))
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(len(others))]


def clip_tokenizer(vocab_path: str | Path | None = None, *,
                   context_length: int = DEFAULT_CONTEXT_LENGTH) -> UrbanTokenizer:
    """CLIP's BPE (49,408 tokens) with open_clip's ids, for pretrained CLIP/CoCa text towers."""
    merges = _read_clip_merges(find_clip_vocab(vocab_path))
    symbols = _byte_symbols()
    tokens = [*symbols, *(s + "</w>" for s in symbols), *("".join(m) for m in merges), BOS, EOS]
    vocab = {token: index for index, token in enumerate(tokens)}
    if len(vocab) != CLIP_VOCAB_SIZE:
        raise InputError("CLIP vocabulary file repeats merges, so its ids would not match "
                         f"CLIP's; use the original {CLIP_VOCAB_FILE} from open-clip-torch")
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, end_of_word_suffix="</w>"))
    tokenizer.normalizer = _lower_and_space_normalizer()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_CLIP_SPLIT), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.Sequence([decoders.ByteLevel(), decoders.Replace("</w>", " ")])
    specials = [AddedToken(token, special=True, normalized=False) for token in (BOS, EOS)]
    tokenizer.add_special_tokens(specials)
    return UrbanTokenizer(tokenizer, "clip", context_length=context_length)


def _check_context_length(context_length: int) -> None:
    if context_length < 3:
        raise InputError(f"context_length {context_length} is too short: it must hold "
                         "<start_of_text>, at least one token and <end_of_text>")


# --------------------------------------------------------------------------------------------
# Fitting long captions
# --------------------------------------------------------------------------------------------

# A sentence ends at . ! ? or … followed by whitespace, or at a CJK full stop/!/? (no space).
_SENTENCE_BORDER = re.compile(r"(?<=[.!?…])\s+|(?<=[。！？])")


def split_sentences(text: str) -> list[str]:
    """Split a caption at sentence borders (decimals such as ``3.5`` stay whole)."""
    return [" ".join(s.split()) for s in _SENTENCE_BORDER.split(text) if s.strip()]


@dataclass(frozen=True)
class FitResult:
    """Captions fitted to a context: the pieces to tokenise and what it took to get them.

    ``sources[i]`` is the index of the caption that ``texts[i]`` came from, so a chunked
    caption's pieces can all be paired with its image.
    """

    texts: list[str]
    sources: list[int]
    n_input: int
    n_truncated: int  # captions that lost their tail (mode "truncate_sentences")
    n_chunked: int  # captions split into several pieces (mode "chunk")
    n_cut_mid_sentence: int  # captions with a sentence longer than the context, cut between words

    def summary(self) -> str:
        """One line for a progress ``info`` or a training log."""
        return (f"{self.n_input} captions -> {len(self.texts)} texts: {self.n_truncated} truncated,"
                f" {self.n_chunked} chunked, {self.n_cut_mid_sentence} cut inside a sentence")


# --------------------------------------------------------------------------------------------
# The common interface
# --------------------------------------------------------------------------------------------

def padding_after_first_eos(ids: Any, eos_id: int) -> Any:
    """True at every position after the first ``eos_id`` of its row (numpy or torch).

    The one padding rule of tokenizer, text tower, loss and decoder: with the CLIP vocabulary
    the pad id is also the token ``!``, so ``ids == pad_id`` would hide real text.
    """
    is_eos = ids == eos_id
    return is_eos.cumsum(-1) > is_eos


class UrbanTokenizer:
    """One interface over both kinds; see the module docstring for their ids."""

    def __init__(self, tokenizer: Tokenizer, kind: TokenizerKind, *,
                 context_length: int = DEFAULT_CONTEXT_LENGTH) -> None:
        if kind not in ("bpe", "clip"):
            raise ModelError(f"unknown tokenizer kind {kind!r}; expected 'bpe' or 'clip'")
        _check_context_length(context_length)
        self._tokenizer = tokenizer
        self.kind: TokenizerKind = kind
        self.context_length = context_length
        self.bos_id = self._special_id(BOS)
        self.eos_id = self._special_id(EOS)
        self.pad_id = CLIP_PAD_ID if kind == "clip" else self._special_id(PAD)
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)

    def _special_id(self, token: str) -> int:
        token_id = self._tokenizer.token_to_id(token)
        if token_id is None:
            raise ModelError(f"the {self.kind} tokenizer lacks the special token {token}; "
                             "the tokenizer file is not one urbangeo wrote")
        return token_id

    @property
    def config(self) -> dict[str, Any]:
        """What a model's ``config.json`` records about its tokenizer."""
        return {"format": CONFIG_FORMAT, "kind": self.kind, "context_length": self.context_length,
                "vocab_size": self.vocab_size, "pad_id": self.pad_id, "bos_id": self.bos_id,
                "eos_id": self.eos_id}

    # ---- encoding -------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """Token ids of one text, without ``<start_of_text>``/``<end_of_text>``."""
        return self._tokenizer.encode(clean_text(text), add_special_tokens=False).ids

    def _encode_many(self, texts: Sequence[str]) -> list[list[int]]:
        cleaned = [clean_text(t) for t in texts]
        return [e.ids for e in self._tokenizer.encode_batch(cleaned, add_special_tokens=False)]

    def encode_batch(self, texts: str | Sequence[str], context_length: int | None = None, *,
                     overflow: Literal["truncate", "error"] = "truncate",
                     return_tensors: Literal["np", "pt"] = "np") -> np.ndarray | torch.Tensor:
        """(N, context_length) int64 ids: ``<start_of_text> ... <end_of_text>`` then padding.

        Too-long texts are cut as open_clip cuts them (``<end_of_text>`` kept last) with
        ``overflow="truncate"``; ``"error"`` raises instead, for callers that already ran
        :meth:`fit_to_context` and want to be sure nothing is lost.
        """
        if overflow not in ("truncate", "error") or return_tensors not in ("np", "pt"):
            raise InputError(f"overflow must be 'truncate' or 'error' (got {overflow!r}) and "
                             f"return_tensors 'np' or 'pt' (got {return_tensors!r})")
        texts = [texts] if isinstance(texts, str) else list(texts)
        length = self.context_length if context_length is None else context_length
        _check_context_length(length)
        out = np.full((len(texts), length), self.pad_id, dtype=np.int64)
        too_long = []
        for row, ids in enumerate(self._encode_many(texts)):
            tokens = [self.bos_id, *ids, self.eos_id]
            if len(tokens) > length:
                too_long.append(row)
                tokens = [*tokens[:length - 1], self.eos_id]
            out[row, :len(tokens)] = tokens
        if too_long and overflow == "error":
            raise DataError(f"{len(too_long)} of {len(texts)} captions exceed the context of "
                            f"{length} tokens (first: #{too_long[0]}); shorten them with "
                            "fit_to_context() or raise the context length")
        if return_tensors == "pt":
            import torch

            return torch.from_numpy(out)
        return out

    def padding_mask(self, ids: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """True at padding: every position after the first ``<end_of_text>`` of its row.

        Works on numpy arrays and torch tensors alike. Needed because the clip kind pads with
        id 0, which is also the token ``!``, so ``ids == pad_id`` would hide real text.
        """
        return padding_after_first_eos(ids, self.eos_id)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of one row of ids: stops at ``<end_of_text>``, skips the special tokens.

        The bpe kind gives the cleaned text back exactly; the clip kind, like open_clip, ends
        every word with a space (``"a photo of a cat ."``), as its tokens do not record spacing.
        """
        ids = [int(i) for i in ids]
        if self.eos_id in ids:
            ids = ids[:ids.index(self.eos_id)]
        return self._tokenizer.decode(ids, skip_special_tokens=True).strip()

    # ---- long captions --------------------------------------------------------------------

    def fit_to_context(self, texts: str | Sequence[str], context_length: int | None = None, *,
                       mode: FitMode = "truncate_sentences",
                       progress: Progress = SILENT) -> FitResult:
        """Make every caption fit the context on purpose, at sentence borders.

        ``"truncate_sentences"`` keeps the longest run of whole leading sentences that fits;
        ``"chunk"`` splits a caption into several texts (each a training sample), packing whole
        sentences greedily. A single sentence longer than the context is cut between words (a
        word longer than the context, between characters) and counted in
        ``n_cut_mid_sentence``. Pieces are the caption's own words joined by single spaces.
        """
        if mode not in ("truncate_sentences", "chunk"):
            raise InputError(f"unknown fit mode {mode!r}; use 'truncate_sentences' or 'chunk'")
        texts = [texts] if isinstance(texts, str) else list(texts)
        length = self.context_length if context_length is None else context_length
        budget = length - 2  # room left by <start_of_text> and <end_of_text>
        if budget < 4:  # one character may take 4 byte tokens
            raise InputError(f"context_length {length} is too short to fit captions into; "
                             "use at least 6")
        progress.start("fit captions to context", len(texts))
        split = [split_sentences(text) for text in texts]
        counts = iter(self._lengths([s for sentences in split for s in sentences]))
        pieces: list[str] = []
        sources: list[int] = []
        truncated = chunked = cut = 0
        for index, sentences in enumerate(split):
            units = self._units(sentences, [next(counts) for _ in sentences], budget)
            groups = _pack(units, budget) or [[]]
            if mode == "truncate_sentences":
                kept = groups[0]
                truncated += len(groups) > 1
                cut += any(unit.part != "sentence" for unit in kept)
                groups = [kept]
            else:
                chunked += len(groups) > 1
                cut += any(unit.part != "sentence" for unit in units)
            for group in groups:
                pieces.append(" ".join(unit.text for unit in group))
                sources.append(index)
            progress.advance()
        result = FitResult(pieces, sources, len(texts), truncated, chunked, cut)
        progress.info(result.summary())
        progress.finish()
        return result

    def _lengths(self, texts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self._encode_many(texts)]

    def _units(self, sentences: list[str], counts: list[int], budget: int) -> list[_Unit]:
        """The caption as sentences with token counts; too-long sentences as word pieces.

        Counting pieces separately is exact because neither kind merges tokens across
        whitespace, and pieces are rejoined with single spaces.
        """
        units: list[_Unit] = []
        for sentence, count in zip(sentences, counts, strict=True):
            if count <= budget:
                units.append(_Unit(sentence, count, "sentence"))
                continue
            words = sentence.split()
            pieces: list[_Unit] = []
            for word, word_count in zip(words, self._lengths(words), strict=True):
                if word_count <= budget:
                    pieces.append(_Unit(word, word_count, "piece"))
                else:
                    pieces.extend(self._split_word(word, budget))
            units.append(replace(pieces[0], part="head"))
            units.extend(pieces[1:])
        return units

    def _split_word(self, word: str, budget: int) -> list[_Unit]:
        """Cut a word longer than the context into character runs that each fit."""
        units = []
        while word:
            fits, too_long = 1, len(word) + 1  # a single character always fits (<= 4 tokens)
            while too_long - fits > 1:  # bisection keeping a prefix that fits
                mid = (fits + too_long) // 2
                if len(self.encode(word[:mid])) <= budget:
                    fits = mid
                else:
                    too_long = mid
            units.append(_Unit(word[:fits], len(self.encode(word[:fits])), "piece"))
            word = word[fits:]
        return units

    # ---- files ----------------------------------------------------------------------------

    def save(self, directory: str | Path) -> None:
        """Write ``tokenizer.json`` (tokenizers' own format) and ``tokenizer_config.json``.

        The clip kind is stored whole, so loading it needs neither open_clip nor its vocab file.
        """
        directory = Path(directory)
        write_text_atomic(directory / TOKENIZER_FILE, self._tokenizer.to_str(pretty=True))
        write_text_atomic(directory / CONFIG_FILE, json.dumps(self.config, indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | Path) -> UrbanTokenizer:
        """Read a tokenizer that :meth:`save` wrote, checking that both files agree."""
        directory = Path(directory)
        config_path, tokenizer_path = directory / CONFIG_FILE, directory / TOKENIZER_FILE
        for path in (config_path, tokenizer_path):
            if not path.is_file():
                raise ModelError(f"{path} is missing; {directory} holds no saved urbangeo "
                                 "tokenizer (save one with UrbanTokenizer.save)")
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
            tokenizer = Tokenizer.from_file(str(tokenizer_path))
        except Exception as exc:  # tokenizers raises a bare Exception
            raise ModelError(f"cannot read the tokenizer in {directory} ({exc}); the files are "
                             "corrupt: save the tokenizer again") from exc
        if (not isinstance(config, dict) or config.get("format") != CONFIG_FORMAT
                or not isinstance(config.get("context_length"), int)):
            raise ModelError(f"{config_path} is not an urbangeo tokenizer config "
                             f"(format {CONFIG_FORMAT!r}); save the tokenizer again")
        loaded = cls(tokenizer, config.get("kind"), context_length=config["context_length"])
        if loaded.config != config:
            raise ModelError(f"{config_path} does not match {tokenizer_path} (kind, ids, "
                             "vocabulary size or context length differ); save the tokenizer again")
        return loaded


@dataclass(frozen=True)
class _Unit:
    """A whole sentence, or a piece of one longer than the context, with its token count.

    ``part`` is ``"sentence"``, ``"head"`` (first piece of a cut sentence) or ``"piece"``.
    """

    text: str
    count: int
    part: Literal["sentence", "head", "piece"]


def _pack(units: list[_Unit], budget: int) -> list[list[_Unit]]:
    """Group consecutive units greedily within the budget; a cut sentence opens a new group.

    Opening a group at a cut sentence keeps the cut at the sentence's end rather than its
    start: earlier whole sentences are never followed by a fragment.
    """
    groups: list[list[_Unit]] = []
    used = 0
    for unit in units:
        if not groups or unit.part == "head" or used + unit.count > budget:
            groups.append([])
            used = 0
        groups[-1].append(unit)
        used += unit.count
    return groups
