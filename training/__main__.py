"""`python -m training <command>`: train, evaluate, demo, show-data, evolve.

    python -m training demo --out runs/demo     # shapes -> train -> mAP -> export
    python -m training train --help
    python -m training evaluate --run runs/demo
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from training import cli, demo, evolve  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m training", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    subparsers = parser.add_subparsers(dest="command", required=True)
    cli.add_train_parser(subparsers)
    cli.add_evaluate_parser(subparsers)
    cli.add_show_data_parser(subparsers)
    demo.add_parser(subparsers)
    evolve.add_parser(subparsers)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
