"""`qid <stage>`: one subcommand per workflow stage. Each Snakemake rule runs exactly one of these
commands (printed in its log), so any grid cell can be rerun by hand with the same command.

Heavy libraries are imported inside the commands so that `qid --help` and the light stages
(aggregate, fit, figures) start fast; each command lists what it loads (`qid.cli.imports`),
and QID_IMPORT_ONLY=1 loads that and exits, to time a job's fixed cost. Each stage group's
module holds its commands' arguments beside their handlers; this package only parses,
dispatches and turns errors into one line.
"""

from __future__ import annotations

import argparse
import sys

from qid import QidError
from qid.cli import cells, checkpoints, data, diagnose, imports, results

# Every command and the module that defines it, in the order `qid --help` lists them.
COMMANDS = {
    "corpus": data,
    "evalset": data,
    "calibration": data,
    "data": data,
    "train": checkpoints,
    "grid": checkpoints,
    "fetch": checkpoints,
    "release": checkpoints,
    "quantize": cells,
    "cells": cells,
    "evaluate": cells,
    "aggregate": results,
    "fit": results,
    "table1": results,
    "diagnose": diagnose,
    "figures": results,
    "weights": checkpoints,
    "bitnet": checkpoints,
    "summary": results,
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qid", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="<stage>")
    for name, module in COMMANDS.items():
        module.PARSERS[name](sub)
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    entries = args.needs(args) if hasattr(args, "needs") else []
    if imports.import_only():
        imports.load(entries)
        raise SystemExit(0)
    if argv is None:  # qid owns the process (the `qid` script): keep out what it never uses
        imports.keep_out(entries)
    try:
        args.func(args)
    except (QidError, FileNotFoundError) as err:
        print(f"qid {args.command}: error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
