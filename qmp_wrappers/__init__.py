"""QMP behaviour sharing as Gymnasium wrappers, plus adapters for agents and other APIs.

``qmp_wrappers.QMPBehaviorWrapper`` wraps one env; ``qmp_wrappers.vector.QMPBehaviorWrapper``
a vector env (Gymnasium's naming). Both share one Q-switch (``qmp_wrappers.switch``).
"""

from qmp_wrappers import vector
from qmp_wrappers.attach import Policy, QFunction
from qmp_wrappers.behavior import QMPBehaviorWrapper
from qmp_wrappers.buffers import MultiTaskReplayBuffer, QMPReplayBuffer, executed_actions
from qmp_wrappers.vector import find_qmp_wrapper

__all__ = [
    "MultiTaskReplayBuffer",
    "Policy",
    "QFunction",
    "QMPBehaviorWrapper",
    "QMPReplayBuffer",
    "executed_actions",
    "find_qmp_wrapper",
    "vector",
]
