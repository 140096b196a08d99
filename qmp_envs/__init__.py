"""Multi-task Gymnasium environments of the QMP paper, registered under ``qmp/``.

>>> import gymnasium as gym, qmp_envs
>>> env = gym.make("qmp/MultistageReacher-v0")
>>> env.unwrapped.num_tasks, qmp_envs.SUITES["qmp/MetaWorldMT50-v0"].num_tasks
(5, 50)
"""

from qmp_envs.evaluation import EvalResult, EvaluationEnvs, evaluate_policy
from qmp_envs.multitask import MujocoMultiTaskEnv, MultiTaskEnv
from qmp_envs.point_reach import FixedDirectionPolicy, helper_policies
from qmp_envs.registration import make_task_vector_env, register_suites
from qmp_envs.suites import SUITES, SuiteFacts, suite_facts

register_suites()

__all__ = [
    "SUITES",
    "SuiteFacts",
    "EvalResult",
    "EvaluationEnvs",
    "FixedDirectionPolicy",
    "MujocoMultiTaskEnv",
    "MultiTaskEnv",
    "evaluate_policy",
    "helper_policies",
    "make_task_vector_env",
    "register_suites",
    "suite_facts",
]
