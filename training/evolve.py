"""`python -m training evolve`: genetic search over loss gains and augmentation strengths.

The seed's "optimal hyper-parameters" freebie, as ultralytics yolov5's `train.py --evolve`
does it: every generation takes one of the (up to) five fittest earlier generations as the
parent, chosen with probability proportional to its fitness above the worst of them, multiplies
each hyperparameter by a random factor `v = clip(1 + g * [u < 0.8] * N(0, 1) * U(0, 1) * 0.2,
0.3, 3.0)` (redrawn until some factor differs from 1), clips to the search space, rounds to 5
decimals, trains, and appends the result to `evolve.csv`. Fitness is
`0.1 * mAP@0.5 + 0.9 * mAP@0.5:0.95`.

    python -m training evolve --generations 20 --out runs/evolve -- \\
        --data data.yaml --augment --epochs 10 --image-size 320
    python -m training train --data data.yaml --augment --hyp runs/evolve/hyp_evolve.yaml

Each generation is one `python -m training train` process (its run directory is
`<out>/gen_<i>`), so a crash or a kill loses at most the generation in flight: running the same
command again continues from `evolve.csv`. The arguments after `--` go to every `train`; the
searched keys go as `--hyp KEY=VALUE`.

Written files: `evolve.csv` (one row per generation: generation, map50, map, fitness, then
the hyperparameters), `hyp_evolve.yaml` (the fittest generation's hyperparameters, which
`train --hyp` accepts) and `evolve.png` (fitness against each hyperparameter).
"""

import argparse
import csv
import json
import logging
import os
import subprocess
import sys

import numpy as np

# key -> (mutation gain, lower limit, upper limit): ultralytics yolov5 7.0.14's `meta`
# for the keys `train --hyp` takes. v5's loss gains are ultralytics' unscaled ones.
AUGMENTATION_SPACE = {
    "hsv_h": (1.0, 0.0, 0.1), "hsv_s": (1.0, 0.0, 0.9), "hsv_v": (1.0, 0.0, 0.9),
    "degrees": (1.0, 0.0, 45.0), "translate": (1.0, 0.0, 0.9), "scale": (1.0, 0.0, 0.9),
    "shear": (1.0, 0.0, 10.0), "perspective": (0.0, 0.0, 0.001),
    "flipud": (1.0, 0.0, 1.0), "fliplr": (0.0, 0.0, 1.0), "mosaic": (1.0, 0.0, 1.0),
    "mixup": (1.0, 0.0, 1.0),
}
V5_LOSS_SPACE = {
    "box": (1.0, 0.02, 0.2), "cls": (1.0, 0.2, 4.0), "cls_pw": (1.0, 0.5, 2.0),
    "obj": (1.0, 0.2, 4.0), "obj_pw": (1.0, 0.5, 2.0), "anchor_t": (1.0, 2.0, 8.0),
    "fl_gamma": (0.0, 0.0, 2.0),
}
# ultralytics 8.4.190 `engine/tuner.py`'s bounds for v8DetectionLoss's gains.
V8_LOSS_SPACE = {"box": (1.0, 1.0, 20.0), "cls": (1.0, 0.1, 4.0), "dfl": (1.0, 0.4, 12.0)}
# The versions whose loss gains have a reference search range, and their first generation
# (hyp.scratch-low.yaml for v5, ultralytics 8's default.yaml for v8).
LOSS_SPACES = {"v5": V5_LOSS_SPACE, "v8": V8_LOSS_SPACE}
LOSS_DEFAULTS = {
    "v5": {"box": 0.05, "cls": 0.5, "cls_pw": 1.0, "obj": 1.0, "obj_pw": 1.0, "anchor_t": 4.0,
           "fl_gamma": 0.0},
    "v8": {"box": 7.5, "cls": 0.5, "dfl": 1.5},
}
# ultralytics' weights of [P, R, mAP@0.5, mAP@0.5:0.95]; P and R weigh 0.
FITNESS_WEIGHTS = {"map50": 0.1, "map": 0.9}
MUTATION_PROBABILITY, MUTATION_SIGMA = 0.8, 0.2
PARENTS = 5
METRIC_COLUMNS = ("generation", "map50", "map", "fitness")

log = logging.getLogger("training")


def fitness(map50, map_):
    """`0.1 * mAP@0.5 + 0.9 * mAP@0.5:0.95` (ultralytics' `fitness`)."""
    return FITNESS_WEIGHTS["map50"] * map50 + FITNESS_WEIGHTS["map"] * map_


def search_space(version="v5"):
    """The searched keys of `version` -> (gain, low, high): augmentation strengths, plus
    ultralytics' loss gains for v5 and v8 (v1-v4's losses have no reference search range)."""
    return {**AUGMENTATION_SPACE, **LOSS_SPACES.get(version, {})}


def default_hyperparameters(version="v5"):
    """Generation 0: the augmentation defaults and the reference's loss gains."""
    from keras_yolo.data.augment import DEFAULT_HYPERPARAMETERS

    hyp = {k: float(DEFAULT_HYPERPARAMETERS[k]) for k in AUGMENTATION_SPACE}
    return {**hyp, **LOSS_DEFAULTS.get(version, {})}


def constrain(hyp, space):
    """Clips each value to its limits and rounds it to 5 decimals, as ultralytics does."""
    return {k: round(min(max(float(hyp[k]), space[k][1]), space[k][2]), 5) for k in space}


def select_parent(rows, rng, parents=PARENTS):
    """One of the `parents` fittest rows (dicts with "fitness"), drawn with weight
    `fitness - min(fitness) + 1e-6` over those rows."""
    top = sorted(rows, key=lambda r: -r["fitness"])[:parents]
    scores = np.array([r["fitness"] for r in top], np.float64)
    weights = scores - scores.min() + 1e-6
    return top[int(rng.choice(len(top), p=weights / weights.sum()))]


def mutation_factors(gains, rng):
    """`clip(1 + g * [u < 0.8] * N(0,1) * U(0,1) * 0.2, 0.3, 3.0)` per key, redrawn until
    one factor differs from 1 (ultralytics' loop). `gains`: (K,) array."""
    gains = np.asarray(gains, np.float64)
    if not np.any(gains):
        raise ValueError("every mutation gain is 0: nothing can be mutated.")
    factors = np.ones(len(gains))
    while np.all(factors == 1):
        factors = (gains * (rng.random(len(gains)) < MUTATION_PROBABILITY)
                   * rng.standard_normal(len(gains)) * rng.random() * MUTATION_SIGMA
                   + 1).clip(0.3, 3.0)
    return factors


def next_hyperparameters(rows, space, base, rng):
    """Generation `len(rows)`'s hyperparameters: `base` when nothing was trained yet, else a
    mutated fit parent, constrained to `space`."""
    if not rows:
        return constrain(base, space)
    parent = select_parent(rows, rng)
    keys = list(space)
    factors = mutation_factors([space[k][0] for k in keys], rng)
    return constrain({k: parent[k] * f for k, f in zip(keys, factors)}, space)


def read_rows(path):
    """The rows of `evolve.csv` as dicts of floats ([] when it does not exist)."""
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        rows = []
        for line, row in enumerate(csv.DictReader(f), start=2):
            try:
                rows.append({k: float(v) for k, v in row.items()})
            except (TypeError, ValueError):
                raise ValueError(f"{path}:{line}: not a number in {row}; fix or remove the "
                                 "line to resume.") from None
        return rows


def append_row(path, row, keys):
    """Appends `row` to `evolve.csv`, writing the header first when the file is new."""
    new = not os.path.exists(path)
    with open(path, "a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(list(METRIC_COLUMNS) + list(keys))
        writer.writerow([row[k] for k in METRIC_COLUMNS] + [row[k] for k in keys])
        f.flush()
        os.fsync(f.fileno())


def write_best(rows, keys, path):
    """`hyp_evolve.yaml`: the fittest generation's hyperparameters (flat `key: value`)."""
    best = max(rows, key=lambda r: r["fitness"])
    lines = [f"# keras-yolo hyperparameter evolution: best of {len(rows)} generations",
             f"# generation {int(best['generation'])}: mAP@0.5 {best['map50']:.5g}, "
             f"mAP@0.5:0.95 {best['map']:.5g}, fitness {best['fitness']:.5g}"]
    lines += [f"{k}: {best[k]:.5g}" for k in keys]
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, path)
    return best


def plot_evolution(rows, keys, path):
    """`evolve.png`: fitness against each hyperparameter, the best generation in red."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    cols = 5
    grid_rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(grid_rows, cols, figsize=(3 * cols, 2.6 * grid_rows),
                             squeeze=False)
    fit = np.array([r["fitness"] for r in rows])
    best = int(np.argmax(fit))
    for ax, key in zip(axes.flat, keys):
        values = np.array([r[key] for r in rows])
        ax.scatter(values, fit, c=np.arange(len(rows)), cmap="viridis", s=18)
        ax.scatter([values[best]], [fit[best]], c="red", marker="*", s=120)
        ax.set_title(f"{key} = {values[best]:.4g}", fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.suptitle(f"fitness (0.1 mAP@0.5 + 0.9 mAP@0.5:0.95) over {len(rows)} generations; "
                 "colour = generation, red star = best")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def train_generation(train_args, hyp, run_dir):
    """Runs `python -m training train` with `hyp` as `--hyp KEY=VALUE`; returns its
    metrics.json. A failed run raises with the command and the log's path."""
    os.makedirs(run_dir, exist_ok=True)
    command = [sys.executable, "-m", "training", "train", *train_args, "--out", run_dir,
               "--overwrite", "--hyp", *[f"{k}={v}" for k, v in hyp.items()]]
    log_path = os.path.join(run_dir, "evolve_train.log")
    with open(log_path, "w") as out:
        code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT).returncode
    if code:
        raise RuntimeError(f"generation run failed (exit {code}); see {log_path}. Command: "
                           + " ".join(command))
    with open(os.path.join(run_dir, "metrics.json")) as f:
        metrics = json.load(f)
    for key in ("map50", "map"):
        value = metrics.get(key)
        if value is None or not np.isfinite(value):
            raise RuntimeError(f"{run_dir}/metrics.json: {key} is {value!r}; the run must "
                               "evaluate (keep --eval-every and a validation set).")
    return metrics


def evolve(train_args, out, generations, version="v5", seed=0, base=None, train=None):
    """Runs `generations` more generations into `out`; returns the best row.

    `train(hyp, run_dir) -> metrics dict` defaults to one `python -m training train` process
    per generation with `train_args`; tests pass a function.
    """
    os.makedirs(out, exist_ok=True)
    space = search_space(version)
    keys = list(space)
    csv_path = os.path.join(out, "evolve.csv")
    rows = read_rows(csv_path)
    missing = [k for k in keys if rows and k not in rows[0]]
    if missing:
        raise ValueError(f"{csv_path} has no column for {missing}: it was written for another "
                         "version; use a new --out.")
    base = {**default_hyperparameters(version), **(base or {})}
    train = train or (lambda hyp, run_dir: train_generation(train_args, hyp, run_dir))
    for _ in range(generations):
        generation = len(rows)
        # One generator per generation: a resumed search draws what an unbroken one would.
        rng = np.random.default_rng([seed, generation])
        hyp = next_hyperparameters(rows, space, base, rng)
        log.info("evolve: generation %d: %s", generation, hyp)
        metrics = train(hyp, os.path.join(out, f"gen_{generation}"))
        row = {"generation": generation, "map50": float(metrics["map50"]),
               "map": float(metrics["map"]), **hyp}
        row["fitness"] = fitness(row["map50"], row["map"])
        append_row(csv_path, row, keys)
        rows.append(row)
        best = write_best(rows, keys, os.path.join(out, "hyp_evolve.yaml"))
        plot_evolution(rows, keys, os.path.join(out, "evolve.png"))
        log.info("evolve: generation %d fitness %.5f (best %.5f, generation %d)", generation,
                 row["fitness"], best["fitness"], int(best["generation"]))
    return max(rows, key=lambda r: r["fitness"]) if rows else None


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "evolve", help="genetic search over loss gains and augmentation strengths",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generations", type=int, default=10,
                        help="generations to add to <out>/evolve.csv")
    parser.add_argument("--out", default=os.path.join("runs", "evolve"))
    parser.add_argument("--seed", type=int, default=0, help="seed of the mutations")
    parser.add_argument("train_args", nargs=argparse.REMAINDER,
                        help="after `--`: the arguments of every `train` run")
    parser.set_defaults(func=run_evolve)
    return parser


def run_evolve(args):
    from training.run import setup_logging

    setup_logging()
    train_args = list(args.train_args)
    if train_args[:1] == ["--"]:
        train_args = train_args[1:]
    for flag in ("--out", "--hyp", "--overwrite"):
        if flag in train_args:
            raise SystemExit(f"evolve sets {flag} of each generation itself; remove it from "
                             "the train arguments.")
    version = "v5"
    if "--version" in train_args:
        version = train_args[train_args.index("--version") + 1]
    if "--augment" not in train_args:
        log.warning("evolve: no --augment in the train arguments: the augmentation "
                    "strengths it searches have no effect.")
    if args.generations < 1:
        raise SystemExit(f"--generations must be at least 1; got {args.generations}.")
    best = evolve(train_args, args.out, args.generations, version=version, seed=args.seed)
    print(json.dumps({"best_generation": int(best["generation"]), "map50": best["map50"],
                      "map": best["map"], "fitness": best["fitness"],
                      "hyp": os.path.join(args.out, "hyp_evolve.yaml")}, indent=2))
    return 0
