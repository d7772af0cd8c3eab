import importlib
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402

REQUIRE_PEERS = os.environ.get("KERAS_YOLO_REQUIRE_PEERS") == "1"


def require_peer(module_name, why=""):
    """Imports a reference implementation for a parity test.

    Locally a missing peer skips the test; in CI (KERAS_YOLO_REQUIRE_PEERS=1,
    set by .ci/run) it fails, so a parity test can never pass by not running.
    """
    try:
        return importlib.import_module(module_name)
    except Exception as error:  # noqa: BLE001 - any import failure counts
        message = f"reference {module_name!r} unavailable ({error}) {why}"
        if REQUIRE_PEERS:
            pytest.fail(message)
        pytest.skip(message)


def require_file(path, why=""):
    if not os.path.exists(path):
        message = f"reference file {path} missing {why}"
        if REQUIRE_PEERS:
            pytest.fail(message)
        pytest.skip(message)
    return path
