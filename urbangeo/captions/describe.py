"""The embedded ``describe`` backend: a factual caption from measured land cover, offline.

It writes in the style of the paper's refined summaries (dominant cover first, then secondary
covers with where they lie, linear features, the built fabric, then mapped context), and only
claims what :mod:`urbangeo.captions.landcover` measured. Phrasing varies between cells —
captions that all read alike teach a text encoder nothing — but is chosen by a hash of the
``cell_id``, so the same chip always gets the same text.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from urbangeo.captions.base import ChipInfo
from urbangeo.captions.landcover import (
    CLASSES,
    COARSE_M,
    SECTOR_NAMES,
    LandCover,
    LinearFeature,
    measure,
)

VERSION = "5"
"""Bump when wording or measurements change, so cached captions are redone."""

FINE_M = 2.0
"""At or below this pixel size single trees and houses are resolved."""

NOUNS = {  # tier -> class -> noun phrase; tiers follow what a pixel can resolve
    "fine": {"water": "water", "vegetation": "trees and greenery", "built": "buildings",
             "bare": "bare ground"},
    "medium": {"water": "water", "vegetation": "vegetation", "built": "built-up land",
               "bare": "bare ground"},
    "coarse": {"water": "open water", "vegetation": "vegetated land",
               "built": "built-up land", "bare": "dry grass or bare ground"},
}

DOMINANT = (
    "The area is dominated by {noun}.",
    "{Noun} cover{s} most of the area.",
    "Most of the area is {noun}.",
)
MAINLY = (
    "The area is mainly {noun}.",
    "{Noun} {is_} the largest land cover here.",
    "The largest part of the area is {noun}.",
)
MIX = (
    "The area is a mix of {a} and {b}.",
    "{A} and {b} share the area.",
)
SECONDARY = (
    "{Noun} cover{s} {share} of the area, {where}.",
    "{Noun} take{s} up {share}, {where}.",
    "{Share} of the area is {noun}, {where}.",
)
LINE = (
    "A long straight corridor (road, railway or canal) runs {orient} {through}.",
    "A straight {orient} corridor, a road, railway or canal, crosses {through_short}.",
)
LINES = (
    "Straight corridors (roads, railways or canals) run {runs}.",
    "Long straight corridors, roads, railways or canals, run {runs}.",
)
LINES_PARALLEL = (
    "Parallel straight corridors (roads, railways or canals) run {orient}, {places}.",
    "Several straight {orient} corridors, roads, railways or canals, run {places}.",
)


MENTION = {"water": 0.03}
"""Smallest share worth a sentence, 8% unless listed: a river or lake is a landmark even small."""

PLURAL = {"trees and greenery", "buildings"}


def _agree(noun: str) -> dict[str, str]:
    """Template fields for ``noun`` and its verb agreement ("buildings cover", "water covers")."""
    plural = noun in PLURAL
    return {"noun": noun, "Noun": _cap(noun), "s": "" if plural else "s",
            "is_": "are" if plural else "is"}


def _pick(options: tuple[str, ...], seed: bytes, slot: int) -> str:
    return options[seed[slot % len(seed)] % len(options)]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _share_words(frac: float) -> str:
    for limit, words in ((0.07, "a small part"), (0.15, "about a tenth"), (0.22, "about a fifth"),
                         (0.29, "about a quarter"), (0.4, "about a third"),
                         (0.55, "about half")):
        if frac < limit:
            return words
    return "more than half"


def _where(sectors: np.ndarray, frac: float) -> str:
    """Where a class lies: named sectors clearly above its chip-wide share, or 'throughout'.

    A small class (a river winding through a tenth of the chip) may fill no sector to 35%;
    it is still located by the sectors holding well above its share, not called widespread.
    """
    strong: set[str] = set()
    for floor in (max(0.35, 1.5 * frac), 1.5 * frac):
        strong = {SECTOR_NAMES[i][j] for i in range(3) for j in range(3)
                  if sectors[i, j] >= floor}
        if strong:
            break
    if not strong or len(strong) >= 6:
        return "spread throughout"
    for side, members in (("north", {"north-west", "north", "north-east"}),
                          ("south", {"south-west", "south", "south-east"}),
                          ("west", {"north-west", "west", "south-west"}),
                          ("east", {"north-east", "east", "south-east"})):
        if members <= strong:
            return f"along the {side}ern edge"
    order = [n for row in SECTOR_NAMES for n in row if n in strong]
    names = [("the centre" if n == "centre" else f"the {n}") for n in order[:4]]
    return "concentrated in " + (names[0] if len(names) == 1
                                 else ", ".join(names[:-1]) + " and " + names[-1])


def _built_fabric(cover: LandCover, tier: str) -> str | None:
    """One sentence on the built fabric, only when built-up land is a large share.

    Fine tiers read texture: Haiti's dense settlement has a mean local std of ≈ 27 over built
    pixels and an edge density of ≈ 0.38; looser fabric with yards sits near 20. Coarse
    (Landsat) pixels cannot show buildings, so there only built/vegetation mixing is told.
    """
    built = cover.fractions["built"]
    if built < 0.3:
        return None
    if tier == "coarse":
        if built > 0.6 and cover.fractions["vegetation"] < 0.15:
            return "The built-up land is continuous, with little vegetation between blocks."
        return "Built-up land is interspersed with vegetation and open ground."
    if cover.built_texture > 28 and cover.edge_density > 0.3:
        return "Buildings are small and tightly packed, separated by narrow streets."
    if cover.built_texture > 20:
        return "Buildings stand close together along a street network."
    return "Buildings are large or loosely spaced, with open ground between them."


def _plural(word: str, n: int) -> str:
    word = str(word).replace("_", " ")
    if n == 1:
        return word
    if word.endswith("y") and word[-2:-1] not in "aeiou":
        return word[:-1] + "ies"
    if word.endswith(("s", "x", "ch", "sh")):
        return word + "es"
    return word + "s"


def _listing(counts: Mapping[str, int], limit: int = 4) -> str:
    top = sorted(((n, k) for k, n in counts.items() if n), key=lambda t: (-t[0], t[1]))[:limit]
    parts = [f"{n} {_plural(k, n)}" for n, k in top]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


LABELS = {"poi": "points of interest", "pois": "points of interest"}


def _context_sentences(context: Mapping[str, Any]) -> list[str]:
    """Sentences from vector-layer facts.

    Accepted shapes, per key: ``{"category": count}`` (e.g. ``"poi"``); the
    :func:`urbangeo.geo.context.vector_context` record ``{"count", "categories", "length_km"}``;
    or a number under a key ending in ``_km`` (e.g. ``"roads_km": 3.2``).
    """
    out = []
    for key in sorted(context):
        value = context[key]
        label = LABELS.get(str(key), str(key).replace("_", " "))
        if isinstance(value, Mapping) and "count" in value:
            if value.get("length_km"):
                out.append(f"Mapped {label} total {float(value['length_km']):.1f} km in the area.")
            elif value.get("categories"):
                out.append(f"Mapped {label} include {_listing(value['categories'])}.")
            elif value["count"]:
                out.append(f"The {label} layer maps {int(value['count'])} features here.")
        elif isinstance(value, Mapping) and value:
            out.append(f"Mapped {label} include {_listing(value)}.")
        elif str(key).endswith("_km") and isinstance(value, (int, float)) and value > 0:
            kind = label[:-3].strip().removesuffix("s")
            out.append(f"The mapped {kind} network totals {value:.1f} km.")
    return out


def _through(line: LinearFeature) -> str:
    return "through the centre" if line.sector == "centre" else f"across the {line.sector}"


def _lines_sentence(lines: Sequence[LinearFeature], seed: bytes) -> str:
    """One sentence for all linear features: a sentence each reads as a repeated template."""
    if len(lines) == 1:
        through = _through(lines[0])
        return _pick(LINE, seed, 5).format(orient=lines[0].orientation, through=through,
                                           through_short=through.split(" ", 1)[1])
    orients = list(dict.fromkeys(line.orientation for line in lines))
    if len(orients) == 1:
        return _pick(LINES_PARALLEL, seed, 5).format(
            orient=orients[0], places=" and ".join(_through(line) for line in lines))
    runs = " and ".join(f"{line.orientation} {_through(line)}" for line in lines)
    return _pick(LINES, seed, 5).format(runs=runs)


def compose(cover: LandCover, info: ChipInfo) -> str:
    """Turn measurements into sentences; phrasing is chosen by a hash of ``info.cell_id``."""
    seed = hashlib.sha256(info.cell_id.encode()).digest()
    tier = ("fine" if info.pixel_size_m <= FINE_M
            else "coarse" if info.pixel_size_m >= COARSE_M else "medium")
    nouns = NOUNS[tier]
    ranked = sorted(CLASSES, key=lambda c: -cover.fractions[c])
    first, second = ranked[0], ranked[1]
    f1 = cover.fractions[first]
    sentences = []
    if f1 >= 0.6:
        template = _pick(DOMINANT, seed, 0)
    elif f1 >= 0.4 or cover.fractions[second] < 0.25:
        template = _pick(MAINLY, seed, 0)
    else:
        template = None
        a, b = nouns[first], nouns[second]
        sentences.append(_pick(MIX, seed, 0).format(a=a, A=_cap(a), b=b))
    if template:
        sentences.append(template.format(**_agree(nouns[first])))
        where = _where(cover.sectors[first], f1)
        if f1 < 0.6 and not where.startswith("spread"):
            sentences.append(f"{_cap(nouns[first])} {_agree(nouns[first])['is_']} {where}.")
    secondary = [c for c in ranked[1:] if cover.fractions[c] >= MENTION.get(c, 0.08)]
    if template is None:
        secondary = [c for c in secondary if c != second]
    for k, cls in enumerate(secondary):
        frac = cover.fractions[cls]
        sentences.append(_pick(SECONDARY, seed, 1 + k).format(
            share=_share_words(frac), Share=_cap(_share_words(frac)),
            where=_where(cover.sectors[cls], frac),
            **_agree(nouns[cls])))
    if cover.lines:
        sentences.append(_lines_sentence(cover.lines[:2], seed))
    fabric = _built_fabric(cover, tier)
    if fabric:
        sentences.append(fabric)
    if cover.valid_fraction < 0.9:
        sentences.append(f"Only {round(100 * cover.valid_fraction)}% of the area has imagery.")
    sentences.extend(_context_sentences(info.context))
    return " ".join(sentences)


class DescribeCaptioner:
    """Caption backend that measures land cover and writes it up; deterministic and offline."""

    name = "describe"

    def cache_key(self) -> str:
        return f"describe:v{VERSION}"

    def caption(self, chip: np.ndarray, info: ChipInfo) -> str:
        return compose(measure(chip, info.band_names, info.pixel_size_m), info)
