"""`training.evolve`: ultralytics yolov5's genetic hyperparameter search."""

import os
import subprocess
import sys

import numpy as np
import pytest

from training import cli, evolve


def test_fitness_weights_map50_and_map_as_ultralytics():
    # ultralytics: (x[:, :4] * [0, 0, 0.1, 0.9]).sum(1) on [P, R, mAP50, mAP].
    assert evolve.fitness(0.5, 0.2) == pytest.approx(0.1 * 0.5 + 0.9 * 0.2)


def test_constrain_clips_to_limits_and_rounds_to_five_decimals():
    space = {"a": (1.0, 0.0, 1.0), "b": (1.0, 0.2, 4.0), "c": (1.0, 0.0, 0.9)}
    out = evolve.constrain({"a": 1.7, "b": 0.01, "c": 0.1234567}, space)
    assert out == {"a": 1.0, "b": 0.2, "c": 0.12346}


def test_mutation_factors_follow_the_formula_with_the_same_draws():
    gains = np.array([1.0, 1.0, 0.0, 1.0, 0.3])
    factors = evolve.mutation_factors(gains, np.random.default_rng(7))
    rng = np.random.default_rng(7)   # the same draws, in ultralytics' order
    u, n, scale = rng.random(5), rng.standard_normal(5), rng.random()
    expected = np.clip(gains * (u < 0.8) * n * scale * 0.2 + 1, 0.3, 3.0)
    np.testing.assert_array_equal(factors, expected)
    assert factors[2] == 1.0   # gain 0: never mutated


def test_mutation_factors_statistics():
    rng = np.random.default_rng(0)
    gains = np.array([1.0] * 8 + [0.0])
    draws = np.stack([evolve.mutation_factors(gains, rng) for _ in range(4000)])
    assert np.all(draws[:, -1] == 1.0)
    assert draws.min() >= 0.3 and draws.max() <= 3.0
    # A key is left alone with probability 0.2 (u >= 0.8).
    assert np.mean(draws[:, :8] == 1.0) == pytest.approx(0.2, abs=0.02)
    # E[|N(0,1)| * U(0,1) * 0.2] = sqrt(2/pi) * 0.5 * 0.2 for mutated keys.
    moved = np.abs(draws[:, :8][draws[:, :8] != 1.0] - 1)
    assert moved.mean() == pytest.approx(np.sqrt(2 / np.pi) * 0.1, rel=0.05)


def test_select_parent_weights_by_fitness_above_the_worst_of_the_top_five():
    rows = [{"fitness": f, "id": i} for i, f in
            enumerate([0.5, 0.3, 0.1, 0.05, 0.04, 0.9, 0.0])]
    rng = np.random.default_rng(1)
    picks = np.array([evolve.select_parent(rows, rng)["id"] for _ in range(20000)])
    # Top five: 0.9, 0.5, 0.3, 0.1, 0.05 -> weights f - 0.05 + 1e-6.
    weights = np.array([0.85, 0.45, 0.25, 0.05, 0.0]) + 1e-6
    for row_id, p in zip([5, 0, 1, 2, 3], weights / weights.sum()):
        assert np.mean(picks == row_id) == pytest.approx(p, abs=0.015)
    assert not np.any(np.isin(picks, [4, 6]))   # outside the top five


def fake_train(hyp, run_dir):
    """A deterministic 'training': fitness peaks at mosaic 0.6 and box 0.1."""
    score = 1.0 - abs(hyp["mosaic"] - 0.6) - abs(hyp.get("box", 0.1) - 0.1)
    return {"map50": score, "map": score / 2}


def test_evolve_writes_csv_best_yaml_and_png(tmp_path):
    best = evolve.evolve([], str(tmp_path), 6, train=fake_train)
    rows = evolve.read_rows(str(tmp_path / "evolve.csv"))
    assert [r["generation"] for r in rows] == [0, 1, 2, 3, 4, 5]
    # Generation 0 is the defaults; later ones differ from every earlier one.
    assert rows[0]["mosaic"] == 1.0 and rows[0]["box"] == 0.05
    keys = list(evolve.search_space("v5"))
    assert len({tuple(r[k] for k in keys) for r in rows}) == 6
    for r in rows:
        expected = fake_train(r, None)
        assert r["fitness"] == pytest.approx(
            0.1 * expected["map50"] + 0.9 * expected["map"], abs=1e-9)
        for k, (_, low, high) in evolve.search_space("v5").items():
            assert low <= r[k] <= high
    assert best["fitness"] == max(r["fitness"] for r in rows)
    text = (tmp_path / "hyp_evolve.yaml").read_text()
    assert f"# generation {int(best['generation'])}" in text
    assert os.path.getsize(tmp_path / "evolve.png") > 10_000
    # train --hyp takes the YAML's augmentation keys.
    hyp = cli._hyperparameters([str(tmp_path / "hyp_evolve.yaml")])
    for key in evolve.AUGMENTATION_SPACE:
        assert hyp[key] == pytest.approx(best[key], rel=1e-4)


def test_evolve_resumes_to_the_same_generations(tmp_path):
    evolve.evolve([], str(tmp_path / "once"), 5, train=fake_train, seed=3)
    evolve.evolve([], str(tmp_path / "twice"), 2, train=fake_train, seed=3)

    def killed(hyp, run_dir):   # a kill in the middle of generation 2
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evolve.evolve([], str(tmp_path / "twice"), 3, train=killed, seed=3)
    evolve.evolve([], str(tmp_path / "twice"), 3, train=fake_train, seed=3)
    once = (tmp_path / "once" / "evolve.csv").read_text()
    assert (tmp_path / "twice" / "evolve.csv").read_text() == once


def test_evolve_names_a_broken_csv_line(tmp_path):
    evolve.evolve([], str(tmp_path), 1, train=fake_train)
    with open(tmp_path / "evolve.csv", "a") as f:
        f.write("1,0.5,oops" + ",0" * (len(evolve.search_space()) + 1) + "\n")
    with pytest.raises(ValueError, match=r"evolve.csv:3: not a number"):
        evolve.evolve([], str(tmp_path), 1, train=fake_train)


def test_evolve_refuses_a_csv_of_another_version(tmp_path):
    evolve.evolve([], str(tmp_path), 1, train=fake_train, version="v3")
    with pytest.raises(ValueError, match="no column for"):
        evolve.evolve([], str(tmp_path), 1, train=fake_train, version="v5")


@pytest.mark.slow
def test_evolve_command_line_trains_two_generations(tmp_path):
    out = tmp_path / "evolve"
    subprocess.run(
        [sys.executable, "-m", "training", "evolve", "--generations", "2", "--out", str(out),
         "--", "--version", "v5", "--data", "shapes", "--augment", "--epochs", "2",
         "--train-images", "32", "--val-images", "16", "--image-size", "64",
         "--batch-size", "8", "--eval-every", "1", "--jit-compile", "false"],
        check=True, cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    rows = evolve.read_rows(str(out / "evolve.csv"))
    assert len(rows) == 2
    for r in rows:
        metrics = __import__("json").load(open(out / f"gen_{int(r['generation'])}" /
                                               "metrics.json"))
        assert r["map"] == pytest.approx(metrics["map"])


def test_search_space_takes_each_versions_reference_loss_gains():
    from keras_yolo import versions

    assert set(evolve.search_space("v3")) == set(evolve.AUGMENTATION_SPACE)
    for version in ("v5", "v8"):
        loss_keys = set(evolve.search_space(version)) - set(evolve.AUGMENTATION_SPACE)
        # Every searched loss key is one `train --hyp` passes to that version's loss.
        assert loss_keys <= set(versions.get(version).hyperparameter_names())
        defaults = evolve.default_hyperparameters(version)
        assert evolve.constrain(defaults, evolve.search_space(version)) == defaults
    assert evolve.default_hyperparameters("v8")["box"] == 7.5
