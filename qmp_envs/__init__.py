"""Multi-task Gymnasium environments of the QMP paper, registered under ``qmp/``.

>>> import gymnasium as gym, qmp_envs
>>> sorted(qmp_envs.SUITES)[:2]
['qmp/MazeLarge10-v0', 'qmp/MultistageReacher-v0']
"""

from qmp_envs.evaluation import EvalResult, evaluate_policy
from qmp_envs.multitask import MujocoMultiTaskEnv, MultiTaskEnv
from qmp_envs.point_reach import FixedDirectionPolicy, helper_policies
from qmp_envs.registration import SUITES, make_task_vector_env, register_suites

register_suites()

__all__ = [
    "SUITES",
    "EvalResult",
    "FixedDirectionPolicy",
    "MujocoMultiTaskEnv",
    "MultiTaskEnv",
    "evaluate_policy",
    "helper_policies",
    "make_task_vector_env",
    "register_suites",
]
