"""Every training script end to end: train, evaluate, checkpoint, resume, plot."""

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cleanrl_qmp import ctpg_sac, dnc_sac, mtsac_qmp, sac_qmp, uds_qmp
from qmp_experiments.plot import plot_runs
from qmp_harness.checkpoints import load_checkpoint
from qmp_harness.run_logging import cpu_model, source_digest
from qmp_wrappers.vector import QMPBehaviorWrapper as QMPVectorBehaviorWrapper

SCRIPTS = {
    "sac_qmp": (sac_qmp, {}),
    "mtsac_qmp": (mtsac_qmp, {}),
    "uds_qmp": (uds_qmp, {"share_q_quantile": 0.3}),
    "dnc_sac": (dnc_sac, {"qmp": True, "distill_every": 300, "distill_steps": 5}),
    "ctpg_sac": (ctpg_sac, {"guide_filter_start": 300}),
}


def tiny_args(run_dir, script=sac_qmp, **overrides):
    args = script.Args(
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


@pytest.fixture(scope="module", params=sorted(SCRIPTS))
def trained(request, tmp_path_factory):
    """One QMP run per script, recording what the wrapper executed and the agent proposed."""
    script, extra = SCRIPTS[request.param]
    run_dir = tmp_path_factory.mktemp("runs") / request.param
    record = {"proposed": [], "executed": []}
    original_step = QMPVectorBehaviorWrapper.step

    def recording_step(self, actions):
        out = original_step(self, actions)
        record["proposed"].append(np.array(actions))
        record["executed"].append(out[4]["qmp_action"].copy())
        return out

    QMPVectorBehaviorWrapper.step = recording_step
    try:
        script.main(tiny_args(run_dir, script, **extra))
    finally:
        QMPVectorBehaviorWrapper.step = original_step
    return run_dir, record, script


def test_run_writes_metrics_checkpoints_and_tensorboard(trained):
    run_dir, _, _ = trained
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
    run_dir, record, _ = trained
    rb = load_checkpoint(run_dir / "checkpoints" / "step_600.pt")["rb"]
    executed = np.array(record["executed"])
    np.testing.assert_array_equal(rb.actions[: len(executed)].reshape(executed.shape), executed)
    assert not np.array_equal(executed, np.array(record["proposed"]))  # QMP did switch


def test_resumed_run_reproduces_the_uninterrupted_run(trained, tmp_path):
    run_dir, _, script = trained
    copy = tmp_path / "resumed"
    shutil.copytree(run_dir, copy)
    (copy / "checkpoints" / "step_600.pt").unlink()
    script.main(script.Args(resume=str(copy / "checkpoints" / "step_300.pt"), progress=False))
    assert read_metrics(copy) == read_metrics(run_dir)
    a = load_checkpoint(run_dir / "checkpoints" / "step_600.pt")
    b = load_checkpoint(copy / "checkpoints" / "step_600.pt")
    for key in ("actor", "qf", "qf_target", "guide_actor", "guide_qf")[
        : 5 if "guide_qf" in a else 3
    ]:
        for name, tensor in a[key].items():
            torch.testing.assert_close(b[key][name], tensor, rtol=0, atol=0)
    assert torch.equal(a["log_alpha"], b["log_alpha"])
    segments = [json.loads(line) for line in (copy / "provenance.jsonl").read_text().splitlines()]
    assert [s["from_step"] for s in segments] == [0, 300]
    assert all(s["packages"]["torch"].startswith(torch.__version__[:4]) for s in segments)
    # The tests run from this project's git checkout, so the code's commit is recorded.
    assert all(len(s["git_commit"] or "") == 40 for s in segments)
    assert all(s["source_digest"] == source_digest() for s in segments)
    assert all(s["cpu"] == cpu_model() != "" for s in segments)


def test_source_digest_names_the_code_wherever_it_lies(tmp_path):
    """A copy of the code outside git (an export, a wheel) has the same digest as this checkout;
    one changed byte or one renamed file changes it."""
    import qmp_harness
    from qmp_harness.run_logging import SOURCE_PACKAGES

    root = Path(qmp_harness.__file__).resolve().parent.parent
    for package in SOURCE_PACKAGES:
        shutil.copytree(root / package, tmp_path / package, ignore=shutil.ignore_patterns("*.pyc"))
    assert source_digest(tmp_path) == source_digest()
    script = tmp_path / "cleanrl_qmp" / "sac_qmp.py"
    script.write_text(script.read_text() + "\n")
    changed = source_digest(tmp_path)
    assert changed != source_digest()
    script.rename(script.with_name("sac_qmp_renamed.py"))
    assert source_digest(tmp_path) not in (changed, source_digest())


def test_no_qmp_run_disables_the_mixture_and_plots(trained, tmp_path):
    run_dir, _, script = trained
    baseline = tmp_path / "noqmp"
    script.main(tiny_args(baseline, script, qmp=False, total_timesteps=300, checkpoint_every=0))
    ckpt = load_checkpoint(baseline / "checkpoints" / "step_300.pt")
    assert not ckpt["envs"].enabled and ckpt["args"]["qmp"] is False
    written = plot_runs([run_dir, baseline], tmp_path / "plots")
    names = sorted(p.name for p in written)
    assert "learning_curves.png" in names
    assert any(n.startswith("selection_over_time_") for n in names)
    assert any(n.startswith("selection_qmp") for n in names)
    assert all(p.stat().st_size > 5000 for p in written if p.suffix == ".png")
    assert any(n.startswith("selection_qmp") and n.endswith(".md") for n in names)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_cli_exposes_qmp_switch_and_resume(name):
    path = Path(SCRIPTS[name][0].__file__)
    out = subprocess.run([sys.executable, str(path), "--help"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "--qmp" in out.stdout and "--no-qmp" in out.stdout and "--resume" in out.stdout


def test_a_fresh_run_in_a_used_folder_is_refused_or_moves_the_old_run_aside(tmp_path, capsys):
    run_dir = tmp_path / "reused"
    sac_qmp.main(tiny_args(run_dir, total_timesteps=300, checkpoint_every=0))
    first = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    with pytest.raises(SystemExit) as refused:
        sac_qmp.main(tiny_args(run_dir, total_timesteps=300, checkpoint_every=0))
    assert refused.value.code == 2 and "already holds a run" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == first
    sac_qmp.main(tiny_args(run_dir, total_timesteps=300, checkpoint_every=0, overwrite=True))
    (aside,) = tmp_path.glob("reused.replaced-*")
    assert f"moved the previous run of {run_dir} to {aside}" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in aside.iterdir() if p.is_file()} == {
        k: v for k, v in first.items() if k != ".lock"
    }
    assert len((run_dir / "selection.jsonl").read_text().splitlines()) == 1
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    assert [int(r["global_step"]) for r in read_metrics(run_dir)] == [300]


def test_uds_and_mtsac_specific_checks(capsys):
    # Refused with the flags, before anything is built or written (not a traceback from main).
    with pytest.raises(SystemExit) as refused:
        uds_qmp.main(uds_qmp.Args(env_id="qmp/PointReach-v0", progress=False))
    assert refused.value.code == 2
    assert "data sharing needs at least two" in capsys.readouterr().err
    relabelled = uds_qmp.relabel_as_own_task(torch.zeros(3, 2, 5), 3)
    assert relabelled[:, :, -3].tolist() == [[1, 1], [0, 0], [0, 0]]
    assert relabelled[2, 1, -3:].tolist() == [0, 0, 1]


def test_dnc_pairwise_kl():
    mean, log_std = torch.randn(4, 3), torch.randn(4, 3) * 0.3
    assert torch.allclose(dnc_sac.gaussian_kl(mean, log_std, mean, log_std), torch.zeros(4))
    p = torch.distributions.Normal(mean, log_std.exp())
    q = torch.distributions.Normal(mean + 0.5, (log_std + 0.2).exp())
    expected = torch.distributions.kl_divergence(p, q).sum(-1)
    torch.testing.assert_close(
        dnc_sac.gaussian_kl(mean, log_std, mean + 0.5, log_std + 0.2), expected
    )

    from cleanrl_qmp.networks import EnsembleActor, TaskFeatures

    actor = EnsembleActor(3, TaskFeatures(4, np.ones(4, dtype=bool)), 2, (8,))
    obs = torch.randn(3, 5, 7)
    kl = dnc_sac.pairwise_policy_kl(actor, obs)
    assert kl.shape == (3,) and torch.all(kl > 0)
    with torch.no_grad():  # identical members: no disagreement
        for param in actor.parameters():
            param.copy_(param[:1].expand_as(param))
    assert torch.allclose(dnc_sac.pairwise_policy_kl(actor, obs), torch.zeros(3), atol=1e-6)


def test_selection_over_time_uses_the_steps_every_seed_logged(tmp_path, monkeypatch):
    import qmp_harness.run_plots as plot_module

    names = ["a", "b", "helper"]  # 2 tasks, 3 candidates (a fixed helper policy)

    def record(step, value):
        return {"global_step": step, "names": names, "matrix": [[value, 0, 1 - value]] * 2}

    histories = [
        [record(10, 0.2), record(20, 0.4), record(30, 0.6)],
        [record(10, 0.4), record(20, 0.8)],  # a seed that has not reached step 30 yet
    ]
    plotted = {}
    original_plot = plot_module.plt.Axes.plot

    def spy(ax, x, y, *args, label=None, **kwargs):
        plotted.setdefault(label, []).append((list(x), list(y)))
        return original_plot(ax, x, y, *args, label=label, **kwargs)

    monkeypatch.setattr(plot_module.plt.Axes, "plot", spy)
    path = plot_module.plot_selection_over_time(histories, "env", tmp_path / "sel.png")
    assert path.stat().st_size > 5000
    steps, task0_own = plotted["a"][0]
    assert steps == [10, 20] and np.allclose(task0_own, [0.3, 0.6])
    assert np.allclose(plotted["helper"][0][1], [0.7, 0.4])

    table = plot_module.selection_table(histories).splitlines()
    assert table[0].startswith("Executed-policy shares, mean over 2 seed(s) and the 2 logged")
    # task a: own share 0.45 overall (0.3 then 0.6), helper 0.55; first third 0.3, last 0.6
    assert table[4] == "| a | 0.450 | 0.000 | 0.550 | 0.300 | 0.600 |"


def test_eval_stop_at_success_keeps_success_and_reports_no_returns(tmp_path):
    """--eval-stop-at-success: the same success column, returns NaN (shortened episodes)."""
    full, short = tmp_path / "full", tmp_path / "short"
    common = {"env_id": "qmp/PointReachMT4-v0", "total_timesteps": 300, "checkpoint_every": 0}
    sac_qmp.main(tiny_args(full, eval_episodes=3, **common))
    sac_qmp.main(tiny_args(short, eval_episodes=3, eval_stop_at_success=True, **common))
    (row_full,), (row_short,) = read_metrics(full), read_metrics(short)
    success_keys = [k for k in row_full if "success" in k]
    return_keys = [k for k in row_full if "return" in k]
    assert success_keys and return_keys
    assert [row_full[k] for k in success_keys] == [row_short[k] for k in success_keys]
    assert all(np.isnan(float(row_short[k])) for k in return_keys)
    assert not any(np.isnan(float(row_full[k])) for k in return_keys)


@pytest.mark.parametrize("tasks", [1, 5])
def test_selection_figures_keep_every_text_inside_the_figure(tasks, monkeypatch):
    """With one task collected (PointReach), the heatmap's axis label and the over-training
    title ran past a narrow figure and were cut; every title and label now fits."""

    import qmp_harness.run_plots as plot_module

    names = ["reach-top-right", "up", "right", "up-right", "down-left"][: max(tasks, 4)]
    matrix = [[1.0 / len(names)] * len(names)] * tasks
    histories = [[{"global_step": s, "names": names, "matrix": matrix} for s in (10, 20)]] * 5
    figures = []
    monkeypatch.setattr(plot_module, "save_figure", lambda fig, path: figures.append(fig))
    monkeypatch.setattr(plot_module.plt, "close", lambda fig: None)
    plot_module.plot_selection_heatmap(histories, "qmp/PointReach-v1", Path("heat.png"))
    plot_module.plot_selection_over_time(histories, "qmp/PointReach-v1", Path("time.png"))
    assert len(figures) == 2
    for fig in figures:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        # What each axes draws (title, axis labels, tick labels in view), and the figure title.
        extents = [ax.get_tightbbox(renderer) for ax in fig.axes if ax.get_visible()]
        if fig._suptitle is not None:
            extents.append(fig._suptitle.get_window_extent(renderer))
        for extent in extents:
            assert extent.x0 >= -1 and extent.x1 <= fig.bbox.x1 + 1, (fig, extent)
            assert extent.y0 >= -1 and extent.y1 <= fig.bbox.y1 + 1, (fig, extent)
        plot_module.plt.close(fig)


@pytest.mark.parametrize("width", [3.2, 4.5, 8.0, 13.2])
def test_fit_title_lines_fit_the_width_they_are_given(width):
    import qmp_harness.run_plots as plot_module

    long = (
        "qmp/PointReach-v1: trajectories collected by seed 4 (last 40 episodes) and executed "
        "policies (20000 steps; bars: mean and range over seeds)"
    )
    fig = plot_module.plt.figure(figsize=(width, 3))
    title = fig.suptitle(plot_module.fit_title(long, width))
    fig.canvas.draw()
    extent = title.get_window_extent()
    assert fig.bbox.x0 <= extent.x0 and extent.x1 <= fig.bbox.x1
    plot_module.plt.close(fig)
