"""Where notebook 04's time goes: its steps in one fresh process, with user and system CPU seconds.

Run: ``python bench/effects_steps.py --params PARAMS [--work WORK_DIR] [--programme P] [--composition]``
(``WORK_DIR`` defaults to ``work/<run_name>``, which runs of notebooks 01 and 03 filled).

It makes the library calls notebook 04 makes, in its order: the analysis sample, one effect report
per outcome and sample, and ``how_sure`` (sensitivity, power, placebo, subgroups). It prints the wall
seconds, the process's user and system CPU seconds and its resident memory now and at its peak after
each step, as ``bench/reach_steps.py`` does for 02. ``--composition`` takes the sample as the notebook did
before ``reach.panel.read_sample``: ``analysis_sample(read_panel(...))``, which copies every
column without the left-out rows. The two give the same sample (``tests/test_panel.py``); run
both, alternated in fresh processes, to compare them (``README.md``, *Runs at 2M firms*,
twenty-first round). Nothing is exported or registered. The numbers printed are measurements of
one run, not assertions.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reach_steps import arguments, run_setup, step_printer  # noqa: E402  (a bench script beside this one, not a package)


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__, "--composition",
                     "take the sample as analysis_sample(read_panel(...)), not read_sample").parse_args(argv)

    t0 = time.perf_counter()
    import warnings

    import pandas as pd

    from reach import did, effects, robustness
    from reach.panel import analysis_sample, read_link, read_panel, read_sample

    p, work, programme, rules = run_setup(args)
    step = step_printer(t0)
    step("imports")

    columns = effects.panel_columns(p["outcomes"], xformla=p["xformla"], covariates=p["covariates"],
                                    subgroups=p["subgroups"])
    window = dict(first_year=p["first_year"], last_year=p["last_year"], exclude_other_users=p["exclude_other_users"])
    if args.composition:
        sample = analysis_sample(read_panel(work, p["first_year"], p["last_year"], columns=columns), programme,
                                 **window)
    else:
        sample = read_sample(work, programme, columns=columns, **window)
    est_panel, _ = did.drop_without_pre_period(sample.panel, f"g_{programme}", p["anticipation"])
    samples = {"full": None}
    matched = work / f"matched_units_{programme}.parquet"
    if matched.is_file():
        samples["matched"] = pd.read_parquet(matched)
    step("composition" if args.composition else "read_sample")

    reports = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the notebook shows the reasons in its text, not as warnings
        for outcome in p["outcomes"]:
            for name, units in samples.items():
                reports[(outcome, name)] = effects.effect_report(
                    est_panel, outcome, programme=programme, sample=name, matched_units=units,
                    xformla=p["xformla"], control_group=p["control_group"], est_method=p["est_method"],
                    anticipation=p["anticipation"], biters=p["biters"], alp=p["alpha"], seed=p["seed"],
                    rules=rules, allow_unbalanced_panel=p["allow_unbalanced_panel"])
                step(f"report {outcome} {name}")
        robustness.how_sure(
            est_panel, reports, programme=programme, label=programme, primary=p["primary"], outcomes=p["outcomes"],
            xformla=p["xformla"], control_group=p["control_group"], est_method=p["est_method"],
            anticipation=p["anticipation"], allow_unbalanced_panel=p["allow_unbalanced_panel"], alpha=p["alpha"],
            power=p["power"], sensitivity_mbar=p["sensitivity_mbar"], placebo_draws=p["placebo_draws"],
            placebo_covariates=p["covariates"], subgroups=p["subgroups"], target_group=p["target_group"],
            firms=read_link(work).firms, rules=rules, seed=p["seed"])
    step("how_sure")
    return 0


if __name__ == "__main__":
    sys.exit(main())
