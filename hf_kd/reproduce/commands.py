"""`hf-kd reproduce`: the whole experiment in one command."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import yaml

from ..jobs import parse_overrides
from .budgets import BUDGETS, get_budget
from .recipe import run_reproduction
from .report import claims, write_report

DEFAULT_DATA_DIR = os.environ.get("HF_KD_SHARED_DATA", "../shared/data")


def load_recipe(path: str | None) -> dict:
    if path is None:
        return {}
    with open(path, encoding="utf-8") as f:
        recipe = yaml.safe_load(f) or {}
    if not isinstance(recipe, dict):
        raise ValueError(f"{path}: expected a mapping of budget settings, got {type(recipe).__name__}")
    return recipe


def rewrite_report(out: Path) -> int:
    """Tables, claims and plot again from an existing `results.json` (nothing is trained or evaluated)."""
    path = out / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no results to report; run `hf-kd reproduce --out {out}` first")
    results = json.loads(path.read_text(encoding="utf-8"))
    results["claims"] = claims(results)
    print(write_report(results, out))
    return 0


def run(args: argparse.Namespace) -> int:
    if args.report_only:
        return rewrite_report(Path(args.out))
    recipe = load_recipe(args.config)
    budget_name = args.budget or recipe.pop("budget", "short")
    recipe.pop("budget", None)
    overrides = {**recipe.pop("overrides", {}), **recipe, **parse_overrides(args.set)}
    budget = get_budget(budget_name, overrides)
    results = run_reproduction(budget, Path(args.data_dir), Path(args.out))
    print((Path(args.out) / "tables.md").read_text(encoding="utf-8"))
    print(f"results: {Path(args.out) / 'results.json'} ({results['wall_time_s']:.0f} s)")
    return 0


def add_subcommands(subparsers) -> None:
    parser = subparsers.add_parser(
        "reproduce",
        help="run the paper's experiment at small scale on the shared data",
        description="Builds training triples from real judgements (and, where the budget asks, random pairs of the "
        "training queries' candidates), labels them with the budget's teachers: pretrained ones such as "
        "all-mpnet-base-v2 (the short budget: one teacher, one BERT_DOT student), and BERT_CAT cross-encoders trained "
        "here with RankNet where the budget names teacher_layers (the ci budget). Then distils each student of the "
        "budget with and without a teacher, evaluates by re-ranking DL20 dev and SciFact test, measures latency, and "
        "writes results.json, tables.md and efficiency.png. Interrupted runs resume.",
    )
    parser.add_argument("--budget", choices=sorted(BUDGETS), help="size of the run (default: short)")
    parser.add_argument("--config", help="YAML recipe: `budget:` and any budget setting to override")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one budget setting")
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="the shared data folder (default: %(default)s)")
    parser.add_argument("--out", default="outputs/reproduce", help="output folder (default: %(default)s)")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="only rewrite tables.md and efficiency.png from the results.json in --out",
    )
    parser.set_defaults(func=run)
