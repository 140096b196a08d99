"""Render the first frame of every task of every ``qmp/`` suite to a small PNG for the docs.

    MUJOCO_GL=egl python docs/render_tasks.py                 # every suite, into docs/_static/tasks
    MUJOCO_GL=egl python docs/render_tasks.py --suites qmp/MazeLarge10-v0

Each picture is our own env, ``gym.make(id, task=k, render_mode="rgb_array")``, after
``reset(seed=0)`` (Meta-World suites: the evaluation split's first goal), so a suite page shows
what an agent starts from. Meta-World MT50 renders a subset (every fifth task in one-hot order);
the suite page says so. Files are named ``<suite>/<task index>_<task name>.png`` and written to
a temporary file, then renamed. The docs build only reads the committed PNGs; rerun this script
after changing a suite's model or reset.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import mujoco
import numpy as np
from PIL import Image

import qmp_envs

OUT = Path(__file__).resolve().parent / "_static" / "tasks"
SIZE = 240  # pixels per side: small files, still legible on a suite page
MT50_EVERY = 5  # MT50 pictures: tasks 0, 5, 10, ... (10 of 50)
# Rendered at twice the size, then downscaled (smoother edges). PointReach draws its own frame.
SIZED = {"width": SIZE * 2, "height": SIZE * 2}
# Meta-World's default camera looks up at the table from below; "corner3" shows the objects.
MAKE_KWARGS = {
    "qmp/MetaWorldCDS-v0": {"camera_name": "corner3"},
    "qmp/MetaWorldMT10-v0": {"camera_name": "corner3"},
    "qmp/MetaWorldMT50-v0": {"camera_name": "corner3"},
}


@dataclass(frozen=True)
class FreeCamera:
    """A MuJoCo free camera for suites whose default view is far away (Reacher, Kitchen)."""

    lookat: tuple[float, float, float]
    distance: float
    azimuth: float
    elevation: float

    def build(self, model: mujoco.MjModel) -> mujoco.MjvCamera:
        camera = mujoco.MjvCamera()
        mujoco.mjv_defaultFreeCamera(model, camera)
        camera.lookat[:] = self.lookat
        camera.distance, camera.azimuth, camera.elevation = (
            self.distance,
            self.azimuth,
            self.elevation,
        )
        return camera


FREE_CAMERAS = {
    "qmp/MultistageReacher-v0": FreeCamera((0.0, 0.0, 0.3), 1.6, 150.0, -25.0),
    "qmp/KitchenMTEasy-v0": FreeCamera((-0.3, 0.7, 2.1), 3.3, 70.0, -35.0),
}
# Suites drawn inside a plain background (the maze's top camera): the border is cut off.
TRIMMED = {"qmp/MazeLarge10-v0"}


def suite_folder(env_id: str) -> str:
    """``qmp/MazeLarge10-v0`` -> ``MazeLarge10-v0``: one folder per suite."""
    return env_id.split("/", 1)[1]


def rendered_tasks(env_id: str) -> list[int]:
    """The task indices a suite page shows: all of them, except MT50's subset."""
    num_tasks = qmp_envs.suite_facts(env_id).num_tasks
    if env_id == "qmp/MetaWorldMT50-v0":
        return list(range(0, num_tasks, MT50_EVERY))
    return list(range(num_tasks))


def task_picture_path(env_id: str, task: int) -> Path:
    """Where the picture of ``task`` of ``env_id`` lives (relative to ``docs/_static/tasks``)."""
    name = qmp_envs.suite_facts(env_id).task_names[task]
    return Path(suite_folder(env_id)) / f"{task:02d}_{name}.png"


def render_first_frame(env_id: str, task: int) -> np.ndarray:
    """The frame after ``reset(seed=0)`` of task ``task``, as an RGB array."""
    kwargs: dict = {"split": "eval"} if qmp_envs.suite_facts(env_id).has_eval_split else {}
    kwargs.update(MAKE_KWARGS.get(env_id, {}))
    if not env_id.startswith("qmp/PointReach"):  # PointReach draws its own 200 x 200 frame
        kwargs.update(SIZED)
    env = gym.make(env_id, task=task, render_mode="rgb_array", **kwargs)
    try:
        env.reset(seed=0)
        if env_id in FREE_CAMERAS:
            env.unwrapped.camera = FREE_CAMERAS[env_id].build(env.unwrapped.model)
        frame = env.render()
    finally:
        env.close()
    if frame is None:
        raise RuntimeError(f"{env_id} task {task} rendered nothing (is MUJOCO_GL=egl set?)")
    frame = np.asarray(frame)
    return trim_background(frame) if env_id in TRIMMED else frame


def trim_background(frame: np.ndarray, tolerance: int = 10) -> np.ndarray:
    """Cut the rows and columns at the border that are all the corner pixel's colour."""
    differs = np.abs(frame.astype(int) - frame[0, 0].astype(int)).max(axis=2) > tolerance
    rows, cols = np.flatnonzero(differs.any(axis=1)), np.flatnonzero(differs.any(axis=0))
    return frame[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def save_png(frame: np.ndarray, path: Path) -> None:
    """Downscale to SIZE pixels wide (aspect kept) and write ``path`` through a temporary file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    height = round(SIZE * frame.shape[0] / frame.shape[1])
    image = Image.fromarray(frame).resize((SIZE, height), Image.Resampling.LANCZOS)
    # A 256-colour palette halves the files (about 20 kB each) with no visible loss at this size.
    image = image.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    tmp = path.with_name(path.name + ".tmp")
    image.save(tmp, format="PNG", optimize=True)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suites", nargs="+", default=list(qmp_envs.SUITES), metavar="ID")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    unknown = [s for s in args.suites if s not in qmp_envs.SUITES]
    if unknown:
        parser.error(f"unknown suite ids {unknown}; known: {', '.join(qmp_envs.SUITES)}")
    for env_id in args.suites:
        for task in rendered_tasks(env_id):
            path = args.out / task_picture_path(env_id, task)
            save_png(render_first_frame(env_id, task), path)
            print(f"{env_id} task {task}: {path}")


if __name__ == "__main__":
    main()
