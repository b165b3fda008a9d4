"""The refinement rule table (paper §3.1): plain data that users extend, not code.

Each :class:`Rule` names a regular expression (case-insensitive), what to do with a match, and
when it applies. Actions:

- ``remove-sentence`` — drop every sentence that matches (generic summaries, speculation).
- ``remove-clause`` — drop the comma/semicolon-delimited clause that matches, keeping the rest
  of the sentence ("a body of water, possibly a lake, surrounded by trees" keeps its facts);
  a sentence left with fewer than three words goes too. With ``keep`` (a regex), the places a
  removed clause mentions survive: "several cars are driving along the streets near a parking
  lot" becomes "It includes streets and a parking lot." — the cars were invented, the
  streets and the parking lot are infrastructure visible at the chip's resolution.
  ``remove-sentence`` and ``remove-phrase`` rules take ``keep`` too: "The scene gives a sense
  of a bustling mix of residential and commercial areas" leaves "It includes residential and
  commercial areas."; ", creating a dense urban environment" leaves "It includes urban areas.".
- ``remove-phrase`` — delete just the matched text (a trailing ", indicating that ...").
- ``rewrite`` — replace the match with ``replacement`` (``re.sub`` syntax, groups allowed).
- ``remove-duplicate`` — drop a sentence whose word set overlaps an earlier one by at least
  ``threshold`` (Jaccard); ``pattern`` is unused.

``min_pixel_size_m`` makes a rule apply only when the chip's pixels are at least that coarse:
cars and people are facts at 0.3 m and hallucinations at 1 m and above.

Rules run in table order, so a sentence-level rule can claim a sentence before a phrase rule
leaves a fragment of it. Users add rules with ``refine(..., extra_rules=...)`` or a JSON/TOML
file (:func:`urbangeo.captions.refine.load_rules`) holding a list of rule records.
"""

from __future__ import annotations

from dataclasses import dataclass

ACTIONS = ("remove-sentence", "remove-clause", "remove-phrase", "rewrite", "remove-duplicate")


@dataclass(frozen=True)
class Rule:
    """One refinement rule; see the module docstring for the actions."""

    name: str
    action: str
    pattern: str = ""
    replacement: str = ""
    min_pixel_size_m: float | None = None
    threshold: float = 0.8
    keep: str = ""
    description: str = ""


_VIEW = (r"(?:(?:aerial|satellite|bird'?s[- ]eye|top[- ]down|overhead|high[- ]altitude|"
         r"close[- ]up|wide|panoramic)\s+)+(?:view|image|shot|photo(?:graph)?|perspective)")
_IMAGE = r"(?:the|this)\s+(?:image|picture|photo(?:graph)?|satellite image|aerial image|scene)"

PLACES = (r"\b(?:parking (?:lots?|areas?|spaces?)|streets?|roads?|highways?|intersections?|"
          r"parks?|fields?|bridges?|railways?|train tracks?|tracks|rivers?|lakes?|ponds?|"
          r"canals?|buildings?|houses?|factories|factory|warehouses?|shops?|stores?|markets?|"
          r"schools?|stadiums?|airports?|runways?|ports?|docks?|piers?|farms?|"
          r"construction sites?|residential areas?|industrial areas?|commercial areas?|"
          r"neighbou?rhoods?|golf courses?|trees|forests?|gardens?|plazas?|squares?)\b")
"""Infrastructure resolvable at a few metres: what object and mood rules keep."""

LAND_USE_WORDS = ("residential", "commercial", "industrial", "agricultural", "recreational",
                  "educational", "urban", "suburban", "rural", "natural")
LAND_USE = (rf"\b(?:{'|'.join(LAND_USE_WORDS)})"
            r"(?:\s+(?:areas?|buildings?|zones?|spaces?|complex(?:es)?|districts?|"
            r"facilit(?:y|ies)|developments?))?\b")
"""Land use and character ('urban', 'rural') that summary sentences name; a bare adjective is
kept as '<adjective> areas' ("a bustling urban environment" -> "urban areas")."""

_WATER = r"\b(?:lakes?|rivers?|reservoirs?|ponds?|canals?|streams?|creeks?|seas?|oceans?|bays?|"\
         r"harbou?rs?|wetlands?|marsh(?:es)?)\b"
"""Water bodies: visible as water at any chip resolution. An either-or guess among them (or
among PLACES: "a factory or a warehouse") names what is seen and keeps its uncertainty; a
single hedged guess ("possibly a school") is still dropped by ``hedge_clause``."""

_QUANTITY = (r"(?:(?:several|numerous|many|a\s+few|few|some|multiple|various|a\s+number\s+of|"
             r"a\s+couple\s+of|\d+)\s+)?")
_VEHICLES = r"(?:cars?|vehicles?)(?:\s+and\s+(?:a\s+few\s+)?(?:trucks?|vehicles?|buses))?"

_MOOD = (r"(?:bustling|vibrant|peaceful|serene|lively|picturesque|charming|tranquil|pleasant|"
         r"thriving|scenic|beautiful|stunning|idyllic|inviting|relaxing|busy|calm|quiet|"
         r"harmonious)")

RULES: tuple[Rule, ...] = (
    Rule("generic_summary", "remove-sentence",
         r"^\s*(?:overall|in summary|in conclusion|all in all)\b"
         r"|^\s*the\s+(?:overall\s+)?(?:scene|image|atmosphere|setting|aerial view|view)\s+"
         r"(?:\w+\s+)?(?:gives|captures|provides|offers|creates|conveys|showcases|highlights|"
         r"evokes|reflects)\b"
         r"|\b(?:essence|sense|feeling|atmosphere|ambiance|charm)\s+of\b",
         keep=f"{PLACES}|{LAND_USE}",
         description="closing summaries and mood statements that repeat or invent, never describe"),
    Rule("presence_speculation", "remove-sentence",
         r"^\s*the\s+(?:presence|combination|mix)\s+of\b.*\b(?:suggest|indicat|impl|hint|mak|"
         r"creat|add|giv|contribut|provid|enhanc|highlight|showcas)",
         keep=f"{PLACES}|{LAND_USE}",
         description="'The presence of X suggests ...': inference about use, not what is seen"),
    Rule("boilerplate_view", "rewrite",
         rf"^\s*{_IMAGE}\s+(?:is|shows|depicts|captures|features|presents|displays|provides)\s+"
         rf"(?:an?\s+|the\s+)?{_VIEW}\s+of\s+(?:the\s+)?",
         replacement="The area shows ",
         description="'The image is an aerial view of X' -> 'The area shows X'"),
    Rule("boilerplate_opening", "rewrite",
         rf"^\s*{_IMAGE}\s+(?:also\s+)?(?:is|shows|depicts|captures|features|presents|"
         r"displays|showcases)\s+",
         replacement="The area shows ",
         description="'The image depicts X' -> 'The area shows X'"),
    Rule("image_frame", "rewrite",
         r"\b(of|in|within|across|throughout)\s+the\s+(?:entire\s+|whole\s+)?"
         r"(?:image|picture|photo|frame)\b",
         replacement=r"\1 the area",
         description="'right side of the image' -> 'right side of the area': talk of the ground"),
    Rule("speculative_sentence", "remove-sentence",
         r"^[^,]*?\b(?:suggests?|indicates?|impl(?:y|ies)|hints?)\b",
         keep=f"{PLACES}|{LAND_USE}",
         description="sentences whose main verb is an inference: 'The layout suggests ...'"),
    Rule("speculative_tail", "remove-phrase",
         r",?\s*(?:which\s+|and\s+)?(?:suggesting|indicating|implying|hinting|suggests|indicates|"
         r"implies|signifying|showcasing|highlighting|emphasizing)\b[^.;]*",
         keep=LAND_USE,
         description="trailing inference: ', indicating that the area is a busy hub'"),
    Rule("purpose_tail", "remove-phrase",
         r",\s*(?:which\s+(?:adds|creates|contributes|gives|makes|provides|offers|allows|"
         r"enhances|helps|serves)|adding|creating|contributing|giving|making|providing|offering|"
         r"allowing|enhancing|helping|serving)\b[^.;]*",
         keep=LAND_USE,
         description="trailing purpose or effect: ', adding to the recreational options ...'"),
    Rule("hedge_rewrite", "rewrite",
         r"\b(?:appears|seems)\s+to\s+be\b", replacement="is",
         description="'appears to be a park' -> 'is a park'"),
    Rule("hedge_rewrite_plural", "rewrite",
         r"\b(?:appear|seem)\s+to\s+be\b", replacement="are",
         description="'appear to be warehouses' -> 'are warehouses'"),
    Rule("parked_vehicles", "rewrite",
         rf"(?:\bthere\s+(?:are|is)\s+{_QUANTITY}{_VEHICLES}\s+(?:visible\s+|neatly\s+)?"
         rf"|(?:^|(?<=,\s)|(?<=\band\s)){_QUANTITY}(?:of\s+the\s+)?{_VEHICLES}\s+(?:are|is)\s+"
         r"(?:neatly\s+)?)parked\s+"
         r"((?:along|on|in|near|at|by|throughout|around|inside|within|next\s+to|beside)\b[^,.;]*)"
         r"(?:,?\s*(?:while|with)\s+(?:some|others)\b[^.;]*)?",
         replacement=r"there is parking \1", min_pixel_size_m=1.0,
         description="'there are several cars parked along the road' -> 'there is parking along "
                     "the road': parked cars are too small to count at >= 1 m pixels, but the "
                     "parking is land use; ', while others are ...' about the cars goes too"),
    Rule("hedge_alternatives", "rewrite",
         rf"\b(?:possibly|perhaps|probably|likely)\s+((?:an?\s+)?(?:{_WATER}|{PLACES})\s+or\s+"
         rf"(?:an?\s+)?(?:{_WATER}|{PLACES}))",
         replacement=r"\1",
         description="'water, possibly a lake or a river' -> 'water, a lake or a river': the "
                     "named alternatives keep the uncertainty, the hedge word adds nothing"),
    Rule("hedge_clause", "remove-clause",
         r"\b(?:possibly|perhaps|probably|likely|might|may\s+be|could\s+be|it\s+appears|"
         r"it\s+seems|seemingly|presumably)\b",
         description="hedged guesses: the clause that carries them"),
    Rule("unresolvable_objects", "remove-clause",
         r"\b(?:cars?|people|persons?|pedestrians?|trucks?|vehicles?|bus(?:es)?|bicycles?|bikes?|"
         r"motorcycles?|traffic\s+(?:lights?|signals?|signs?)|tractors?|drivers?|"
         r"visitors?|tourists?|residents?|crowds?)\b",
         min_pixel_size_m=1.0, keep=PLACES,
         description="objects not resolvable at >= 1 m pixels: cars, people, traffic lights"),
    Rule("mood_adjective", "rewrite",
         rf"\b(a|an|the)\s+(?:{_MOOD}(?:\s+and\s+|\s*,\s*|\s+))+",
         replacement=r"\1 ",
         description="'a picturesque view of a lake' -> 'a view of a lake': drop the adjective"),
    Rule("mood_adjective_list", "rewrite",
         rf",\s*{_MOOD}(?=\s+(?!(?:with|and|of|in|as|to|for|at|on)\b)[a-z])",
         description="'a large, busy freeway' -> 'a large freeway'"),
    Rule("mood", "remove-clause", rf"\b{_MOOD}\b",
         keep=PLACES,
         description="mood said of a place ('the city is bustling'): the clause goes"),
    Rule("duplicate_sentence", "remove-duplicate", threshold=0.8,
         description="exact and near-duplicate sentences (content-word Jaccard >= 0.8)"),
)
