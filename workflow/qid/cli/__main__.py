"""`python -m qid.cli`: the `qid` command."""

from qid.cli import main

main()
