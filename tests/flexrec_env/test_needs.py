"""Needs: relevance rules, disagreement between needs, composition and the registry."""

from __future__ import annotations

import ast
import subprocess
import sys

import numpy as np
import pytest

from flexrec_env.metrics import ndcg
from flexrec_env.needs import (
    COMPOSITION_IDS,
    FIRST_NAME_ID,
    MAX_NEEDS,
    NEED_FEATURE_DIM,
    Need,
    all_of,
    builtin_needs,
    check_scenario_needs,
    get_need,
    held_out_needs,
    name_id,
    need_features,
    need_id,
    register_need,
    registered_needs,
    resolve_needs,
    training_needs,
)
from scenarios import ScenarioCheckError, SyntheticScenario

ITEM_NEEDS = ["interest", "trending", "niche", "fresh"]


@pytest.fixture(scope="module")
def requests():
    return SyntheticScenario().sample_requests(np.random.default_rng(0), 500, 20)


def oracle(relevance: np.ndarray) -> np.ndarray:
    return np.argsort(-relevance, axis=1, kind="stable")[:, :10]


def test_built_in_rules_by_hand(requests):
    rel = {name: get_need(name).relevance(requests) for name in ITEM_NEEDS}
    np.testing.assert_array_equal(rel["interest"], requests.interest)
    np.testing.assert_array_equal(rel["trending"], np.where(requests.recent_popularity >= 0.8, requests.interest, 0))
    np.testing.assert_array_equal(rel["niche"], np.where(requests.popularity <= 0.5, requests.interest, 0))
    np.testing.assert_array_equal(rel["fresh"], np.where(requests.freshness >= 0.8, requests.interest, 0))
    both = get_need("fresh+niche").relevance(requests)
    np.testing.assert_array_equal(both, np.minimum(rel["fresh"], rel["niche"]))


def test_needs_disagree(requests):
    """The best list for one need is a poor list for another: need-blind ranking cannot serve every need."""
    rel = {name: get_need(name).relevance(requests).astype(float) for name in ("trending", "niche", "fresh")}
    crosses = []
    for target in rel:
        best = ndcg(oracle(rel[target]), rel[target], None, 5).mean()
        assert best > 0.85
        for other in rel:
            if other != target:
                cross = ndcg(oracle(rel[other]), rel[target], None, 5).mean()
                assert cross < 0.75 * best, (other, target, cross)
                crosses.append(cross)
    assert np.mean(crosses) < 0.55


def test_every_need_has_relevant_candidates_on_most_requests(requests):
    for need in builtin_needs():
        name = need.name
        has_relevant = (need.relevance(requests) > 0).any(axis=1).mean()
        assert has_relevant > (0.6 if "+" in name else 0.9), (name, has_relevant)


def test_registry_and_held_out_needs():
    names = list(registered_needs())
    assert names[:5] == ["interest", "trending", "niche", "fresh", "diverse"]
    assert {n.name for n in held_out_needs()} == {"fresh+niche", "trending+fresh"}
    assert not set(map(id, training_needs())) & set(map(id, held_out_needs()))
    assert get_need("diverse").is_list_level and not get_need("trending").is_list_level
    assert need_id(get_need("interest")) == 0
    assert get_need("trending+niche") is get_need("trending+niche")  # composed once, then looked up
    assert get_need("trending+niche").held_out


def test_composition_features_and_instructions():
    both = all_of(get_need("trending"), get_need("fresh"), name="buzz-new")
    # The elementwise maximum: every axis stays inside the range its parts span (interest stays 1, not 2).
    expected = np.maximum(get_need("trending").feature_vector, get_need("fresh").feature_vector)
    np.testing.assert_array_equal(both.feature_vector, expected)
    assert both.feature_vector.max() == 1.0
    assert len(both.instructions) == len(get_need("trending").instructions)
    assert "Also:" in both.instructions[0]
    assert all_of(get_need("diverse"), get_need("fresh")).is_list_level


def test_resolve_needs_forms():
    assert [n.name for n in resolve_needs("interest,niche")] == ["interest", "niche"]
    assert [n.name for n in resolve_needs(["fresh", get_need("niche")])] == ["fresh", "niche"]


def test_custom_need_registration():
    custom = Need(
        name="test-cheap",
        instructions=("Something cheap.",),
        relevance=lambda r: r.interest * (r.popularity > 0.9),
        features=need_features(custom_0=1.0),
    )
    assert get_need(custom) is custom and get_need("test-cheap") is custom
    with pytest.raises(ValueError, match="different need named 'test-cheap'"):
        register_need(Need(name="test-cheap", instructions=("x",), relevance=custom.relevance))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "has space"}, "without spaces"),
        ({"instructions": ()}, "non-empty tuple"),
        ({"instructions": "just a string"}, "non-empty tuple"),
        ({"features": (1.0,)}, f"expected {NEED_FEATURE_DIM}"),
        ({"relevance": 3}, "must be callable"),
    ],
)
def test_bad_needs(kwargs, message):
    base = {"name": "ok", "instructions": ("Do it.",), "relevance": lambda r: r.interest}
    with pytest.raises((ValueError, TypeError), match=message):
        Need(**{**base, **kwargs})


def test_bad_need_lookups():
    with pytest.raises(ValueError, match="unknown need 'trendy'.*allowed"):
        get_need("trendy")
    with pytest.raises(TypeError, match="need must be a name or a Need"):
        get_need(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown need feature"):
        need_features(price=1.0)
    with pytest.raises(ValueError, match="at least two"):
        all_of(get_need("fresh"))


# ---------------------------------------------------------------------------------------------------------------
# Need ids: the same in every process.


def test_builtin_need_ids_are_fixed():
    names = ["interest", "trending", "niche", "fresh", "diverse", "fresh+niche", "trending+fresh"]
    assert [need_id(get_need(name)) for name in names] == list(range(7))


def test_compositions_of_built_ins_have_fixed_ids_whatever_the_order():
    """Every set of two to five built-ins has its own id in 5-30; another order of the parts is the same need."""
    assert sorted(COMPOSITION_IDS.values()) == list(range(5, FIRST_NAME_ID)) and FIRST_NAME_ID == 31
    assert get_need("niche+fresh") is get_need("fresh+niche")
    pairs = ["interest+fresh", "niche+fresh", "interest+diverse", "niche+interest", "diverse+trending+niche"]
    ids = [need_id(get_need(name)) for name in pairs]
    assert ids[1] == 5 and len(set(ids)) == len(ids) and all(5 <= i < FIRST_NAME_ID for i in ids)
    assert need_id(get_need("fresh+interest")) == ids[0]  # the same parts, the same id
    assert set(get_need("niche+trending+diverse").parts) == {"diverse", "trending", "niche"}


def test_custom_need_ids_do_not_depend_on_registration_order():
    """Two processes register the same custom needs in opposite orders and see the same ids."""
    code = (
        "import sys; from flexrec_env.needs import Need, need_id, register_need;"
        "names = sys.argv[1:];"
        "needs = [register_need(Need(name=n, instructions=('x',), relevance=lambda r: r.interest)) for n in names];"
        "print(sorted((n.name, need_id(n)) for n in needs))"
    )
    names = ["shop-budget", "shop-luxury", "shop-local"]
    runs = [
        subprocess.run([sys.executable, "-c", code, *order], capture_output=True, text=True, check=True)
        for order in (names, names[::-1])
    ]
    assert runs[0].stdout == runs[1].stdout
    ids = dict(ast.literal_eval(runs[0].stdout))
    assert ids == {name: name_id(name) for name in names}
    assert all(FIRST_NAME_ID <= i < MAX_NEEDS for i in ids.values())


def test_need_id_clash_is_an_error_that_says_how_to_resolve_it():
    taken = name_id("test-id-a")
    first = register_need(Need(name="test-id-a", instructions=("x",), relevance=lambda r: r.interest))
    assert need_id(first) == taken
    with pytest.raises(ValueError, match=rf"need_id {taken}, which need 'test-id-a' holds; rename it or build it with"):
        register_need(Need(name="test-id-b", instructions=("x",), relevance=lambda r: r.interest, need_id=taken))
    fixed = register_need(Need(name="test-id-c", instructions=("x",), relevance=lambda r: r.interest, need_id=MAX_NEEDS - 1))
    assert need_id(fixed) == MAX_NEEDS - 1
    with pytest.raises(ValueError, match=r"need_id=64; allowed: an integer in \[0, 64\)"):
        Need(name="test-id-d", instructions=("x",), relevance=lambda r: r.interest, need_id=64)


def test_a_scenario_whose_needs_fail_registers_none_of_them():
    class Odd(SyntheticScenario):
        def needs(self):
            return [Need(name="test-odd", instructions=("x",), relevance=lambda requests: 1 / 0)]

    with pytest.raises(ScenarioCheckError, match="need 'test-odd' failed on this scenario's requests"):
        check_scenario_needs(Odd(num_items=300))
    assert "test-odd" not in registered_needs()
