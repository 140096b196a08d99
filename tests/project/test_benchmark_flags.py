"""The benchmarks (and the SB3 example) refuse a bad flag in one line (exit 2) before any
work, as the training scripts do.

Each used to fail late and deep: ``--steps 0`` as a ZeroDivisionError after the timed run,
``--seeds 0`` after timing every suite, an unknown id as a Gymnasium traceback.
"""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

import pytest

from qmp_harness.cli_types import at_least, positive_real, qmp_env_id

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks"

REFUSED = [
    ("checkpoint_size.py", ["--steps", "0"], "--steps: must be an integer >= 1, got '0'"),
    ("checkpoint_size.py", ["--env-ids", "qmp/Nope-v0"], "'qmp/Nope-v0' is not a qmp suite"),
    ("env_speed.py", ["--seconds", "-1"], "--seconds: must be a finite number > 0"),
    ("env_speed.py", ["--ids", "Reacher-v5"], "--ids: 'Reacher-v5' is not a qmp suite"),
    ("evaluation_speed.py", ["--episodes", "0"], "--episodes: must be an integer >= 1"),
    ("float_profile_speed.py", ["--steps", "-5"], "--steps: must be an integer >= 1"),
    ("float_profile_speed.py", ["--repeats", "0"], "--repeats: must be an integer >= 1"),
    ("metaworld_goal_alignment.py", ["--env-id", "qmp/MultistageReacher-v0"], "invalid choice"),
    ("mt50_pipeline.py", ["--root", "unused", "--seed", "-1"], "--seed: must be an integer >= 0"),
    ("qswitch_speed.py", ["--tasks", "5", "0"], "--tasks: must be an integer >= 1, got '0'"),
    ("qswitch_speed.py", ["--repeats", "0"], "--repeats: must be an integer >= 1"),
    ("roofline.py", ["--steps", "0"], "--steps: must be an integer >= 1"),
    ("roofline.py", ["--env-ids", "qmp/Nope-v0"], "'qmp/Nope-v0' is not a qmp suite"),
    ("script_speed.py", ["--learning-starts", "0.5"], "--learning-starts: must be an integer"),
    ("suite_throughput.py", ["--seeds", "0"], "--seeds: must be an integer >= 1"),
    ("sweep_overhead.py", ["--repeats", "nan"], "--repeats: must be an integer >= 1"),
    ("../examples/sb3_sac_qmp.py", ["--total-timesteps", "0"], "--total-timesteps: must be"),
    ("../examples/sb3_sac_qmp.py", ["--env-id", "qmp/Nope-v0"], "is not a qmp suite"),
    ("../examples/sb3_sac_qmp.py", ["--seed", "-3"], "--seed: must be an integer >= 0"),
]


@pytest.mark.parametrize(("script", "flags", "message"), REFUSED, ids=lambda v: str(v))
def test_a_bad_flag_is_one_line_before_any_work(script, flags, message, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [script, *flags])
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(BENCHMARKS / script), run_name="__main__")
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert capsys.readouterr().out == ""  # nothing was measured


def test_every_benchmark_with_a_count_flag_checks_it():
    """A new benchmark's counts go through cli_types too: no bare ``type=int`` or ``type=float``
    except where the script checks the value itself (mt50_pipeline's multiple of 100)."""
    unchecked = [
        f"{path.name}:{n}"
        for path in sorted(BENCHMARKS.glob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if ("type=int" in line or "type=float" in line) and "--total-timesteps" not in line
    ]
    assert unchecked == []


def test_the_types_accept_what_they_should():
    assert (
        at_least(0)("0") == 0 and at_least(1)("1e4") == 10_000 and at_least(1)("10_000") == 10_000
    )
    assert positive_real("0.5") == 0.5
    assert qmp_env_id("qmp/MultistageReacher-v0") == "qmp/MultistageReacher-v0"
    for parse, text in [
        (at_least(1), "2.5"),
        (at_least(1), "ten"),
        (at_least(1), "inf"),
        (positive_real, "0"),
        (positive_real, "inf"),
        (positive_real, "nan"),
        (qmp_env_id, "MultistageReacher-v0"),
    ]:
        with pytest.raises(argparse.ArgumentTypeError):
            parse(text)
