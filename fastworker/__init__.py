"""fastworker: run @task functions on forked worker processes of one host,
through a shared-memory priority ring."""

from .client import Client
from .context import TaskContext, current_task
from .executor import BrokenExecutor, Executor, RemoteTraceback
from .errors import (
    ClientClosedError,
    ConfigError,
    ControlPlaneUnavailable,
    DuplicateTaskError,
    FastWorkerError,
    PayloadTooLargeError,
    SegmentError,
    SerializationError,
    SharedMemoryFullError,
    TaskCancelledError,
    TaskFailedError,
    TaskModuleImportError,
    TaskNotFoundError,
    TaskTimeoutError,
    UnknownTaskError,
    WorkerLostError,
)
from .tasks.models import SerializationFormat, TaskPriority, TaskResult, TaskStatus
from .tasks.registry import load_task_modules, task

__version__ = "0.1.0"

__all__ = [
    "BrokenExecutor",
    "Client",
    "ClientClosedError",
    "ConfigError",
    "ControlPlaneUnavailable",
    "DuplicateTaskError",
    "Executor",
    "FastWorkerError",
    "PayloadTooLargeError",
    "RemoteTraceback",
    "SegmentError",
    "SerializationError",
    "SerializationFormat",
    "SharedMemoryFullError",
    "TaskCancelledError",
    "TaskContext",
    "TaskFailedError",
    "TaskModuleImportError",
    "TaskNotFoundError",
    "TaskPriority",
    "TaskResult",
    "TaskStatus",
    "TaskTimeoutError",
    "UnknownTaskError",
    "WorkerLostError",
    "__version__",
    "current_task",
    "load_task_modules",
    "task",
]
