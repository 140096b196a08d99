"""Bad values into the library are refused where they enter, with a message that names the
problem and the fix; valid values of NumPy (and torch) types are accepted (issue 42, sections 5
and 6). Everything here is fast: PointReach envs, tiny buffers, flag validation without a run."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from cleanrl_qmp import sac_qmp
from qmp_envs import validation
from qmp_envs.evaluation import EvaluationEnvs, evaluate_policy
from qmp_harness.config import PRESETS, SEED_MAX, base_problems, parse_command_line
from qmp_harness.run_memory import (
    MachineMemory,
    estimate_run_memory,
    machine_memory,
    memory_problems,
)
from qmp_wrappers import MultiTaskReplayBuffer, QMPBehaviorWrapper, QMPReplayBuffer
from qmp_wrappers.vector import QMPBehaviorWrapper as VectorQMPBehaviorWrapper

MT4 = "qmp/PointReachMT4-v0"  # 4 tasks, 2 actions, 2 features + 4 one-hot: cheap to step


def zeros_policy(obs):
    return np.zeros((len(obs), 2))


@pytest.fixture
def env():
    env = gym.make("qmp/PointReach-v0")
    env.reset(seed=0)
    return env


# -- the shared helpers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"), [(3, 3), (np.int64(3), 3), (np.uint8(3), 3), (np.int32(0), 0)]
)
def test_integers_of_numpy_types_are_accepted_as_python_ints(value, expected):
    result = validation.integer("count", value, minimum=0)
    assert result == expected and type(result) is int


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (True, "a bool is not a number"),
        (np.bool_(False), "a bool is not a number"),
        (1.5, "must be an integer >= 0, got 1.5"),
        ("3", "must be an integer >= 0, got '3'"),
        (-1, "must be an integer >= 0, got -1"),
        (None, "got None"),
    ],
)
def test_non_integers_and_out_of_range_counts_are_refused(value, match):
    with pytest.raises(validation.InputError, match=match):
        validation.integer("count", value, minimum=0)


def test_integral_floats_are_counts_only_where_asked():
    assert validation.integer("steps", 5e3, minimum=0, integral_floats=True) == 5000
    assert validation.integer("steps", np.float32(2.0), minimum=0, integral_floats=True) == 2
    with pytest.raises(TypeError, match="integer"):
        validation.integer("steps", 2.0, minimum=0)


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (float("nan"), "finite number > 0, got nan"),
        (float("inf"), "finite number > 0"),
        (0, "finite number > 0, got 0"),
        (True, "a bool is not a number"),
        (1 + 2j, "finite number"),
        ("0.5", "finite number"),
    ],
)
def test_reals_refuse_nan_inf_bools_complex_and_strings(value, match):
    with pytest.raises(validation.InputError, match=match):
        validation.real("temperature", value, above=0)


def test_reals_accept_numpy_floats_and_integers():
    assert validation.real("t", np.float32(0.5), above=0) == 0.5
    assert validation.real("t", np.int64(2), above=0) == 2.0


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (np.array([1 + 1j, 0]), "complex array"),
        (np.array([True, False]), "boolean array"),
        (np.array(["a", "b"]), "real numbers, got ndarray of dtype <U1"),
        ([0.5, None], "real numbers, got list of dtype object"),
        (np.array([np.inf, 0.0]), r"NaN or inf: inf at index 0 \(1 of 2 entries\)"),
        (np.zeros(3), r"shape \(3,\), expected \(2,\)"),
    ],
)
def test_real_arrays_refuse_what_would_be_cast_silently(value, match):
    with pytest.raises(validation.InputError, match=match):
        validation.real_array("action", value, shape=(2,))


def test_real_arrays_accept_integer_dtypes_and_tensors_with_grad():
    np.testing.assert_array_equal(validation.real_array("a", np.array([1, 0])), [1.0, 0.0])
    tensor = torch.tensor([0.25, -0.5], requires_grad=True)
    out = validation.real_array("a", tensor, dtype=np.float32)
    assert out.dtype == np.float32 and out.tolist() == [0.25, -0.5]


# -- the envs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "match"),
    [
        (np.array([1 + 1j, 0]), "complex array"),
        (np.array([True, False]), "boolean array"),
        (np.array([1j, 0j]), "complex"),
        (["up", "left"], "real numbers"),
    ],
)
def test_step_refuses_complex_boolean_and_text_actions(env, action, match):
    with pytest.raises(TypeError, match=f"{match}.*PointReachEnv"):
        env.step(action)


def test_step_accepts_an_action_tensor_that_requires_grad(env):
    action = torch.tensor([0.5, -0.25], requires_grad=True)
    env.reset(seed=3)
    obs_tensor = env.step(action)[0]
    env.reset(seed=3)
    obs_array = env.step(np.array([0.5, -0.25], np.float32))[0]
    np.testing.assert_array_equal(obs_tensor, obs_array)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"tsak": 1}, ValueError, r"unknown reset options \['tsak'\].*reads only \['task'\]"),
        ({"task": 0, "goal": 3}, ValueError, r"unknown reset options \['goal'\]"),
        ({"seed": 1}, ValueError, r"pass the seed as reset\(seed=\.\.\.\)"),
        ("task", TypeError, r"must be a dict such as \{'task': index\}"),
        (["task", 1], TypeError, "must be a dict"),
    ],
)
def test_reset_refuses_unknown_options_and_a_seed_in_options(env, options, error, match):
    with pytest.raises(error, match=match):
        env.reset(options=options)


def test_reset_accepts_numpy_integer_seeds_and_tasks():
    env = gym.make(MT4)
    obs_numpy, info = env.reset(seed=np.int64(3), options={"task": np.int64(2)})
    obs_python, _ = env.reset(seed=3, options={"task": 2})
    assert info["task_id"] == 2
    np.testing.assert_array_equal(obs_numpy, obs_python)
    for bad, match in [(-1, "seed must be an integer >= 0"), (1.0, "seed must be an integer")]:
        with pytest.raises(ValueError, match=match):
            env.reset(seed=bad)


def test_a_closed_env_refuses_step_and_reset_and_closes_twice(env):
    env.close()
    env.close()  # Gymnasium's contract: closing twice is allowed
    with pytest.raises(gym.error.ClosedEnvironmentError, match=r"step\(\) on a closed"):
        env.step(np.zeros(2))
    with pytest.raises(gym.error.ClosedEnvironmentError, match=r"reset\(\) on a closed"):
        env.reset()


def test_a_closed_mujoco_env_refuses_step():
    env = gym.make("qmp/MultistageReacher-v0", task=0)
    env.reset(seed=0)
    env.close()
    with pytest.raises(gym.error.ClosedEnvironmentError, match="build a new env"):
        env.step(np.zeros(6))


@pytest.mark.parametrize(
    ("num_envs", "match"),
    [(True, "a bool is not a number"), (2.0, "integer"), (0, ">= 1"), (6, "multiple of")],
)
def test_make_vec_refuses_bools_and_non_counts(num_envs, match):
    with pytest.raises(ValueError, match=match):
        gym.make_vec(MT4, num_envs=num_envs)


def test_make_vec_accepts_numpy_integer_counts():
    envs = gym.make_vec(MT4, num_envs=np.int64(8))
    assert envs.num_envs == 8
    envs.close()


def test_meta_world_with_no_tasks_is_refused():
    pytest.importorskip("metaworld")
    with pytest.raises(ValueError, match=r"tasks=\[\] names no task.*omit tasks"):
        gym.make("qmp/MetaWorldMT10-v0", tasks=[])


# -- the evaluation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tasks", "error", "match"),
    [
        ([], ValueError, r"tasks=\[\] evaluates nothing"),
        ([1, 1], ValueError, r"repeat \[1\].*would count twice"),
        ([0, 2, 0], ValueError, r"repeat \[0\]"),
        ([True], TypeError, "a bool is not a number"),
        ([0.0], TypeError, "tasks.0. must be an integer"),
        (7, TypeError, "sequence of task indices"),
    ],
)
def test_evaluation_refuses_empty_repeated_and_non_integer_tasks(tasks, error, match):
    with pytest.raises(error, match=match):
        evaluate_policy(zeros_policy, MT4, tasks=tasks, episodes_per_task=1)


def test_evaluation_accepts_numpy_task_indices_and_counts():
    result = evaluate_policy(
        zeros_policy, MT4, tasks=np.array([3, 1]), episodes_per_task=np.int64(1), seed=np.int64(2)
    )
    assert result.task_names == ["reach-bottom-left", "reach-top-right"]
    assert result.episodes_per_task == 1 and type(result.episodes_per_task) is int


@pytest.mark.parametrize(
    ("episodes", "match"),
    [(1.5, "got 1.5"), (0, "got 0"), (True, "a bool is not a number"), ("2", "got '2'")],
)
def test_evaluation_refuses_non_integer_episode_counts(episodes, match):
    with pytest.raises(ValueError, match=f"episodes_per_task must be an integer >= 1.*{match}"):
        evaluate_policy(zeros_policy, "qmp/PointReach-v0", episodes_per_task=episodes)


def test_evaluation_refuses_closed_envs():
    with EvaluationEnvs("qmp/PointReach-v0") as envs:
        evaluate_policy(zeros_policy, envs, episodes_per_task=1)
    with pytest.raises(ValueError, match=r"EvaluationEnvs were closed.*with block"):
        evaluate_policy(zeros_policy, envs, episodes_per_task=1)


@pytest.mark.parametrize(
    ("policy", "match"),
    [
        (lambda obs: 0.0, r"shape \(\), expected \(1, 2\).*one action row per observation"),
        (lambda obs: np.zeros(2), r"shape \(2,\), expected \(1, 2\)"),
        (lambda obs: np.zeros((1, 3)), r"shape \(1, 3\), expected \(1, 2\)"),
        (lambda obs: np.full((1, 2), np.nan), "NaN or inf"),
    ],
)
def test_evaluation_refuses_policies_that_return_no_action_rows(policy, match):
    with pytest.raises(ValueError, match=f"the policy's action array.*{match}"):
        evaluate_policy(policy, "qmp/PointReach-v0", episodes_per_task=1)


# -- the QMP wrapper -------------------------------------------------------------------------


def scripted_mt4():
    """Task policies propose task / 10; every task's Q prefers larger actions."""

    def policy(obs):
        return np.repeat(obs[:, -4:].argmax(1, keepdims=True) / 10.0, 2, axis=1)

    return policy, lambda obs, act: act.sum(1)


def test_wrapper_accepts_numpy_typed_options():
    env = QMPBehaviorWrapper(
        gym.make(MT4), mixture="softmax", temperature=np.float32(0.5), hold_steps=np.int64(2)
    )
    assert env.qmp.temperature == 0.5 and env.qmp.hold_steps == 2
    assert type(env.qmp.hold_steps) is int
    vec = VectorQMPBehaviorWrapper(gym.make_vec(MT4), num_tasks=np.int64(4), start_step=np.int32(3))
    assert vec.qmp.num_tasks == 4 and vec.qmp.start_step == 3


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"temperature": float("nan")}, "temperature must be a finite number > 0, got nan"),
        ({"temperature": True}, "temperature.*a bool is not a number"),
        ({"temperature": "1"}, "temperature must be a finite number"),
        ({"hold_steps": True}, "hold_steps.*a bool is not a number"),
        ({"hold_steps": np.float64(1.5)}, "hold_steps must be an integer >= 1"),
        ({"num_tasks": 0}, "num_tasks must be an integer >= 1"),
    ],
)
def test_wrapper_refuses_bad_option_values(options, match):
    with pytest.raises(ValueError, match=match):
        QMPBehaviorWrapper(gym.make(MT4), **options)


def test_wrapper_refuses_boolean_and_complex_actions_and_takes_tensors_with_grad():
    env = QMPBehaviorWrapper(gym.make(MT4, task=0))
    env.attach(*scripted_mt4())
    env.reset(seed=0)
    for bad, match in [(np.array([True, True]), "boolean"), (np.array([0j, 1j]), "complex")]:
        with pytest.raises(TypeError, match=f"the agent's action array is a {match}"):
            env.step(bad)
    info = env.step(torch.zeros(2, requires_grad=True))[4]
    assert info["qmp_action"].shape == (2,)


def test_wrapper_resets_with_numpy_integer_seeds_like_python_ones():
    env = QMPBehaviorWrapper(gym.make(MT4), mixture="uniform")
    env.attach(*scripted_mt4())
    first = env.reset(seed=np.int64(5))[0], env.step(np.zeros(2))[4]["qmp_policy"]
    again = env.reset(seed=5)[0], env.step(np.zeros(2))[4]["qmp_policy"]
    np.testing.assert_array_equal(first[0], again[0])
    assert first[1] == again[1]
    vec = VectorQMPBehaviorWrapper(gym.make_vec(MT4))
    obs_numpy = vec.reset(seed=np.int64(5))[0]
    obs_list = vec.reset(seed=[np.int64(5 + k) for k in range(4)])[0]
    np.testing.assert_array_equal(obs_numpy, vec.reset(seed=5)[0])
    np.testing.assert_array_equal(obs_list, obs_numpy)


def with_feature(value: float):
    """MT4 with its first feature replaced by ``value`` (a broken env or normaliser)."""

    def observe(obs):
        obs = obs.copy()
        obs[0] = value
        return obs

    inner = gym.make(MT4, task=1)
    return gym.wrappers.TransformObservation(inner, observe, inner.observation_space)


@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
def test_a_non_finite_observation_is_not_scored(value):
    env = QMPBehaviorWrapper(with_feature(value))
    env.attach(*scripted_mt4())
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"observation of env 0 \(task 1\) contains NaN or inf"):
        env.step(np.zeros(2))


def test_a_non_finite_observation_passes_through_while_qmp_is_off():
    env = QMPBehaviorWrapper(with_feature(np.inf))
    env.attach(*scripted_mt4())
    env.reset(seed=0)
    with env.sharing_off():
        assert env.step(np.zeros(2))[4]["qmp_policy"] == 1  # nothing scored: the own action


@pytest.mark.parametrize(
    "extra",
    [
        lambda obs: np.full((len(obs), 2), 1.7),
        lambda obs: (np.zeros((len(obs), 2)), np.full((len(obs), 2), -3.0)),
    ],
)
def test_an_extra_policy_proposing_outside_the_action_space_is_refused(extra):
    env = QMPBehaviorWrapper(
        gym.make(MT4, task=0), extra_policies=[extra], extra_policy_names=["x"]
    )
    env.attach(*scripted_mt4())  # attaching does not call the extra policy (its stream is kept)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="extra policy 'x''s (sampled|mean) action lies outside"):
        env.step(np.zeros(2))


def test_an_extra_policy_inside_the_action_space_is_mixed():
    env = QMPBehaviorWrapper(
        gym.make(MT4, task=0), extra_policies=[lambda obs: np.ones((len(obs), 2))]
    )
    env.attach(*scripted_mt4())
    env.reset(seed=0)
    assert env.step(np.zeros(2))[4]["qmp_policy"] == 4  # the extra proposes the largest


# -- the replay buffers ----------------------------------------------------------------------

OBS_SPACE = gym.spaces.Box(-1.0, 1.0, (6,), np.float32)
ACT_SPACE = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)


def add(buffer, infos, n=2):
    obs = np.zeros((n, 6), np.float32)
    buffer.add(obs, obs, np.zeros((n, 2)), np.zeros(n), np.zeros(n), infos)


@pytest.mark.parametrize(
    ("infos", "error", "match"),
    [
        ({"qmp_action": np.array([[np.nan, 0], [0, 0]])}, ValueError, "contains NaN or inf"),
        ({"qmp_action": np.arange(4.0)}, ValueError, r"shape \(4,\), expected \(2, 2\)"),
        ({"qmp_action": np.zeros((4, 1))}, ValueError, r"shape \(4, 1\), expected \(2, 2\)"),
        ({"qmp_action": np.zeros((2, 3))}, ValueError, r"shape \(2, 3\), expected \(2, 2\)"),
        ([{"qmp_action": np.zeros((1, 2))}] * 2, ValueError, r"shape \(1, 2\), expected \(2,\)"),
        ([{"qmp_action": [0.0, np.inf]}] * 2, ValueError, r"infos\[0\]\['qmp_action'\].*inf"),
        (None, TypeError, "infos must be the step's infos.*got NoneType"),
        ("qmp_action", TypeError, "got str"),
        ([None, None], KeyError, "QMPBehaviorWrapper"),
    ],
)
def test_buffer_add_refuses_bad_executed_actions_instead_of_reshaping(infos, error, match):
    buffer = MultiTaskReplayBuffer(10, OBS_SPACE, ACT_SPACE, num_tasks=2)
    with pytest.raises(error, match=match):
        add(buffer, infos)
    assert buffer.pos == 0  # nothing was stored


def test_buffer_add_stores_good_rows_of_either_layout():
    buffer = MultiTaskReplayBuffer(10, OBS_SPACE, ACT_SPACE, num_tasks=2)
    add(buffer, {"qmp_action": np.array([[0.5, -0.5], [0.25, 0.0]], np.float32)})
    add(buffer, [{"qmp_action": np.array([0.1, 0.2])}, {"qmp_action": np.array([0.3, 0.4])}])
    stored = buffer.actions[:2].reshape(2, 4)
    np.testing.assert_allclose(stored, [[0.5, -0.5, 0.25, 0], [0.1, 0.2, 0.3, 0.4]])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"buffer_size": 0}, r"buffer_size \(per task\) must be an integer >= 1, got 0"),
        ({"buffer_size": True}, "a bool is not a number"),
        ({"buffer_size": 2.5}, "got 2.5"),
        ({"num_tasks": 0}, "num_tasks must be an integer >= 1"),
    ],
)
def test_multitask_buffer_refuses_empty_capacities(kwargs, match):
    arguments = {"buffer_size": 10, "num_tasks": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        MultiTaskReplayBuffer(
            arguments["buffer_size"], OBS_SPACE, ACT_SPACE, num_tasks=arguments["num_tasks"]
        )


def test_qmp_buffer_refuses_a_capacity_below_one_row_per_env():
    with pytest.raises(ValueError, match="buffer_size must be an integer >= 2, got 1"):
        QMPReplayBuffer(1, OBS_SPACE, ACT_SPACE, n_envs=2)
    assert QMPReplayBuffer(np.int64(4), OBS_SPACE, ACT_SPACE, n_envs=2).buffer_size == 2


@pytest.mark.parametrize("batch_size", [0, -3, 1.5, True])
def test_sampling_refuses_empty_and_non_integer_batches(batch_size):
    buffer = MultiTaskReplayBuffer(10, OBS_SPACE, ACT_SPACE, num_tasks=2)
    add(buffer, {"qmp_action": np.zeros((2, 2))})
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        buffer.sample_tasks(batch_size)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        buffer.sample_other_tasks(batch_size)
    assert buffer.sample_tasks(np.int64(3)).actions.shape == (2, 3, 2)


# -- the scripts' flag validation ------------------------------------------------------------


def preset_args(env_id: str = "qmp/MultistageReacher-v0", **flags):
    from qmp_harness.config import resolve_preset

    args = resolve_preset(sac_qmp.Args(env_id=env_id))
    for name, value in flags.items():
        setattr(args, name, value)
    return args


@pytest.mark.parametrize("seed", [-1, SEED_MAX + 1, 2**40])
def test_seeds_outside_numpys_range_are_refused(seed):
    problems = base_problems(preset_args(seed=seed))
    assert problems == [f"--seed {seed}: must be in [0, 4294967295] (2**32 - 1, the range "
                        "NumPy's seeding takes)"]  # fmt: skip


def test_seeds_at_the_ends_of_the_range_are_accepted():
    assert base_problems(preset_args(seed=0)) == []
    assert base_problems(preset_args(seed=SEED_MAX)) == []


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--seed", "-1"], "--seed -1: must be in [0, 4294967295]"),
        (["--seed", "4294967296"], "--seed 4294967296: must be in [0, 4294967295]"),
        (["--batch-size", str(10**12)], f"--batch-size {10**12}: the run would need about"),
        (["--hidden", str(10**9)], f"--hidden ({10**9},): the run would need about"),
        (["--eval-episodes", str(10**9)], f"--eval-episodes {10**9}: the run would need about"),
    ],
)
def test_out_of_range_seeds_and_runs_too_large_are_refused_before_the_run_folder(
    argv, named, tmp_path, capsys
):
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        sac_qmp.main(parse_command_line(sac_qmp.Args, [*argv, "--run-dir", str(run_dir)]))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid configuration" in err and named in err
    assert "_legacy_seeding" not in err and "Traceback" not in err
    assert not run_dir.exists()


def test_a_refusal_names_the_estimate_its_parts_and_the_machine():
    tiny = MachineMemory(total=2**30, available=2**29)
    (problem,) = memory_problems(preset_args("qmp/MetaWorldMT10-v0"), tiny)
    assert problem.startswith("--buffer-size 1000000: the run would need about 5.")
    assert "replay buffer 3.9 GiB" in problem and "networks" in problem
    assert "this machine's 1.0 GiB (RAM + swap; 512.0 MiB available now)" in problem
    assert problem.endswith("lower --buffer-size or --total-timesteps")


@pytest.mark.parametrize("env_id", sorted(PRESETS))
def test_every_preset_fits_a_64_gib_machine(env_id):
    """The largest preset (Meta-World MT50: 50 tasks x 1M transitions, 34.5 GiB of replay at
    its 200M-step budget) fits a 64 GiB machine; the smaller ones fit 8 GiB."""
    args = preset_args(env_id)
    machine = MachineMemory(total=64 * 2**30, available=0)  # available memory is not compared
    assert memory_problems(args, machine) == []
    if env_id != "qmp/MetaWorldMT50-v0":
        assert estimate_run_memory(args).total < 8 * 2**30


def test_the_replay_estimate_is_capped_by_the_budget():
    short = estimate_run_memory(preset_args("qmp/MetaWorldMT50-v0", total_timesteps=20_000))
    assert short.replay_buffer == 4 * 50 * 401 * (2 * 89 + 4 + 3)  # 20k / 50 tasks + 1 rows
    assert memory_problems(preset_args("qmp/MetaWorldMT50-v0", total_timesteps=20_000)) == []


def test_machine_memory_reads_meminfo_and_falls_back_to_sysconf(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(
        "MemTotal: 1024 kB\nMemFree: 10 kB\nMemAvailable: 512 kB\nSwapTotal: 1024 kB\n"
    )
    assert machine_memory(meminfo) == MachineMemory(total=2 * 2**20, available=2**19)
    fallback = machine_memory(tmp_path / "missing")
    assert fallback.total > 0 and fallback.available > 0


@pytest.mark.parametrize(
    ("script", "flags", "message"),
    [
        ("uds_qmp", {"env_id": "qmp/PointReach-v1"}, "data sharing needs at least two"),
        ("sac_qmp", {"qmp_helpers": ("up",)}, "6-D actions: drop --qmp-helpers"),
    ],
)
def test_scripts_refuse_what_their_env_cannot_do_before_training(script, flags, message):
    """Checked with the flags (before any folder exists), not as a traceback from inside."""
    import importlib

    from qmp_harness.config import resolve_preset

    module = importlib.import_module(f"cleanrl_qmp.{script}")
    args = resolve_preset(module.Args(**flags))
    assert any(message in problem for problem in args.problems())
