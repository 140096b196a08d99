"""The examples run, and the third-party agent stores the actions QMP executed."""

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# The CleanRL recipe (docs): its hunks port CleanRL's published SAC script to QMP.
RECIPES = EXAMPLES.parent / "docs" / "wrapper" / "recipes.md"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("vec_env", ["dummy", "subproc"])
def test_unmodified_sb3_sac_trains_vectorised_and_stores_the_executed_actions(vec_env):
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    example = load("sb3_sac_qmp")
    cls = {"dummy": DummyVecEnv, "subproc": SubprocVecEnv}[vec_env]
    venv, model = example.make_agent(
        "qmp/MultistageReacher-v0", seed=0, learning_starts=100, vec_env_cls=cls
    )
    assert venv.num_envs == 5 and venv.get_attr("task_id") == [0, 1, 2, 3, 4]
    executed, proposed, policy_calls = [], [], []
    original_step_async = type(venv).step_async

    def recording_step_async(self, actions):
        proposed.append(np.array(actions))
        original_step_async(self, actions)
        executed.append(self._executed.copy())

    class CountingPolicy:
        """Forwards to the attached policy and records the batch size of every call."""

        def __init__(self, adapter):
            self.adapter = adapter

        def policy(self, obs, action_dim):
            policy_calls.append(len(obs))
            return self.adapter.policy(obs, action_dim)

    type(venv).step_async = recording_step_async
    venv.qmp.policy = CountingPolicy(venv.qmp.policy)
    try:
        model.learn(total_timesteps=300)  # 60 vector steps of 5 sub-envs
    finally:
        type(venv).step_async = original_step_async
    steps = len(executed)
    assert steps == 60
    assert policy_calls == [5 * 5] * steps  # ONE call per step: 5 policies x 5 sub-envs
    buffer = model.replay_buffer
    np.testing.assert_array_equal(buffer.actions[: buffer.pos], np.array(executed))
    assert not np.array_equal(np.array(executed), np.array(proposed))  # QMP switched
    counts = venv.selection_counts
    assert counts.sum() == 300 and (counts.sum(axis=0) > 0).sum() > 1
    if vec_env == "dummy":  # SB3's evaluate_policy scores the agent's own policy in the block
        from stable_baselines3.common.evaluation import evaluate_policy

        with venv.sharing_off():
            evaluate_policy(model, venv, n_eval_episodes=5)
        assert venv.enabled and venv.selection_counts.sum() == 300  # nothing was mixed
        evaluate_policy(model, venv, n_eval_episodes=5)
        assert venv.selection_counts.sum() > 300  # without the block: the mixture
    venv.close()


def test_bring_your_own_agent_example():
    example = load("custom_agent")
    envs, stored = example.run(steps=50)
    assert len(stored) == 50 and stored[0][1].shape == (10, 2)
    matrix = envs.selection_matrix()
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0)


def test_pointreach_figure_command(tmp_path, capsys):
    from qmp_studies import pointreach_figure

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

    # What cannot be drawn is one line naming the run and the way on, exit status 2.
    def refused(*extra: str) -> str:
        argv = [str(campaign), "--root", str(tmp_path / "results"), "--report-only", *extra]
        with pytest.raises(SystemExit) as stop:
            pointreach_figure.main(argv)
        assert stop.value.code == 2
        return capsys.readouterr().err

    assert "the campaign's seeds are 1, 2" in refused("--seed-shown", "7")
    assert "--episodes-shown 0: must be >= 1" in refused("--episodes-shown", "0")
    saved = (run_dir / "episodes.npz").read_bytes()
    (run_dir / "episodes.npz").write_bytes(saved[:100])
    message = refused()
    assert f"{run_dir} cannot be read (BadZipFile" in message and "restore" in message
    (run_dir / "episodes.npz").unlink()
    assert f"{run_dir} has neither episodes.npz nor a checkpoint" in refused()
    (run_dir / "episodes.npz").write_bytes(saved)
    (run_dir / "timing.json").rename(run_dir / "timing.json.aside")
    assert f"{run_dir} is not a finished run" in refused()


def marked_lines(path: Path) -> list[str]:
    """Code lines marked ``# QMP`` / ``# Gymnasium 1.x`` (a marker-only comment marks the next)."""
    lines = path.read_text().splitlines()
    marked = []
    for i, line in enumerate(lines):
        code, _, comment = line.partition("  # ")
        if not ("# QMP" in line or "# Gymnasium 1.x" in line) or '"""' in line or "``" in line:
            continue
        if line.strip().startswith("#"):
            marked.append(lines[i + 1].strip())
        else:
            marked.append(line.strip())
    return marked


def test_cleanrl_example_runs_and_the_recipe_lists_every_change(tmp_path):
    import subprocess
    import sys

    script = EXAMPLES / "cleanrl_sac_continuous_action.py"
    out = subprocess.run(
        [sys.executable, str(script), "--total-timesteps", "300", "--learning-starts", "100",
         "--batch-size", "32"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "episodic_return" in out.stdout and "SPS" in out.stdout
    assert list((tmp_path / "runs").glob("*/events.out.tfevents.*"))
    recipes = RECIPES.read_text()
    section = recipes[recipes.index("## Add QMP to a CleanRL script") :]
    marked = marked_lines(script)
    assert len(marked) >= 12
    missing = [line for line in marked if line not in section]
    assert not missing, f"{RECIPES.name} does not list these changed lines: {missing}"


def recipe_port_hunks() -> list[tuple[list[str], list[str]]]:
    """The docs recipe's CleanRL port as (old lines, new lines) hunks, in order."""
    recipes = RECIPES.read_text()
    start = recipes.index("<!-- cleanrl-port: the hunks below")
    block = recipes[start : recipes.index("<!-- cleanrl-port: end -->")]
    hunks = []
    for body in block.split("```diff\n")[1:]:
        lines = body.split("```")[0].splitlines()
        old = [line[1:] for line in lines if line[:1] in (" ", "-")]
        new = [line[1:] for line in lines if line[:1] in (" ", "+")]
        assert all(line[:1] in (" ", "-", "+") for line in lines), body
        hunks.append((old, new))
    return hunks


def apply_hunks(text: str, hunks: list[tuple[list[str], list[str]]]) -> str:
    lines = text.splitlines()
    for old, new in hunks:
        at = [i for i in range(len(lines)) if lines[i : i + len(old)] == old]
        assert len(at) == 1, f"hunk context found {len(at)} times, expected once: {old}"
        lines[at[0] : at[0] + len(old)] = new
    return "\n".join(lines) + "\n"


def test_recipe_cleanrl_port_is_the_example_port():
    """Every line the recipe's hunks add is in our own port, so the example runs what they say."""
    hunks = recipe_port_hunks()
    assert len(hunks) == 9
    example = {line.strip() for line in (EXAMPLES / "cleanrl_sac_continuous_action.py").open()}
    added = [line.strip() for old, new in hunks for line in new if line not in old]
    missing = [line for line in added if line not in example]
    assert not missing, f"the example lacks these lines the recipe adds: {missing}"


@pytest.mark.skipif(
    "QMP_CLEANRL_SAC" not in __import__("os").environ,
    reason="set QMP_CLEANRL_SAC to CleanRL's sac_continuous_action.py (not in this repository)",
)
def test_recipe_port_of_cleanrls_published_script_trains(tmp_path):
    import os
    import subprocess
    import sys

    published = Path(os.environ["QMP_CLEANRL_SAC"]).resolve()
    ported = tmp_path / "sac_continuous_action_qmp.py"
    ported.write_text(apply_hunks(published.read_text(), recipe_port_hunks()))
    env = dict(os.environ, PYTHONPATH=str(published.parent.parent))  # cleanrl_utils
    out = subprocess.run(
        [sys.executable, str(ported), "--total-timesteps", "300", "--learning-starts", "100",
         "--batch-size", "32"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "episodic_return" in out.stdout and "SPS" in out.stdout
    matrix = out.stdout.strip().splitlines()[-5:]  # the selection matrix, one row per task
    assert all(row.strip(" []") for row in matrix)


def test_torchrl_collector_and_buffer_store_the_executed_actions():
    """torchrl's GymWrapper over the QMP vector wrapper: the buffer holds executed actions."""
    example = load("torchrl_qmp")
    result = example.run(total_frames=500, frames_per_batch=250, seed=0)
    stored = result.buffer[:]  # LazyTensorStorage keeps insertion order
    assert len(result.buffer) == 500
    np.testing.assert_array_equal(stored["action"].numpy(), stored["next", "qmp_action"].numpy())
    shared = (stored["next", "qmp_policy"] != stored["next", "task_id"]).numpy()
    assert shared.any() and (~shared).any()  # behaviour was shared on some steps, not all
    proposals = result.proposed.reshape(-1, stored["action"].shape[-1]).numpy()
    # Where the own policy acted, the stored action is the agent's proposal, bit for bit;
    # where another policy acted it is that policy's action, not the proposal.
    np.testing.assert_array_equal(stored["action"].numpy()[~shared], proposals[~shared])
    assert not np.allclose(stored["action"].numpy()[shared], proposals[shared])
    assert result.qmp.selection_counts.sum() == 500
    assert all(np.isfinite(result.critic_losses))
