"""`python -m serving <command>`: serving-side commands of keras-yolo.

Each command lives in its own module and registers itself with
`add_parser(subparsers)`; add a command with one import and one line below.
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from serving import convert, export, predict  # noqa: E402

COMMANDS = [export, predict, convert]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m serving", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(subparsers)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
