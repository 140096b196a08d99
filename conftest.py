"""Headless rendering for every test run, however pytest is invoked (MuJoCo reads MUJOCO_GL
when it first creates a GL context)."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
