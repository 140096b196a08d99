"""Aggregation across seeds: IQM, stratified bootstrap, steps to threshold, AUC, tables."""

import csv
import json

import numpy as np
import pytest

from qmp_experiments.aggregate import summarize, write_outputs
from qmp_experiments.stats import iqm, normalized_auc, stratified_bootstrap_ci


def fake_run(root, name, qmp, success_by_step):
    """A run folder as the scripts write it: args.json and metrics.csv, one column per task."""
    run = root / name
    run.mkdir()
    (run / "args.json").write_text(
        json.dumps({"env_id": "qmp/Fake-v0", "exp_name": "sac_qmp", "qmp": qmp})
    )
    with (run / "metrics.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        tasks = "abcdefgh"[: len(success_by_step[0][1])]
        writer.writerow(["global_step", "eval/success_mean", *(f"eval/success/{t}" for t in tasks)])
        for step, per_task in success_by_step:
            writer.writerow([step, float(np.mean(per_task)), *per_task])
    return run


def test_stratified_bootstrap_and_iqm():
    constant = np.full((5, 3), 0.7)
    assert stratified_bootstrap_ci(constant) == pytest.approx((0.7, 0.7))
    scores = np.random.default_rng(0).uniform(size=(10, 4))
    low, high = stratified_bootstrap_ci(scores)
    assert low < float(iqm(scores.reshape(-1))) < high
    with pytest.raises(ValueError, match="runs, tasks"):
        stratified_bootstrap_ci(np.zeros(3))
    assert normalized_auc(np.array([0, 10, 20]), np.array([1.0, 1.0, 1.0])) == 1.0


def test_summary_groups_seeds_and_computes_the_metrics(tmp_path):
    runs = []
    for seed in range(3):  # QMP runs: reach 0.5 at step 200 and 0.8 at step 300
        runs.append(
            fake_run(
                tmp_path,
                f"qmp{seed}",
                True,
                [(100, (0.2, 0.2)), (200, (0.6, 0.4)), (300, (0.9, 0.7)), (400, (1.0, 1.0))],
            )
        )
    for seed in range(2):  # baseline runs: never reach 0.5
        runs.append(
            fake_run(
                tmp_path,
                f"base{seed}",
                False,
                [(100, (0.0, 0.0)), (200, (0.1, 0.1)), (300, (0.2, 0.2)), (400, (0.4, 0.2))],
            )
        )
    summary, per_task = summarize(runs, last=2)
    by_method = {row["method"]: row for row in summary}
    qmp, base = by_method["sac_qmp + QMP"], by_method["sac_qmp (no QMP)"]
    assert qmp["seeds"] == 3 and base["seeds"] == 2
    assert qmp["final_success_iqm_last2"] == pytest.approx(0.9)  # mean of last two: (0.8 + 1.0) / 2
    assert qmp["steps_to_0.5"] == 200 and qmp["steps_to_0.8"] == 300
    assert np.isnan(base["steps_to_0.5"])
    assert base["final_success_iqm_last2"] == pytest.approx(0.25)
    assert qmp["ci95_low"] <= qmp["final_success_iqm_last2"] <= qmp["ci95_high"]
    assert {(r["method"], r["task"]) for r in per_task} >= {
        ("sac_qmp + QMP", "a"),
        ("sac_qmp (no QMP)", "b"),
    }
    paths = write_outputs(summary, per_task, tmp_path / "out" / "summary")
    assert [p.name for p in paths] == [
        "summary.csv",
        "summary_per_task.csv",
        "summary.md",
        "summary_per_task.md",
    ]
    per_task_md = (tmp_path / "out" / "summary_per_task.md").read_text().splitlines()
    assert per_task_md[0] == "| env_id | method | a | b |"
    assert "| qmp/Fake-v0 | sac_qmp + QMP | 0.95 | 0.85 |" in per_task_md
    assert "| sac_qmp + QMP |" in (tmp_path / "out" / "summary.md").read_text().replace(
        "| qmp/Fake-v0 ", ""
    )


def test_the_interval_is_for_the_reported_statistic(tmp_path):
    # One seed solving 3 of 4 tasks: mean success 0.75. An IQM over the run x task scores would
    # trim the failed task away (1.0); the table's number and its CI must both say 0.75.
    run = fake_run(tmp_path, "one", True, [(100, (1.0, 1.0, 1.0, 0.0))])
    (row,), _ = summarize([run], last=1)
    assert row["final_success_iqm_last1"] == pytest.approx(0.75)
    assert (row["ci95_low"], row["ci95_high"]) == pytest.approx((0.75, 0.75))
