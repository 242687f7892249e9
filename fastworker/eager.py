"""Eager mode (``Client(eager=True)`` / ``FASTWORKER_EAGER=1``): tasks run
inline in the caller, for users' tests.

Each run goes through the same codec both ways, so an argument or a result
that could not cross to a worker fails here too, and a failure becomes the
same ``TaskResult`` a worker's would.  Not enforced inline: hard timeouts
(nothing to kill) and countdown/eta (a test does not wait for them: the task
runs at once).
"""

from __future__ import annotations

import time
import traceback
from typing import Any

from . import context
from .engine.records import FAILURE, SUCCESS
from .tasks.models import TaskStatus
from .tasks.registry import TaskDefinition
from .tasks.serialization import Codec, encode_failure

# Stands for the shared segment of a started eager Client: there is none.
NO_SEGMENT: Any = object()


async def run(
    defn: TaskDefinition, codec: Codec, payload: bytes, flags: int, task_id: str, attempt: int, lane: int
) -> tuple[TaskStatus, bytes, int, int]:
    """(status, the encoded result or failure, t_start ns, t_end ns) of one run."""
    t_start = time.time_ns()
    context.enter(lambda client, tag: task_id, 0, 0, defn.name, attempt, lane)
    try:
        args, kwargs = codec.decode_args(payload, flags)
        if defn.policy.before is not None:
            defn.policy.before(context.current_task())
        value = defn.func(*args, **kwargs)
        if defn.is_async:
            value = await value
        if defn.policy.after is not None:
            defn.policy.after(context.current_task(), value, None)
        out, status = codec.encode_result(defn.name, value), SUCCESS
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - the caller gets it as the task's failure, as from a worker
        out, status = encode_failure(exc, "".join(traceback.format_exception(exc))), FAILURE
    finally:
        context.leave()
    return status, out, t_start, time.time_ns()
