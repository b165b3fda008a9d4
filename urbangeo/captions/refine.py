"""Rule-based caption refinement (paper §3.1): drop what is vague, unfactual or unresolvable.

Malformed input policy: a non-string, or text that is mostly control/binary characters, raises
:class:`DataError` (it is a bug upstream, not a caption). Empty or whitespace-only text, and
text whose every sentence is removed (pure boilerplate), refine to ``""`` with
``emptied = True``: callers count these instead of failing a whole run over one cell.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

from urbangeo.captions.rules import ACTIONS, LAND_USE_WORDS, RULES, Rule
from urbangeo.errors import DataError, InputError

MAX_SENTENCES = 8
MAX_CHARS = 700

_SENTENCE_END = re.compile(r"(?<=[.!?])\s*(?=[A-Z\"'(])|\n+")
_CLAUSE_SPLIT = re.compile(r"(\s*[,;:]\s+|\s+-\s+|\s*[,;]\s*(?=and\b|while\b|with\b|but\b))")
_WORD = re.compile(r"[a-z0-9']+")
_DEPENDENT = frozenset({"which", "who", "with", "including", "and", "or", "but", "while", "such",
                        "as", "to", "for", "from", "of", "on", "in", "at", "by", "some", "others",
                        "both", "either"})
"""First words of a clause that cannot stand alone once the main clause before it is removed."""
_CONNECTIVE = re.compile(r"\s*(?:additionally|in addition|moreover|furthermore|also|in total|"
                         r"overall|meanwhile|however)\s*[,;:]?\s*", re.IGNORECASE)


@dataclass
class RefineResult:
    """The refined text and what each rule did to it: rule name -> hit count, removed text."""

    text: str = ""
    hits: dict[str, int] = field(default_factory=dict)
    removed: dict[str, list[str]] = field(default_factory=dict)
    sentences_in: int = 0
    sentences_out: int = 0
    emptied: bool = False

    def record(self, rule: str, fragment: str) -> None:
        self.hits[rule] = self.hits.get(rule, 0) + 1
        self.removed.setdefault(rule, []).append(fragment.strip())


def _check_text(text: object) -> str:
    if not isinstance(text, str):
        raise DataError(f"caption is {type(text).__name__}, not text: captions must be strings "
                        "(check the backend's output or the caption column)")
    junk = sum(1 for ch in text if (ord(ch) < 32 and ch not in "\n\t\r") or ch == "\ufffd")
    if text and junk / len(text) > 0.05:
        raise DataError(f"caption looks like binary data ({junk} control characters in "
                        f"{len(text)}): re-run the caption backend for this cell")
    return text


def split_sentences(text: str) -> list[str]:
    """Sentences, including ones glued without a space ("trees.There are")."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


_STOP = frozenset({"a", "an", "the", "is", "are", "of", "and", "with", "in", "on", "to", "there",
                   "it", "this", "that", "also", "some", "several"})


def _words(sentence: str) -> set[str]:
    """Content words: near-duplicates differ mostly in articles and fillers."""
    return set(_WORD.findall(sentence.lower())) - _STOP


def _tidy(sentence: str) -> str:
    s = re.sub(r"\s+", " ", sentence).strip(" ,;:-")
    s = re.sub(r"\s+([,.;:])", r"\1", s)
    s = re.sub(r",\s*,", ",", s)
    s = re.sub(r"\b([Aa]) (?=[aeiou])", r"\1n ", s)  # a rewrite may leave "a area"
    s = re.sub(r"\b([Aa])n (?=[b-df-hj-np-tv-z])", r"\1 ", s)
    if not s:
        return s
    s = s[0].upper() + s[1:]
    return s if s[-1] in ".!?" else s.rstrip(",;:") + "."


def _applies(rule: Rule, pixel_size_m: float) -> bool:
    return rule.min_pixel_size_m is None or pixel_size_m >= rule.min_pixel_size_m


def _remove_clauses(rx: re.Pattern[str], sentence: str, rule: Rule,
                    report: RefineResult) -> tuple[str, str]:
    """The sentence without matching clauses, and the removed text (for ``keep``)."""
    parts = _CLAUSE_SPLIT.split(sentence)
    clauses, seps = parts[0::2], parts[1::2] + [""]
    kept: list[str] = []
    removed: list[str] = []
    for clause, sep in zip(clauses, seps, strict=True):
        if rx.search(clause):
            report.record(rule.name, clause)
            removed.append(clause)
        else:
            kept.append(clause + sep)
    out = "".join(kept)
    main_removed = not kept or kept[0] != clauses[0] + seps[0] or _CONNECTIVE.fullmatch(kept[0])
    core = kept[1:] if kept and _CONNECTIVE.fullmatch(kept[0]) else kept
    head = _WORD.findall("".join(core).lower())[:1]
    if len(_WORD.findall(out.lower())) < 3 or (
            main_removed and head
            and (head[0] in _DEPENDENT or head[0].endswith(("ing", "ed")))):
        if out.strip():
            report.record(rule.name, out)
            removed.append(out)
        out = ""
    return out, " ".join(removed)


def _known(sentences: list[str], current: str, kept_part: str) -> str:
    """Text that stays besides the current sentence: places named there need no salvage."""
    return " ".join([kept_part, *(o for o in sentences if o is not current)]).lower()


def _salvage(rule: Rule, removed: str, known: str) -> str:
    """'It includes streets and a parking lot.' for places named only in removed text."""
    if not rule.keep:
        return ""
    places: list[str] = []
    for m in re.finditer(rule.keep, removed, re.IGNORECASE):
        named = m.group(0).lower()
        place = f"{named} areas" if named in LAND_USE_WORDS else named  # "urban" -> "urban areas"
        if named not in known and place not in places:
            places.append(place)
    if not places:
        return ""
    items = [p if p.endswith("s") else ("an " if p[0] in "aeiou" else "a ") + p for p in places]
    listed = items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
    return f"It includes {listed}."


def _apply(rule: Rule, rx: re.Pattern[str] | None, sentences: list[str],
           report: RefineResult) -> list[str]:
    if rule.action == "remove-duplicate":
        kept: list[tuple[str, set[str]]] = []
        for s in sentences:
            w = _words(s)
            if any(len(w & k) / max(1, len(w | k)) >= rule.threshold for _, k in kept):
                report.record(rule.name, s)
            else:
                kept.append((s, w))
        return [s for s, _ in kept]
    assert rx is not None
    out = []
    for original in sentences:
        s = original
        if rule.action == "remove-sentence":
            if rx.search(s):
                report.record(rule.name, s)
                salvaged = _salvage(rule, s, _known(sentences, original, ""))
                out.extend([salvaged] if salvaged else [])
                continue
        elif rule.action == "remove-clause" and rx.search(s):
            s, removed = _remove_clauses(rx, s, rule, report)
            salvaged = _salvage(rule, removed, _known(sentences, original, s))
            if salvaged:
                out.extend(t for t in (_tidy(s), salvaged) if t)
                continue
        elif rule.action == "remove-phrase" and rx.search(s):
            phrases = [m.group(0) for m in rx.finditer(s)]
            for phrase in phrases:
                report.record(rule.name, phrase)
            s = _tidy(rx.sub("", s))
            salvaged = _salvage(rule, " ".join(phrases), _known(sentences, original, s))
            if salvaged:
                out.extend(t for t in (s, salvaged) if t)
                continue
        elif rule.action == "rewrite":
            for m in rx.finditer(s):
                report.record(rule.name, m.group(0))
            s = rx.sub(rule.replacement, s)
        s = _tidy(s)
        if s:
            out.append(s)
    return out


def _compile(rules: Sequence[Rule]) -> list[tuple[Rule, re.Pattern[str] | None]]:
    compiled = []
    for rule in rules:
        if rule.action not in ACTIONS:
            raise InputError(f"rule {rule.name!r} has action {rule.action!r}: use one of "
                             f"{', '.join(ACTIONS)}")
        if rule.action == "remove-duplicate":
            compiled.append((rule, None))
            continue
        try:
            compiled.append((rule, re.compile(rule.pattern, re.IGNORECASE)))
        except re.error as exc:
            raise InputError(f"rule {rule.name!r} has an invalid regular expression "
                             f"{rule.pattern!r}: {exc}") from exc
    return compiled


def _limit(sentences: list[str], max_sentences: int, max_chars: int,
           report: RefineResult) -> list[str]:
    """Keep whole sentences from the start while both limits hold (never cut mid-sentence)."""
    kept: list[str] = []
    total = 0
    for s in sentences:
        add = len(s) + (1 if kept else 0)
        if len(kept) >= max_sentences or (kept and total + add > max_chars):
            report.record("length_limit", s)
            continue
        kept.append(s)
        total += add
    return kept


def refine(text: object, pixel_size_m: float = 4.0, *, rules: Sequence[Rule] = RULES,
           extra_rules: Iterable[Rule] = (), max_sentences: int = MAX_SENTENCES,
           max_chars: int = MAX_CHARS) -> RefineResult:
    """Refine one caption: the text plus a report of what each rule removed.

    ``pixel_size_m`` (ground size of a chip pixel) switches resolution-dependent rules on or
    off. ``extra_rules`` run after ``rules``.
    """
    report = RefineResult()
    sentences = split_sentences(_check_text(text))
    report.sentences_in = len(sentences)
    for rule, rx in _compile([*rules, *extra_rules]):
        if _applies(rule, pixel_size_m):
            sentences = _apply(rule, rx, sentences, report)
    sentences = _limit(sentences, max_sentences, max_chars, report)
    report.sentences_out = len(sentences)
    report.emptied = not sentences
    report.text = " ".join(sentences)
    return report


def load_rules(path: str | Path) -> list[Rule]:
    """Read extra rules from JSON (a list of records) or TOML (``[[rule]]`` tables)."""
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8")
        data = tomllib.loads(raw).get("rule", []) if path.suffix == ".toml" else json.loads(raw)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read rules file {path}: {exc}; give a JSON list of rules "
                         "or a TOML file with [[rule]] tables") from exc
    known = {f.name for f in fields(Rule)}
    out = []
    for i, rec in enumerate(data if isinstance(data, list) else [data]):
        if not isinstance(rec, dict) or not {"name", "action"} <= rec.keys() \
                or not rec.keys() <= known:
            raise InputError(f"rule #{i + 1} in {path} must be a record with 'name' and "
                             f"'action' and only the fields {sorted(known)}")
        out.append(Rule(**rec))
    _compile(out)
    return out
