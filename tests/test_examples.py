"""The examples run, and the third-party agent stores the actions QMP executed."""

import importlib.util
import shutil
from pathlib import Path

import numpy as np

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_unmodified_sb3_sac_stores_the_executed_actions():
    example = load("sb3_sac_qmp")
    env, model = example.make_agent("qmp/MultistageReacher-v0", seed=0, learning_starts=100)
    executed, proposed = [], []
    original_step = type(env).step

    def recording_step(self, action):
        out = original_step(self, action)
        proposed.append(np.array(action))
        executed.append(out[4]["qmp_action"].copy())
        return out

    type(env).step = recording_step
    try:
        model.learn(total_timesteps=300)
    finally:
        type(env).step = original_step
    stored = model.replay_buffer.actions[: model.replay_buffer.pos, 0]
    np.testing.assert_array_equal(stored, np.array(executed))
    assert not np.array_equal(np.array(executed), np.array(proposed))  # QMP switched
    counts = env.selection_counts
    assert counts.sum() == 300 and (counts.sum(axis=0) > 0).sum() > 1


def test_bring_your_own_agent_example():
    example = load("custom_agent")
    envs, stored = example.run(steps=50)
    assert len(stored) == 50 and stored[0][1].shape == (10, 2)
    matrix = envs.selection_matrix()
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0)


def test_pointreach_figure_command(tmp_path):
    from qmp_experiments import pointreach_figure

    bundled = (pointreach_figure.load_campaign("pointreach").source).read_text()
    campaign = tmp_path / "pr.toml"
    campaign.write_text(
        bundled.replace("total_timesteps = 20_000", "total_timesteps = 400")
        .replace("checkpoint_every = 20_000", "checkpoint_every = 400")
        .replace('"5000"', '"200"')
        .replace("seeds = [1]", "seeds = [1, 2]")
    )
    pointreach_figure.main([str(campaign), "--root", str(tmp_path / "results")])
    out = tmp_path / "results" / "pr"
    assert (out / "pointreach.png").stat().st_size > 10_000
    rows = (out / "pointreach.csv").read_text().splitlines()
    assert len(rows) == 4 and "executed/up-right_mean" in rows[0] and ",2," in rows[1]
    run_dir = out / "qmp_relevant" / "seed_1"
    episodes = pointreach_figure.collected_episodes(run_dir)
    assert sum(len(e) - 1 for e in episodes) == 400  # every collected step, split into episodes
    assert all(np.all((e >= 0) & (e <= 10)) for e in episodes)
    # Redrawn from the saved positions alone, as from a clone without checkpoints.
    for checkpoints in out.glob("*/seed_*/checkpoints"):
        shutil.rmtree(checkpoints)
    pointreach_figure.main([str(campaign), "--root", str(tmp_path / "results"), "--report-only"])
    assert (out / "pointreach.csv").read_text().splitlines() == rows
    again = pointreach_figure.collected_episodes(run_dir)
    assert all(np.array_equal(a, b) for a, b in zip(again, episodes, strict=True))
