"""`reprogrid adapt`: the next follow-up round of an adaptive design (recorded in grid/rounds.json), or a
statement that the budget is reached. Run the workflow again afterwards: it runs the grown grid."""

from __future__ import annotations

from pathlib import Path

HELP = "add the next follow-up round of an adaptive design (where predictions are least certain)"


def add_arguments(p) -> None:
    p.add_argument("--config", required=True, help="study config YAML with design: {type: adaptive, ...}")
    p.add_argument("--predicted", help="predicted_cells.csv of `reprogrid estimate` (default: the study's)")


def run(args) -> int:
    from reprogrid import grid
    from reprogrid.designs.rounds import next_round, record_round
    from reprogrid.errors import UserError
    from reprogrid.io import read_table
    from reprogrid.layout import Layout
    from reprogrid.study import load_study

    cfg = load_study(args.config)
    plan = grid.design_plan(cfg)
    if plan is None or plan.settings["type"] != "adaptive":
        raise UserError("not an adaptive design (design: {type: adaptive, ...})", field=f"{cfg.path}: design.type")
    before = set(grid.expand(cfg)["generation_id"])
    budget = plan.settings["budget"]
    if plan.n_runs >= budget:
        print(f"budget reached: {plan.n_runs} of {budget} generation runs after {len(plan.rounds)} follow-up "
              "round(s); nothing added")
        return 0
    predicted = Path(args.predicted or Layout(cfg.results).predicted_cells)
    if not predicted.is_file():
        raise UserError(f"{predicted} does not exist: run the workflow on this config first (its estimate rule "
                        "writes it)", field="--predicted")
    table = read_table(predicted, [*plan.factors, "ci_low", "ci_high", "estimable"], what="--predicted",
                       text_columns=plan.factors)
    runs = next_round(cfg, plan, table)
    if not runs:
        print(f"no run left to add: every combination of {', '.join(plan.factors)} is run")
        return 0
    record_round(cfg, plan, runs, [])
    after = set(grid.expand(load_study(args.config))["generation_id"])
    path = record_round_ids(cfg, sorted(after - before))
    print(f"round {len(plan.rounds) + 1}: added {len(runs)} generation runs ({plan.n_runs + len(runs)} of {budget}); "
          f"recorded in {path}; new generation ids: {', '.join(sorted(after - before))}")
    return 0


def record_round_ids(cfg, ids: list[str]) -> Path:
    """Fill in the generation ids of the round just recorded."""
    from reprogrid.designs.rounds import rounds_path
    from reprogrid.io import read_json, write_json

    path = rounds_path(cfg)
    data = read_json(path, what="design rounds")
    data["rounds"][-1]["generation_ids"] = ids
    write_json(path, data)
    return path
