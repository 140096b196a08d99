"""run_cost: wall-clock hours of finished runs, resumed ones counted segment by segment."""

import json

import pytest

from qmp_experiments import run_cost

HEADER = "global_step,time,eval/success_mean\n"


def make_run(path, starts, times, steps=300):
    path.mkdir(parents=True)
    for k, start in enumerate(starts):
        (path / f"events.out.tfevents.{start}.vm.{100 + k}.0").write_bytes(b"")
    rows = "".join(f"{100 * (i + 1)},{t},0.5\n" for i, t in enumerate(times))
    (path / "metrics.csv").write_text(HEADER + rows)
    (path / "timing.json").write_text(json.dumps({"env_steps": steps}))


def test_a_resumed_run_counts_each_segment_up_to_its_last_evaluation(tmp_path):
    # Segment 1 starts at 1000, evaluates at 1100 and 1200, is killed at ~1250 (not counted);
    # segment 2 starts at 1300 (from the 200-step checkpoint) and evaluates at 1450.
    run = tmp_path / "maze/no_sharing/seed_1"
    make_run(run, [1300, 1000], [1100.5, 1200.0, 1450.0])
    cost = run_cost.run_cost(run)
    assert cost.segments == 2 and cost.env_steps == 300
    assert cost.wall_seconds == pytest.approx((1200.0 - 1000) + (1450.0 - 1300))


def test_table_groups_seeds_by_method_and_skips_unfinished_runs(tmp_path, capsys):
    make_run(tmp_path / "c/m/seed_1", [0], [3600.0])
    make_run(tmp_path / "c/m/seed_2", [0], [7200.0])
    (tmp_path / "c/m/seed_3").mkdir()  # started, not finished: no timing.json
    out = tmp_path / "cost.md"
    run_cost.main([str(tmp_path / "c"), "--out", str(out)])
    table = out.read_text()
    assert capsys.readouterr().out.startswith(table)
    row = [line for line in table.splitlines() if "c/m" in line][0]
    assert "| 2 | 300 | 1.50 | 1.00-2.00 |" in row


def test_bad_folders_are_named(tmp_path):
    make_run(tmp_path / "run", [], [10.0])
    with pytest.raises(ValueError, match="no events.out.tfevents"):
        run_cost.run_cost(tmp_path / "run")
    (tmp_path / "run/timing.json").write_text("")
    with pytest.raises(ValueError, match="timing.json: not a finished run"):
        run_cost.run_cost(tmp_path / "run")
    with pytest.raises(ValueError, match="no finished run"):
        run_cost.cost_table([tmp_path / "empty"])
