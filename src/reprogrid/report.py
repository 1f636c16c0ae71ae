"""The attribution report (placeholder until the full report lands)."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True)
    p.add_argument("--results", required=True)


def run(args) -> int:
    raise NotImplementedError
