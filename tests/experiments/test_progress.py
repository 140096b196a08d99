"""Campaign progress (``sweep --status``): what each run folder says, without writing to any."""

import json
import textwrap

import pytest

from qmp_experiments import progress, sweep
from qmp_experiments.campaign import load_campaign
from qmp_harness.run_files import RunFolderLock

CAMPAIGN = """
env_ids = ["qmp/PointReach-v0"]
total_timesteps = 1000
seeds = [1, 2]
checkpoint_every = 500

[[methods]]
name = "plain"
script = "sac_qmp.py"

[[methods]]
name = "shared"
script = "sac_qmp.py"
flags = ["--qmp"]
"""


@pytest.fixture
def campaign(tmp_path):
    path = tmp_path / "demo.toml"
    path.write_text(textwrap.dedent(CAMPAIGN))
    return load_campaign(path)


def write_run(folder, rows, checkpoints=(), finished_at=None, started=(0,)):
    """A run folder as the harness leaves it: metrics rows (step, wall time, success, mixture),
    and one TensorBoard file per training process, named by its start time."""
    folder.mkdir(parents=True)
    for start in started:
        (folder / f"events.out.tfevents.{start}.host.1.0").write_bytes(b"")
    lines = ["global_step,time,eval/success_mean,eval_mixture/success_mean"]
    lines += [",".join(str(v) for v in row) for row in rows]
    (folder / "metrics.csv").write_text("\n".join(lines) + "\n")
    (folder / "checkpoints").mkdir()
    for step in checkpoints:
        (folder / "checkpoints" / f"step_{step}.pt").write_bytes(b"")
    if finished_at is not None:
        (folder / "timing.json").write_text(json.dumps({"env_steps": finished_at}))


def test_each_state_is_read_from_the_folder(campaign, tmp_path):
    root = tmp_path / "runs"
    write_run(root / "demo/plain/seed_1", [(500, 100.0, 0.5, ""), (1000, 150.0, 0.75, "")],
              checkpoints=[500, 1000], finished_at=1000)  # fmt: skip
    write_run(root / "demo/shared/seed_1", [(250, 10.0, 0.0, 0.0), (500, 20.0, 0.25, 0.5)],
              checkpoints=[250, 500])  # fmt: skip
    write_run(root / "demo/plain/seed_2", [(250, 10.0, 0.0, "")], checkpoints=[250])
    lock = RunFolderLock(root / "demo/shared/seed_1").acquire()  # a training process holds it
    try:
        found = {p.run.folder: p for p in progress.campaign_progress(campaign, root)}
    finally:
        lock.release()

    finished, running = found["demo/plain/seed_1"], found["demo/shared/seed_1"]
    stopped, absent = found["demo/plain/seed_2"], found["demo/shared/seed_2"]
    assert [finished.state, running.state, stopped.state, absent.state] == [
        "finished", "running", "stopped", "not started"]  # fmt: skip
    assert (running.evaluated_step, running.checkpointed_step) == (500, 500)
    assert (running.success, running.mixture_success) == (0.25, 0.5)
    assert running.steps_per_second == pytest.approx(25.0)  # 250 steps in 10 s
    assert running.hours_left(1000) == pytest.approx(500 / 25 / 3600)
    assert finished.mixture_success is None and finished.hours_left(1000) is None
    assert stopped.steps_per_second is None  # one evaluation gives no rate
    assert absent.evaluated_step is None


def test_the_rate_counts_only_the_process_training_now(campaign, tmp_path):
    root = tmp_path / "runs"
    rows = [(500, 100.0, 0.5, ""), (1000, 5000.0, 0.75, "")]  # resumed at 4900 s from 500
    write_run(root / "demo/plain/seed_1", rows, started=(0, 4900))
    write_run(root / "demo/plain/seed_2", rows, started=(0,))
    found = progress.campaign_progress(campaign, root, methods=["plain"])
    assert found[0].steps_per_second is None  # the gap between the sessions is not a rate
    assert found[1].steps_per_second == pytest.approx(500 / 4900)


def test_the_probe_writes_nothing_and_leaves_the_lock_free(campaign, tmp_path):
    root = tmp_path / "runs"
    write_run(root / "demo/plain/seed_1", [(250, 10.0, 0.0, "")])
    before = sorted(p.name for p in (root / "demo/plain/seed_1").iterdir())
    progress.campaign_progress(campaign, root)
    assert sorted(p.name for p in (root / "demo/plain/seed_1").iterdir()) == before
    assert not (root / "demo/shared").exists()
    RunFolderLock(root / "demo/plain/seed_1").acquire().release()  # nobody kept it


def test_a_damaged_metrics_file_is_named_not_raised(campaign, tmp_path):
    root = tmp_path / "runs"
    folder = root / "demo/plain/seed_1"
    write_run(folder, [])
    (folder / "metrics.csv").write_bytes(b"global_step,time\n\xff\xfe\x00,\n")
    (folder / "timing.json").write_text("{not json")
    found = progress.campaign_progress(campaign, root, seeds=[1], methods=["plain"])
    assert found[0].state == "stopped"
    assert "metrics.csv unreadable" in found[0].note
    assert "metrics.csv unreadable" in progress.progress_table(campaign, found)


def test_sweep_status_prints_the_table_and_starts_nothing(campaign, tmp_path, capsys):
    root = tmp_path / "runs"
    write_run(root / "demo/plain/seed_1", [(500, 1.0, 0.5, ""), (1000, 2.0, 1.0, "")],
              finished_at=1000)  # fmt: skip
    sweep.main([str(campaign.source), "--root", str(root), "--status", "--seeds", "1"])
    out = capsys.readouterr().out
    assert "| demo/plain/seed_1 | finished | 1,000 |" in out
    assert "| demo/shared/seed_1 | not started |" in out
    assert "demo: 1 finished, 0 running, 0 stopped, 1 not started" in out
    assert not (root / "demo/shared").exists() and not (root / "INDEX.md").exists()
