"""The three plug-in paths (object, registry, installed entry point) and ``check_scenario``."""

from __future__ import annotations

import ast
import importlib.util
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import flexrec_env  # noqa: F401
import scenarios
from flexrec_env.needs import check_scenario_needs
from scenarios import RequestBatch, ScenarioCheckError, check_scenario, make_scenario

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "custom_scenario.py"


def load_example():
    spec = importlib.util.spec_from_file_location("custom_scenario_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


example = load_example()


def play_one(env) -> dict:
    obs, _ = env.reset(seed=0)
    done = False
    while not done:
        obs, _, terminated, truncated, info = env.step(int(np.flatnonzero(obs["action_mask"])[0]))
        done = terminated or truncated
    return info


def test_scenario_object_path_with_its_own_need():
    env = gym.make("FlexRec-v0", scenario=example.ShopperScenario(num_items=200), need="budget")
    info = play_one(env)
    assert info["need"] == "budget" and set(info["metrics"]) >= {"NDCG@5", "Recall@5"}


def test_registry_path_with_kwargs():
    scenarios.register("shoppers-registry-test", example.ShopperScenario)
    assert "shoppers-registry-test" in scenarios.available_scenarios()
    env = gym.make("FlexRec-v0", scenario="shoppers-registry-test", scenario_kwargs={"num_items": 150}, need=["budget", "niche"])
    assert env.unwrapped.scenario.num_items == 150
    assert play_one(env)["ranking"].shape == (10,)
    # Built once per set of arguments, then shared.
    assert make_scenario("shoppers-registry-test", {"num_items": 150}) is env.unwrapped.scenario


def test_module_colon_factory_path():
    scenario = make_scenario("scenarios.synthetic:SyntheticScenario", {"num_items": 250})
    assert scenario.num_items == 250
    with pytest.raises(ValueError, match="cannot load scenario 'nowhere.module:Thing'"):
        make_scenario("nowhere.module:Thing")
    with pytest.raises(ValueError, match=r"scenario 'os:path' names a module, not a scenario factory; expected"):
        make_scenario("os:path")
    with pytest.raises(ValueError, match=r"'math:pi' names a float, not a scenario factory"):
        make_scenario("math:pi")


def test_scenario_settings_are_the_factory_arguments():
    """From a config dataclass (synthetic), a declared table (the log scenarios), or a plain signature."""
    from scenarios.logged import LogConfig
    from scenarios.settings import field_types
    from scenarios.synthetic import SyntheticConfig

    assert scenarios.scenario_settings("synthetic") == field_types(SyntheticConfig)
    movielens = scenarios.scenario_settings("movielens")
    assert movielens is not None and set(movielens) == {"path", *field_types(LogConfig)}
    logged = scenarios.scenario_settings("logged")
    assert logged is not None and {"layout", "user_col", "rating_range"} <= set(logged)

    def shops(num_shops: int = 3, label: str = "x") -> scenarios.Scenario:
        raise AssertionError("not called")

    def anything(**kwargs: object) -> scenarios.Scenario:
        raise AssertionError("not called")

    scenarios.register("shops-settings-test", shops)
    scenarios.register("anything-settings-test", anything)
    assert scenarios.scenario_settings("shops-settings-test") == {"num_shops": int, "label": str}
    assert scenarios.scenario_settings("anything-settings-test") is None, "undeclared keywords: the factory checks them"


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory) -> Path:
    """The example simulator as a separately installed package declaring a flexrec.scenarios entry point."""
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools is needed to build the plug-in package offline")
    source = tmp_path_factory.mktemp("shop_sim_src")
    (source / "shop_sim").mkdir()
    shutil.copy(EXAMPLE, source / "shop_sim" / "__init__.py")
    (source / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n\n'
        '[project]\nname = "shop-sim"\nversion = "0.1"\n\n'
        '[project.entry-points."flexrec.scenarios"]\nshoppers-plugin = "shop_sim:ShopperScenario"\n\n'
        '[tool.setuptools]\npackages = ["shop_sim"]\n'
    )
    target = tmp_path_factory.mktemp("site")
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index"]
    subprocess.run([*command, "--target", str(target), str(source)], check=True, capture_output=True)
    return target


def run_with_plugin(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)


def test_installed_entry_point_works_in_gym_make(installed_plugin):
    code = (
        "import gymnasium as gym, numpy as np, flexrec_env\n"
        "env = gym.make('FlexRec-v0', scenario='shoppers-plugin', scenario_kwargs={'num_items': 120}, need='budget')\n"
        "obs, info = env.reset(seed=1)\n"
        "print(type(env.unwrapped.scenario).__name__, info['need'], env.unwrapped.scenario.num_items)\n"
    )
    result = run_with_plugin(installed_plugin, sys.executable, "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ShopperScenario", "budget", "120"]


def test_installed_entry_point_works_from_the_cli(installed_plugin):
    cli = [sys.executable, "-m", "agents.cli"]
    listing = run_with_plugin(installed_plugin, *cli, "scenarios")
    assert listing.returncode == 0, listing.stderr
    assert "shoppers-plugin" in listing.stdout and "shop_sim:ShopperScenario" in listing.stdout
    for scenario in ("shoppers-plugin", "shop_sim:ShopperScenario"):
        run = run_with_plugin(
            installed_plugin, *cli, "quickstart", "--episodes", "2", "--scenario", scenario, "--scenario-arg", "num_items=120"
        )
        assert run.returncode == 0, run.stderr
        assert "budget" in run.stdout and "interest" in run.stdout


# ---------------------------------------------------------------------------------------------------------------
# check_scenario.


class Broken(example.ShopperScenario):
    """A shopper world whose requests are damaged by ``damage``."""

    def __init__(self, damage, **kwargs):
        super().__init__(num_items=100, **kwargs)
        self.damage = damage

    def sample_requests(self, rng, num_requests, num_candidates):
        return self.damage(super().sample_requests(rng, num_requests, num_candidates), rng)


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (
            lambda b, rng: replace(b, candidate_features=b.candidate_features.astype(np.float64)),
            ["candidate_features", "float32"],
        ),
        (lambda b, rng: replace(b, candidates=np.zeros_like(b.candidates)), ["repeat an item", "without replacement"]),
        (lambda b, rng: replace(b, popularity=b.popularity * 3), ["popularity", "outside the allowed [0.0, 1.0]"]),
        (lambda b, rng: replace(b, interest=b.interest + 5), ["interest", "outside"]),
        (lambda b, rng: replace(b, user_ids=b.user_ids[:3]), ["user_ids has shape (3,)"]),
        (lambda b, rng: replace(b, times=b.times + np.random.random()), ["same generator seed gave different requests"]),
        (lambda b, rng: replace(b, candidate_features=b.candidate_features * np.nan), ["NaN"]),
    ],
)
def test_check_scenario_names_each_problem(damage, words):
    with pytest.raises(ScenarioCheckError) as error:
        check_scenario(Broken(damage))
    for word in words:
        assert word in str(error.value)


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda b, rng: replace(b, interest=np.zeros_like(b.interest)), ["need 'interest'", "relevant candidate in only 0%"]),
        (lambda b, rng: replace(b, extras={}), ["need 'budget' failed", "affordable"]),
    ],
)
def test_needs_that_fail_on_a_scenario_are_named_by_the_env_side_check(damage, words):
    """The data contract holds, the needs do not: ``check_scenario`` passes, the env's need check and gym.make fail."""
    broken = Broken(damage)
    check_scenario(broken)
    for check in (check_scenario_needs, lambda s: gym.make("FlexRec-v0", scenario=s)):
        with pytest.raises(ScenarioCheckError) as error:
            check(broken)
        for word in words:
            assert word in str(error.value)


def test_scenarios_import_nothing_from_flexrec_env():
    """The lower layer knows nothing of the environment: no import of it in any module, and none at run time."""
    for path in Path(scenarios.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.split(".")[0] in ("flexrec_env", "agents") for n in names), (path.name, names)
    code = (
        "import sys, scenarios; scenarios.make_scenario('synthetic');"
        "print(sorted(m for m in sys.modules if m.startswith(('flexrec_env', 'agents'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_check_scenario_accepts_good_scenarios_and_env_runs_it():
    check_scenario(example.ShopperScenario(num_items=100))
    check_scenario(scenarios.SyntheticScenario(num_items=300))
    with pytest.raises(ScenarioCheckError, match="float32"):
        gym.make("FlexRec-v0", scenario=Broken(lambda b, rng: replace(b, user_features=b.user_features.astype(np.float64))))


def test_check_scenario_rejects_bad_attributes_and_types():
    class NoCategories(example.ShopperScenario):
        pass

    scenario = NoCategories(num_items=100)
    scenario.item_category = np.zeros(3, dtype=np.int64)
    with pytest.raises(ScenarioCheckError, match=r"item_category must be an array of shape \(num_items,\)"):
        check_scenario(scenario)
    with pytest.raises(ScenarioCheckError, match="subclass scenarios.Scenario"):
        check_scenario(object())  # type: ignore[arg-type]

    class Wrong(example.ShopperScenario):
        def sample_requests(self, rng, num_requests, num_candidates):
            return {"candidates": []}

    with pytest.raises(ScenarioCheckError, match="return a scenarios.RequestBatch"):
        check_scenario(Wrong(num_items=100))


def test_request_batch_extras_follow_take_and_concatenate():
    batch = example.ShopperScenario(num_items=100).sample_requests(np.random.default_rng(0), 6, 5)
    part = batch.take(np.array([1, 3]))
    np.testing.assert_array_equal(part.extras["affordable"], batch.extras["affordable"][[1, 3]])
    both = RequestBatch.concatenate([part, batch.take(0)])
    assert both.extras["affordable"].shape == (3, 5) and len(both) == 3
    assert both.take(slice(0, 2)).equals(part) and not part.equals(batch.take(slice(0, 2)))
