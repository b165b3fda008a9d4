"""Refinement: one test per rule, malformed input, user rules, real Beijing captions."""

from __future__ import annotations

import json
import re
from collections import defaultdict

import pytest

from urbangeo.captions.refine import load_rules, refine, split_sentences
from urbangeo.captions.rules import RULES, Rule
from urbangeo.errors import DataError, InputError


def _only(name: str) -> list[Rule]:
    return [r for r in RULES if r.name == name]


@pytest.mark.parametrize("name, raw, refined", [
    ("hedge_rewrite", "The area appears to be a park.", "The area is a park."),
    ("hedge_rewrite_plural", "Some buildings appear to be warehouses.",
     "Some buildings are warehouses."),
    ("hedge_clause", "A large body of water, possibly a lake or a river, lies to the east.",
     "A large body of water, lies to the east."),
    ("unresolvable_objects", "The road runs north, and there are several cars parked nearby.",
     "The road runs north."),
    ("mood", "The streets are lined with trees, and the city is bustling.",
     "The streets are lined with trees."),
    ("mood", "The city is bustling with activity near the park.", "It includes a park."),
    ("mood_adjective", "A picturesque, serene view of an idyllic lake.", "A view of a lake."),
    ("mood_adjective_list", "A large, busy freeway crosses a wide, scenic valley.",
     "A large freeway crosses a wide valley."),
    ("purpose_tail", "A forest covers the hill, which adds to the beauty of the area.",
     "A forest covers the hill."),
    ("image_frame", "A ridge stretches across the entire image.",
     "A ridge stretches across the area."),
    ("speculative_tail", "A river crosses the field, indicating that the area is a hub.",
     "A river crosses the field."),
    ("generic_summary", "A park lies in the west. Overall, the scene is a fine example.",
     "A park lies in the west."),
    ("generic_summary", "A lake. The scene captures the essence of life here.", "A lake."),
    ("generic_summary", "A river. The scene gives a sense of a bustling urban environment.",
     "A river. It includes urban areas."),
    ("presence_speculation",
     "A rail line runs east. The presence of the line suggests good transport links.",
     "A rail line runs east."),
    ("boilerplate_view", "The image is a bird's eye view of a large city with a river.",
     "The area shows a large city with a river."),
    ("boilerplate_opening", "The image depicts a large, open field with a train track.",
     "The area shows a large, open field with a train track."),
    ("duplicate_sentence", "A river runs south. A river runs south. The river runs south!",
     "A river runs south."),
    ("parked_vehicles", "A road runs east, and there are several cars parked along the road.",
     "A road runs east, and there is parking along the road."),
    ("parked_vehicles", "Some of the cars are parked near the river, while others are "
     "scattered throughout the city.", "There is parking near the river."),
    ("hedge_alternatives", "A body of water, possibly a lake or a reservoir, lies east.",
     "A body of water, a lake or a reservoir, lies east."),
    ("speculative_tail", "A river crosses, indicating a bustling urban environment.",
     "A river crosses. It includes urban areas."),
    ("purpose_tail", "Houses line the road, creating a dense residential neighbourhood.",
     "Houses line the road. It includes residential areas."),
])
def test_each_rule_alone(name, raw, refined):
    result = refine(raw, 3.0, rules=_only(name))
    assert result.text == refined
    assert result.hits == {name: result.hits[name]} and result.hits[name] >= 1
    assert all(frag for frag in result.removed[name])


def test_dangling_remainder_of_a_removed_main_clause_goes_too():
    text = ("The city is filled with various vehicles, including cars and trucks, parked or "
            "moving along the streets. In addition to the vehicles, the city has a railway.")
    assert refine(text, 3.0).text == "It includes streets. The city has a railway."


def test_places_already_named_are_not_salvaged_again():
    text = ("A mix of residential and industrial areas lines the road. The overall scene gives "
            "a sense of a residential neighbourhood near the road.")
    assert refine(text, 3.0).text == "A mix of residential and industrial areas lines the road. "\
                                     "It includes a neighbourhood."


def test_connective_left_alone_goes_too():
    text = "Additionally, there are two trucks, such as a dump truck, parked in the field."
    assert refine(text, 3.0).text == "It includes a field."


def test_a_dangling_both_clause_goes_with_its_vehicles():
    text = "There are several cars on the streets, both parked and moving."
    assert refine(text, 3.0).text == "It includes streets."


def test_a_single_hedged_guess_is_not_turned_into_a_fact():
    text = "A body of water, possibly a river, lies east. A building, probably a school or a " \
           "prison, stands west."
    assert refine(text, 3.0).text == "A body of water, lies east. A building, stands west."


def test_resolution_decides_whether_cars_are_facts():
    text = "A parking lot holds about forty cars."
    assert refine(text, 0.3).text == text  # resolvable at 30 cm
    assert refine(text, 3.0).text == "It includes a parking lot."  # the lot is resolvable
    parked = "Several cars are parked along the road."
    assert refine(parked, 0.3).text == parked
    assert refine(parked, 3.0).text == "There is parking along the road."


def test_length_limits_cut_at_sentence_borders():
    text = " ".join(f"Sentence number {i} describes a distinct block {i}." for i in range(12))
    few = refine(text, 3.0, max_sentences=3)
    assert few.text.count(".") == 3 and few.hits["length_limit"] == 9
    short = refine(text, 3.0, max_chars=100)
    assert len(short.text) <= 100 and short.text.endswith(".")
    assert short.text in text


def test_glued_sentences_are_split():
    assert split_sentences("Trees line it.There is a lake") == ["Trees line it.", "There is a lake"]


def test_malformed_input_policy():
    with pytest.raises(DataError, match="not text"):
        refine(None, 3.0)
    with pytest.raises(DataError, match="binary"):
        refine("\x00\x01\x02garbage\x03\x04\x05", 3.0)
    for text in ("", "   \n ", "The image captures the essence of a bustling city."):
        result = refine(text, 3.0)
        assert result.text == "" and result.emptied


def test_user_rules_extend_the_table(tmp_path):
    extra = Rule("no_weather", "remove-sentence", r"\b(?:sky|cloud\w*)\b",
                 description="weather is not land use")
    result = refine("A lake lies west. The sky is cloudy.", 3.0, extra_rules=[extra])
    assert result.text == "A lake lies west." and result.hits == {"no_weather": 1}
    as_json = tmp_path / "rules.json"
    as_json.write_text(json.dumps([{"name": "golf", "action": "rewrite",
                                    "pattern": r"golf course", "replacement": "sports ground"}]))
    as_toml = tmp_path / "rules.toml"
    as_toml.write_text('[[rule]]\nname = "golf"\naction = "rewrite"\n'
                       'pattern = "golf course"\nreplacement = "sports ground"\n')
    for path in (as_json, as_toml):
        out = refine("A golf course lies east.", 3.0, extra_rules=load_rules(path))
        assert out.text == "A sports ground lies east."


def test_bad_user_rules_raise_input_error(tmp_path):
    with pytest.raises(InputError, match="invalid regular expression"):
        refine("x", 3.0, extra_rules=[Rule("bad", "remove-phrase", "(")])
    with pytest.raises(InputError, match="action 'delete'"):
        refine("x", 3.0, extra_rules=[Rule("bad", "delete", "x")])
    path = tmp_path / "r.json"
    path.write_text(json.dumps([{"name": "x", "action": "rewrite", "colour": "red"}]))
    with pytest.raises(InputError, match="only the fields"):
        load_rules(path)
    path.write_text("{not json")
    with pytest.raises(InputError, match="cannot read rules file"):
        load_rules(path)


@pytest.fixture(scope="module")
def beijing(shared_data) -> list[str]:
    """The first 400 Beijing images' captions, sentences joined per image in file order."""
    entries = json.loads((shared_data / "urbanclip" / "captions" /
                          "Beijing_captions.json").read_text())[0]
    per: dict[str, list[str]] = defaultdict(list)
    for e in entries:
        s = e["caption"].strip()
        per[e["image"]].append(s if s.endswith(".") else s + ".")
    return [" ".join(v) for v in list(per.values())[:400]]


HALLUCINATIONS = re.compile(r"\b(cars?|trucks?|people|pedestrians|traffic lights?|bustling|"
                            r"vibrant|peaceful|possibly|suggest\w*|the image)\b", re.I)


def test_real_captions_lose_hallucinations_and_keep_land_use(beijing):
    refined = [refine(t, 3.0) for t in beijing]
    assert sum(bool(HALLUCINATIONS.search(t)) for t in beijing) > 350  # they are everywhere
    assert not any(HALLUCINATIONS.search(r.text) for r in refined), \
        next(r.text for r in refined if HALLUCINATIONS.search(r.text))
    assert sum(r.emptied for r in refined) == 0
    for word in ("river", "park", "residential", "highway", "field"):
        rx = re.compile(rf"\b{word}s?\b", re.I)
        raw_n = sum(bool(rx.search(t)) for t in beijing)
        kept = sum(bool(rx.search(r.text)) for r in refined)
        assert kept >= 0.75 * raw_n, (word, raw_n, kept)
    assert sum(len(r.text) for r in refined) < 0.7 * sum(len(t) for t in beijing)
