"""QMP behaviour sharing as a Gymnasium wrapper, plus adapters for agents and other APIs."""

from qmp_wrappers.behavior import (
    QMPBehaviorWrapper,
    QMPEnvBehaviorWrapper,
    QMPVectorBehaviorWrapper,
)
from qmp_wrappers.buffers import MultiTaskReplayBuffer, QMPReplayBuffer, executed_actions

__all__ = [
    "MultiTaskReplayBuffer",
    "QMPBehaviorWrapper",
    "QMPEnvBehaviorWrapper",
    "QMPReplayBuffer",
    "QMPVectorBehaviorWrapper",
    "executed_actions",
]
