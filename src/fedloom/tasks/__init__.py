"""Training tasks: one file per task, one registry (``TASKS``). See :mod:`fedloom.tasks.base`."""

import fedloom.tasks.classify  # noqa: F401  (registers)
import fedloom.tasks.dpo  # noqa: F401  (registers)
import fedloom.tasks.sft  # noqa: F401  (registers)
from fedloom.tasks.base import (
    TASKS,
    EvalSetup,
    Evaluator,
    Task,
    TaskError,
    get_task,
    register_task,
)

__all__ = ["TASKS", "EvalSetup", "Evaluator", "Task", "TaskError", "get_task", "register_task"]
