"""Needs: relevance rules, disagreement between needs, composition and the registry."""

from __future__ import annotations

import numpy as np
import pytest

from flexrec_env.metrics import ndcg
from flexrec_env.needs import (
    NEED_FEATURE_DIM,
    Need,
    all_of,
    get_need,
    held_out_needs,
    need_features,
    need_id,
    register_need,
    registered_needs,
    resolve_needs,
    training_needs,
)
from scenarios import SyntheticScenario

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
    for name, need in registered_needs().items():
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
