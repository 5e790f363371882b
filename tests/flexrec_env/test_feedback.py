"""Tests of flexrec_env.feedback: config validation, the label noise model and the click models (statistically)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from flexrec_env.feedback import FeedbackConfig, attractiveness, feedback_labels, simulate_clicks


def within(observed: float, p: float, n: int, z: float = 5.0) -> bool:
    """Whether an observed frequency is within z standard errors of the probability p (n trials)."""
    return abs(observed - p) <= z * math.sqrt(p * (1.0 - p) / n) + 1e-12


def draw_labels(rng, relevance, max_grade, config):
    shape = relevance.shape
    return feedback_labels(relevance, rng.random(shape), rng.random(shape), rng.random(shape), max_grade, config)


# --------------------------------------------------------------------------------------------------------------------
# FeedbackConfig
# --------------------------------------------------------------------------------------------------------------------


def test_defaults():
    config = FeedbackConfig()
    assert (config.observe_prob, config.label_noise, config.click_model, config.examination_eta) == (0.3, 0.1, "position", 1.0)


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("observe_prob", -0.1, "a number in [0, 1]"),
        ("observe_prob", 1.5, "a number in [0, 1]"),
        ("observe_prob", "x", "a number in [0, 1]"),
        ("observe_prob", None, "a number in [0, 1]"),
        ("observe_prob", float("nan"), "a number in [0, 1]"),
        ("label_noise", 2, "a number in [0, 1]"),
        ("label_noise", -1e-9, "a number in [0, 1]"),
        ("click_model", "dbn", "['position', 'cascade']"),
        ("click_model", "Position", "['position', 'cascade']"),
        ("examination_eta", -1, "a finite number >= 0"),
        ("examination_eta", float("inf"), "a finite number >= 0"),
        ("examination_eta", "1", "a finite number >= 0"),
    ],
)
def test_bad_values_raise_a_value_error_naming_the_value_and_the_allowed_values(field, value, allowed):
    with pytest.raises(ValueError) as info:
        FeedbackConfig(**{field: value})
    message = str(info.value)
    assert f"{field}={value!r}" in message
    assert "allowed" in message and allowed in message


@pytest.mark.parametrize(
    "kwargs",
    [
        {"observe_prob": 0.0, "label_noise": 0.0},
        {"observe_prob": 1.0, "label_noise": 1.0},
        {"observe_prob": 1, "label_noise": 0},
        {"click_model": "cascade"},
        {"examination_eta": 0.0},
        {"examination_eta": 2},
    ],
)
def test_boundary_values_are_accepted(kwargs):
    config = FeedbackConfig(**kwargs)
    for name, value in kwargs.items():
        assert getattr(config, name) == value


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("examination_eta", float("nan")),
        ("examination_eta", float("inf")),
        ("observe_prob", float("nan")),
        ("observe_prob", True),
        ("label_noise", False),
    ],
)
def test_nan_inf_and_bool_parameters_are_rejected(name, value):
    with pytest.raises(ValueError, match=f"{name}={value!r}"):
        FeedbackConfig(**{name: value})


def test_config_is_frozen():
    with pytest.raises(AttributeError):
        FeedbackConfig().observe_prob = 0.5  # type: ignore[misc]


def test_coerce_accepts_none_dict_and_config():
    assert FeedbackConfig.coerce(None) == FeedbackConfig()
    config = FeedbackConfig(observe_prob=0.7, click_model="cascade")
    assert FeedbackConfig.coerce(config) is config
    assert FeedbackConfig.coerce({"observe_prob": 0.7, "click_model": "cascade"}) == config
    assert FeedbackConfig.coerce({}) == FeedbackConfig()


def test_coerce_rejects_unknown_keys():
    with pytest.raises(ValueError) as info:
        FeedbackConfig.coerce({"observe_prob": 0.5, "noise": 0.1, "bogus": 1})
    message = str(info.value)
    assert "['bogus', 'noise']" in message
    assert "allowed" in message
    for name in ("click_model", "examination_eta", "label_noise", "observe_prob"):
        assert name in message


@pytest.mark.parametrize("value", [3, 0.5, "position", ["observe_prob"], ("observe_prob", 0.5)])
def test_coerce_rejects_wrong_types(value):
    with pytest.raises(TypeError, match=type(value).__name__):
        FeedbackConfig.coerce(value)  # type: ignore[arg-type]


def test_coerce_validates_dict_values():
    with pytest.raises(ValueError, match="observe_prob='x'"):
        FeedbackConfig.coerce({"observe_prob": "x"})
    with pytest.raises(ValueError, match="click_model='dbn'"):
        FeedbackConfig.coerce({"click_model": "dbn"})


# --------------------------------------------------------------------------------------------------------------------
# feedback_labels
# --------------------------------------------------------------------------------------------------------------------

MAX_GRADE = 3
SHAPE = (1000, 200)  # 200k labels
N_LABELS = SHAPE[0] * SHAPE[1]


@pytest.fixture(scope="module")
def sparse_noisy_labels():
    rng = np.random.default_rng(12345)
    relevance = rng.integers(0, MAX_GRADE + 1, size=SHAPE)
    config = FeedbackConfig(observe_prob=0.3, label_noise=0.2)
    shape = relevance.shape
    observe_u, noise_u, grade_u = rng.random(shape), rng.random(shape), rng.random(shape)
    labels, observed = feedback_labels(relevance, observe_u, noise_u, grade_u, MAX_GRADE, config)
    return relevance, config, observe_u, noise_u, labels, observed


def test_labels_types_and_unobserved_zero(sparse_noisy_labels):
    relevance, config, observe_u, _, labels, observed = sparse_noisy_labels
    assert labels.shape == observed.shape == SHAPE
    assert labels.dtype == np.float32 and observed.dtype == np.bool_
    assert not np.isnan(labels).any()
    assert np.all(labels[~observed] == 0.0)
    np.testing.assert_array_equal(observed, observe_u < config.observe_prob)
    assert np.all((labels >= 0) & (labels <= MAX_GRADE) & (labels == np.round(labels)))


def test_observed_fraction_matches_observe_prob(sparse_noisy_labels):
    _, config, _, _, _, observed = sparse_noisy_labels
    assert within(observed.mean(), config.observe_prob, N_LABELS)


def test_fraction_of_changed_observed_labels_matches_label_noise(sparse_noisy_labels):
    relevance, config, _, noise_u, labels, observed = sparse_noisy_labels
    changed = labels[observed] != relevance[observed]
    assert within(changed.mean(), config.label_noise, int(observed.sum()))
    # changed exactly where the noise uniform fell under label_noise: a noisy label never equals the truth
    np.testing.assert_array_equal(changed, (noise_u < config.label_noise)[observed])


def test_noisy_labels_are_uniform_over_the_other_grades():
    rng = np.random.default_rng(2024)
    relevance = rng.integers(0, MAX_GRADE + 1, size=SHAPE)
    labels, observed = draw_labels(rng, relevance, MAX_GRADE, FeedbackConfig(observe_prob=1.0, label_noise=1.0))
    assert observed.all()
    assert not np.any(labels == relevance)  # every label is noisy, and a noisy label never equals the truth
    for truth in range(MAX_GRADE + 1):
        noisy = labels[relevance == truth]
        n = len(noisy)
        assert n > 40_000
        for grade in range(MAX_GRADE + 1):
            fraction = float((noisy == grade).mean())
            if grade == truth:
                assert fraction == 0.0
            else:
                assert within(fraction, 1.0 / MAX_GRADE, n), (truth, grade, fraction)


def test_noise_free_fully_observed_labels_are_the_truth():
    rng = np.random.default_rng(3)
    relevance = rng.integers(0, MAX_GRADE + 1, size=(50, 30))
    labels, observed = draw_labels(rng, relevance, MAX_GRADE, FeedbackConfig(observe_prob=1.0, label_noise=0.0))
    assert observed.all()
    np.testing.assert_array_equal(labels, relevance.astype(np.float32))


def test_nothing_observed_gives_all_zero_labels():
    rng = np.random.default_rng(4)
    relevance = rng.integers(1, MAX_GRADE + 1, size=(50, 30))
    labels, observed = draw_labels(rng, relevance, MAX_GRADE, FeedbackConfig(observe_prob=0.0, label_noise=1.0))
    assert not observed.any()
    np.testing.assert_array_equal(labels, np.zeros((50, 30), dtype=np.float32))


def test_binary_grades_flip_and_single_grade_cannot_be_noisy():
    rng = np.random.default_rng(5)
    relevance = rng.integers(0, 2, size=(50, 30))
    labels, _ = draw_labels(rng, relevance, 1, FeedbackConfig(observe_prob=1.0, label_noise=1.0))
    np.testing.assert_array_equal(labels, 1 - relevance)  # the only other grade
    zeros = np.zeros((50, 30), dtype=np.int64)
    labels, _ = draw_labels(rng, zeros, 0, FeedbackConfig(observe_prob=1.0, label_noise=1.0))
    np.testing.assert_array_equal(labels, zeros)  # with one grade there is no other grade to draw


def test_labels_are_deterministic_given_the_uniforms():
    rng = np.random.default_rng(6)
    relevance = rng.integers(0, MAX_GRADE + 1, size=(20, 10))
    uniforms = [rng.random((20, 10)) for _ in range(3)]
    config = FeedbackConfig(observe_prob=0.5, label_noise=0.5)
    first = feedback_labels(relevance, *uniforms, MAX_GRADE, config)
    second = feedback_labels(relevance, *uniforms, MAX_GRADE, config)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])


# --------------------------------------------------------------------------------------------------------------------
# attractiveness and clicks
# --------------------------------------------------------------------------------------------------------------------


def test_attractiveness_hand_values():
    # max_grade 2: (2**rel - 1) / (2**2 - 1) = 0/3, 1/3, 3/3
    np.testing.assert_allclose(attractiveness(np.array([0, 1, 2]), 2), [0.0, 1.0 / 3.0, 1.0], rtol=0, atol=1e-15)
    # max_grade 3: 0, 1/7, 3/7, 1
    np.testing.assert_allclose(attractiveness(np.array([[0, 1, 2, 3]]), 3), [[0.0, 1 / 7, 3 / 7, 1.0]], rtol=0, atol=1e-15)
    # max_grade 0: everything has grade 0, attractiveness 0 (no division by zero)
    np.testing.assert_array_equal(attractiveness(np.array([0, 0]), 0), [0.0, 0.0])


@pytest.mark.parametrize("eta", [1.0, 0.5, 2.0, 0.0])
def test_position_model_click_rates(eta):
    rng = np.random.default_rng(int(eta * 100) + 1)
    batch = 200_000
    grades = np.array([2, 1, 2, 0, 1, 2])  # max_grade 2 -> attractiveness 1, 1/3, 1, 0, 1/3, 1
    relevance = np.broadcast_to(grades, (batch, len(grades)))
    clicks = simulate_clicks("position", relevance, rng.random((batch, len(grades))), 2, eta)
    assert clicks.shape == (batch, len(grades)) and clicks.dtype == np.int8
    assert set(np.unique(clicks)) <= {0, 1}
    attract = attractiveness(grades, 2)
    for p in range(1, len(grades) + 1):
        expected = attract[p - 1] / p**eta
        rate = clicks[:, p - 1].mean()
        if expected == 0.0:
            assert rate == 0.0
        else:
            assert within(rate, expected, batch), (p, rate, expected)
    # clicks are independent across positions: P(click at 1 and at 3) = P(click at 1) P(click at 3)
    expected_joint = (attract[0] / 1**eta) * (attract[2] / 3**eta)
    joint = (clicks[:, 0] & clicks[:, 2]).mean()
    assert within(joint, expected_joint, batch)


def test_position_model_is_deterministic_threshold():
    # position 2 with eta 1 is examined with probability 1/2; grade 2 (of 2) always attracts: click iff u < 0.5
    relevance = np.array([[2, 2], [2, 2]])
    uniforms = np.array([[0.99, 0.49], [0.0, 0.51]])
    np.testing.assert_array_equal(simulate_clicks("position", relevance, uniforms, 2, 1.0), [[1, 1], [1, 0]])


def test_cascade_clicks_at_most_once_on_the_first_attractive_position():
    rng = np.random.default_rng(11)
    batch, length = 50_000, 6
    relevance = rng.integers(0, 3, size=(batch, length))
    uniforms = rng.random((batch, length))
    clicks = simulate_clicks("cascade", relevance, uniforms, 2)
    assert clicks.dtype == np.int8 and clicks.shape == (batch, length)
    assert np.all(clicks.sum(axis=-1) <= 1)
    attracted = uniforms < attractiveness(relevance, 2)
    any_attracted = attracted.any(axis=-1)
    np.testing.assert_array_equal(clicks.sum(axis=-1), any_attracted.astype(np.int64))
    first = np.argmax(attracted, axis=-1)
    rows = np.flatnonzero(any_attracted)
    assert np.all(clicks[rows, first[rows]] == 1)
    # nothing is clicked on an item of grade 0
    assert not np.any(clicks[relevance == 0])


def test_cascade_click_rates():
    # fixed list of grades (max_grade 2): attractiveness 1/3, 0, 1/3, 1 -> P(click at p) = a_p prod_(q<p) (1 - a_q):
    # p1: 1/3, p2: 0, p3: (2/3)(1/3) = 2/9, p4: (2/3)(2/3)(1) = 4/9
    rng = np.random.default_rng(12)
    batch = 200_000
    relevance = np.broadcast_to(np.array([1, 0, 1, 2]), (batch, 4))
    clicks = simulate_clicks("cascade", relevance, rng.random((batch, 4)), 2)
    expected = [1 / 3, 0.0, 2 / 9, 4 / 9]
    rates = clicks.mean(axis=0)
    assert rates[1] == 0.0
    for p in (0, 2, 3):
        assert within(rates[p], expected[p], batch), (p, rates[p])
    # grade 2 (attractiveness 1) at the end: every list gets exactly one click
    assert np.all(clicks.sum(axis=-1) == 1)


def test_cascade_hand_example():
    relevance = np.array([[1, 2, 2], [0, 0, 1]])
    uniforms = np.array([[0.5, 0.2, 0.0], [0.0, 0.0, 0.9]])
    # row 0: a = 1/3, 1, 1; 0.5 >= 1/3 (no), 0.2 < 1 (click, stop) -> [0, 1, 0]
    # row 1: a = 0, 0, 1/3; 0.9 >= 1/3 -> no click
    np.testing.assert_array_equal(simulate_clicks("cascade", relevance, uniforms, 2), [[0, 1, 0], [0, 0, 0]])


def test_unknown_click_model_raises():
    with pytest.raises(ValueError, match=r"'dbn'.*\['position', 'cascade'\]"):
        simulate_clicks("dbn", np.zeros((1, 2)), np.zeros((1, 2)), 2)  # type: ignore[arg-type]
