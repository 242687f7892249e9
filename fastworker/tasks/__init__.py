"""Task definition: the ``@task`` decorator, the registry, and the public models.

Serialization lives in :mod:`fastworker.tasks.serialization` and is imported by the engine, not
here, so that defining tasks does not depend on the codec.
"""

from fastworker.tasks.models import (
    SerializationFormat,
    TaskPriority,
    TaskResult,
    TaskStatus,
    utc_now,
)
from fastworker.tasks.registry import (
    TaskDefinition,
    TaskRegistry,
    get_task,
    load_task_modules,
    registry,
    task,
)

__all__ = [
    "SerializationFormat",
    "TaskDefinition",
    "TaskPriority",
    "TaskRegistry",
    "TaskResult",
    "TaskStatus",
    "get_task",
    "load_task_modules",
    "registry",
    "task",
    "utc_now",
]
