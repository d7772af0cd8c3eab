"""Honest timing: ours and the peer alternated in one process, medians, and
the machine's state recorded beside every figure.

A torch run with two threads slows ten to twenty times when anything else
runs on the machine, TensorFlow far less, so a figure taken on a busy
machine flatters us. Therefore:

- `machine_state()` records the load average, the core count and the thread
  settings of both frameworks;
- `check_quiet()` refuses (SystemExit) to time on a machine whose 1-minute
  load exceeds its core count, or on which other processes use more than
  half a core right now (the load average lags a minute), unless
  `allow_busy=True`, in which case the result is flagged `"busy": true`
  and a banner is printed;
- `alternate()` warms every contender up, then runs them in turn, round
  after round (the order rotates), so a load change hits all of them; the
  figure is the median over rounds of each round's median;
- `copy_bandwidth()` measures the machine's memory copy rate, the floor of
  any step that must read a tensor and write its gradient.

Example:
    >>> state = check_quiet(allow_busy=False)
    >>> times = alternate({"ours": ours_step, "peer": peer_step}, rounds=5)
    >>> times["ours"]["median"] / times["peer"]["median"]
"""

import json
import os
import statistics
import sys
import threading
import time

import numpy as np

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")
# Bytes per buffer of the copy-bandwidth probe: far beyond any cache.
COPY_PROBE_BYTES = 256 * 2**20


def cores():
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def set_threads(threads):
    """The same intra-op thread count for TensorFlow and torch (if loaded);
    call before TensorFlow runs its first op."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(
        min(2, threads))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def machine_state():
    """Load average, cores and thread settings, as a dict."""
    state = {
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "cores": cores(),
        "env_threads": {k: os.environ[k] for k in (
            "OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
            "TF_NUM_INTEROP_THREADS", "MKL_NUM_THREADS",
            "TF_ENABLE_ONEDNN_OPTS") if k in os.environ},
    }
    if "tensorflow" in sys.modules:
        tf = sys.modules["tensorflow"]
        state["tf_intra_op_threads"] = (
            tf.config.threading.get_intra_op_parallelism_threads())
        state["tf_inter_op_threads"] = (
            tf.config.threading.get_inter_op_parallelism_threads())
    if "torch" in sys.modules:
        state["torch_threads"] = sys.modules["torch"].get_num_threads()
    return state


# Cores' worth of CPU that other processes may use while we time: the
# 1-minute load average lags by a minute, so the instantaneous use is read
# from /proc/stat too.
MAX_OTHER_CORES = 0.5


def _machine_busy_seconds():
    """CPU seconds the whole machine has been busy (Linux /proc/stat)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / os.sysconf("SC_CLK_TCK")


def cores_in_use(seconds=2.0):
    """Cores' worth of CPU busy machine-wide over `seconds` (Linux), or
    None where /proc/stat is missing."""
    try:
        start = _machine_busy_seconds()
        time.sleep(seconds)
        return round((_machine_busy_seconds() - start) / seconds, 2)
    except (OSError, ValueError):
        return None


def is_busy(load, in_use=None):
    return load > cores() or (in_use is not None
                              and in_use > MAX_OTHER_CORES)


def check_quiet(allow_busy=False):
    """Refuses to time on a busy machine, or flags the run loudly."""
    state = machine_state()
    load = state["load_average"][0]
    in_use = cores_in_use()
    state["cores_in_use_before"] = in_use
    state["busy"] = is_busy(load, in_use)
    try:
        state["_start"] = (time.perf_counter(), time.process_time(),
                           _machine_busy_seconds())
    except (OSError, ValueError):
        pass
    if state["busy"]:
        message = (f"machine is busy: 1-minute load {load} (limit "
                   f"{cores()} cores), {in_use} cores in use by others "
                   f"just now (limit {MAX_OTHER_CORES}); timings would "
                   "flatter the framework that tolerates contention better")
        if not allow_busy:
            raise SystemExit(f"REFUSED: {message}. Wait for a quiet "
                             "machine or pass --allow-busy to time anyway "
                             "(the result is flagged busy).")
        banner = "!" * 78
        print(f"{banner}\n!! BUSY MACHINE: {message}.\n!! These figures "
              f"are NOT comparable with quiet-machine ones.\n{banner}",
              file=sys.stderr)
    return state


def finish(state):
    """Adds the load after the run and the CPU other processes used during
    it (machine busy time minus ours); over half a core, or a load beyond
    1.5x the cores, flags the run busy."""
    after = os.getloadavg()[0]
    state = dict(state)
    state["load_after"] = round(after, 2)
    state["busy"] = bool(state["busy"] or after > 1.5 * cores())
    start = state.pop("_start", None)
    if start is not None:
        # Other processes' CPU during the run: the machine's busy time
        # minus our own.
        wall = time.perf_counter() - start[0]
        others = ((_machine_busy_seconds() - start[2])
                  - (time.process_time() - start[1])) / max(wall, 1e-9)
        state["cores_used_by_others_during_run"] = round(max(others, 0), 2)
        state["busy"] = bool(state["busy"] or others > MAX_OTHER_CORES)
    if state["busy"]:
        print(f"!! BUSY MACHINE during the run (load {after}): figures "
              "flagged busy.", file=sys.stderr)
    return state


def alternate(contenders, rounds=5, repeats=3, warmup=1):
    """Times callables in turn, round after round.

    Args:
        contenders: dict name -> zero-argument callable (one step).
        rounds: rounds; each runs every contender `repeats` times.
        repeats: timed calls per contender per round.
        warmup: untimed calls first (tracing, compilation).

    Returns:
        dict name -> {"median": s, "min": s, "max": s, "rounds": [s, ...]}
        with the median over rounds of each round's median, in seconds.
    """
    names = list(contenders)
    for name in names:
        for _ in range(warmup):
            contenders[name]()
    per_round = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                contenders[name]()
                times.append(time.perf_counter() - start)
            per_round[name].append(statistics.median(times))
    return {name: {"median": statistics.median(values), "min": min(values),
                   "max": max(values),
                   "rounds": [round(v, 5) for v in values]}
            for name, values in per_round.items()}


def copy_bandwidth(threads=None, probe_bytes=COPY_PROBE_BYTES, repeats=5):
    """Bytes per second the machine copies (each byte read once and
    written once), the best of single- and multi-threaded numpy copies."""
    threads = threads or cores()
    n = probe_bytes // 4
    src = np.ones(n, np.float32)
    dst = np.empty_like(src)
    best = 0.0
    for parts in sorted({1, threads}):
        chunks = np.array_split(np.arange(n), parts)
        bounds = [(c[0], c[-1] + 1) for c in chunks]

        def copy(lo, hi):
            np.copyto(dst[lo:hi], src[lo:hi])

        for _ in range(repeats):
            start = time.perf_counter()
            if parts == 1:
                copy(0, n)
            else:
                workers = [threading.Thread(target=copy, args=b)
                           for b in bounds]
                for w in workers:
                    w.start()
                for w in workers:
                    w.join()
            best = max(best, probe_bytes / (time.perf_counter() - start))
    return best


def report(result, name):
    """Prints one JSON line and appends it to `benchmarks/out/NAME.jsonl`."""
    os.makedirs(OUT_DIR, exist_ok=True)
    line = json.dumps(result)
    print(line)
    with open(os.path.join(OUT_DIR, f"{name}.jsonl"), "a") as f:
        f.write(line + "\n")
    return result
