"""sac_qmp.py end to end: train, evaluate, checkpoint, resume, plot."""

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cleanrl_qmp import sac_qmp
from cleanrl_qmp.common import load_checkpoint
from cleanrl_qmp.plot import plot_runs
from qmp_wrappers.behavior import QMPVectorBehaviorWrapper

SCRIPT = Path(sac_qmp.__file__)


def tiny_args(run_dir, **overrides):
    args = sac_qmp.Args(
        env_id="qmp/MultistageReacher-v0",
        seed=3,
        total_timesteps=600,
        learning_starts=200,
        batch_size=16,
        hidden=(32, 32),
        eval_every=300,
        eval_episodes=1,
        checkpoint_every=300,
        log_every=100,
        progress=False,
        run_dir=str(run_dir),
    )
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


def read_metrics(run_dir):
    with (Path(run_dir) / "metrics.csv").open() as f:
        return [{k: v for k, v in row.items() if k != "time"} for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One QMP run, recording what the wrapper executed and what the agent proposed."""
    run_dir = tmp_path_factory.mktemp("runs") / "qmp"
    record = {"proposed": [], "executed": []}
    original_step = QMPVectorBehaviorWrapper.step

    def recording_step(self, actions):
        out = original_step(self, actions)
        record["proposed"].append(np.array(actions))
        record["executed"].append(out[4]["qmp_action"].copy())
        return out

    QMPVectorBehaviorWrapper.step = recording_step
    try:
        sac_qmp.main(tiny_args(run_dir))
    finally:
        QMPVectorBehaviorWrapper.step = original_step
    return run_dir, record


def test_run_writes_metrics_checkpoints_and_tensorboard(trained):
    run_dir, _ = trained
    rows = read_metrics(run_dir)
    assert [int(r["global_step"]) for r in rows] == [300, 600]
    assert {"eval/success_mean", "eval/success/stay", "eval/task_complete_mean"} <= set(rows[0])
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "step_300.pt",
        "step_600.pt",
    ]
    assert list(run_dir.glob("events.out.tfevents.*"))
    assert len((run_dir / "selection.jsonl").read_text().splitlines()) == 2


def test_buffer_stores_the_executed_actions_not_the_proposals(trained):
    run_dir, record = trained
    rb = load_checkpoint(run_dir / "checkpoints" / "step_600.pt")["rb"]
    executed = np.array(record["executed"])
    np.testing.assert_array_equal(rb.actions[: len(executed)], executed)
    assert not np.array_equal(executed, np.array(record["proposed"]))  # QMP did switch


def test_resumed_run_reproduces_the_uninterrupted_run(trained, tmp_path):
    run_dir, _ = trained
    copy = tmp_path / "resumed"
    shutil.copytree(run_dir, copy)
    (copy / "checkpoints" / "step_600.pt").unlink()
    sac_qmp.main(sac_qmp.Args(resume=str(copy / "checkpoints" / "step_300.pt"), progress=False))
    assert read_metrics(copy) == read_metrics(run_dir)
    a = load_checkpoint(run_dir / "checkpoints" / "step_600.pt")
    b = load_checkpoint(copy / "checkpoints" / "step_600.pt")
    for key in ("actor", "qf", "qf_target"):
        for name, tensor in a[key].items():
            torch.testing.assert_close(b[key][name], tensor, rtol=0, atol=0)
    assert torch.equal(a["log_alpha"], b["log_alpha"])


def test_no_qmp_run_disables_the_mixture_and_plots(trained, tmp_path):
    run_dir, _ = trained
    baseline = tmp_path / "noqmp"
    sac_qmp.main(tiny_args(baseline, qmp=False, total_timesteps=300, checkpoint_every=0))
    ckpt = load_checkpoint(baseline / "checkpoints" / "step_300.pt")
    assert not ckpt["envs"].enabled and ckpt["args"].qmp is False
    written = plot_runs([run_dir, baseline], tmp_path / "plots")
    names = sorted(p.name for p in written)
    assert "learning_curves.png" in names and any(n.startswith("selection_") for n in names)
    assert all(p.stat().st_size > 5000 for p in written)


def test_cli_exposes_qmp_switch_and_presets():
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, check=True
    )
    assert "--qmp" in out.stdout and "--no-qmp" in out.stdout and "--resume" in out.stdout
    with pytest.raises(ValueError, match="no preset"):
        sac_qmp.main(sac_qmp.Args(env_id="Pendulum-v1", progress=False))
