"""The async wave loop: select pairs, ask the judge, store every answer, refit, decide.

The executor owns the budget and the retries. Every call is stored as ``sent`` before it
goes out and its answer as soon as it arrives (:class:`~cj_runner.storage.recorder.Recorder`),
so a crash loses at most the calls in flight. The in-memory state is rebuilt from the
stored attempts when a run starts, so a new batch and a resumed one take the same path.
Nothing here prints: progress goes out through a callback.

Resuming (after a crash, a kill or Ctrl-C):

* Calls stored as ``sent`` without an answer become ``lost``: they count against the
  budget (they may have been billed) and are asked again while budget remains. A lost
  call is not a judge error: it does not use up one of ``MAX_ATTEMPTS_PER_COMPARISON``,
  and the call that replaces it carries the same attempt number to the judge, so a
  deterministic judge gives the answer the lost call would have given.
* The wave that was under way (its comparisons are stored as ``planned`` before the
  first call) is finished first: its unanswered comparisons are asked, then the wave is
  closed as an uninterrupted run would have closed it. Wave ``k`` draws its pairs from
  ``default_rng([seed, k])`` and the fit adds comparisons in slot order, so a resumed
  batch asks the same pairs as an uninterrupted one.
* One process at a time: a lock on the batch row with a heartbeat. It is taken over
  when its process is gone (same host, pid not running) or its heartbeat is stale; every
  write of a run checks that it still holds the lock.

The package, by responsibility:

* ``run_loop``: :class:`BatchExecutor`, the lock and heartbeat, the wave loop;
* ``state``: what a run holds, progress events, the run's result;
* ``budget``: the budget in slot order and the send window;
* ``resume``: the lock owner check and the rebuild from the stored attempts;
* ``dispatch``: calls out (tasks or provider jobs), releases in send order, results in;
* ``waves``: planning ahead, opening, closing waves (and a panel's planned judges);
* ``endings``: finalized, interrupted, finalized early.
"""

from cj_runner.services.executor.budget import SlotOrderBudget, pipeline_depth, send_window
from cj_runner.services.executor.dispatch import UNREACHABLE_AFTER
from cj_runner.services.executor.resume import lock_owner_alive
from cj_runner.services.executor.run_loop import BatchExecutor
from cj_runner.services.executor.state import (
    FINAL_STATUSES,
    FINISHED_BATCH_STATUSES,
    GROUP_COMMIT_WINDOW_S,
    HEARTBEAT_S,
    INTERRUPT_GRACE_S,
    ProgressCallback,
    ProgressEvent,
    RunResult,
)

__all__ = [
    "FINAL_STATUSES",
    "FINISHED_BATCH_STATUSES",
    "GROUP_COMMIT_WINDOW_S",
    "HEARTBEAT_S",
    "INTERRUPT_GRACE_S",
    "UNREACHABLE_AFTER",
    "BatchExecutor",
    "ProgressCallback",
    "ProgressEvent",
    "RunResult",
    "SlotOrderBudget",
    "lock_owner_alive",
    "pipeline_depth",
    "send_window",
]
