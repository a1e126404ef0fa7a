"""The processes of one job under `accelerate launch --num_processes N` (or `torchrun`): who is the main process,
which share of the work is this process's, and steps that the main process alone runs for all.

`hf-kd score` and `hf-kd index` share their shards this way: the main process takes the output lock and opens the
work folder, the shards left to do are dealt out in turn, each process writes its own, and the main process alone
assembles the result once every process is done.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Callable

import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list, gather_object, get_int_from_env, parse_flag_from_env

__all__ = ["JobProcesses", "end_job_processes", "job_processes", "lock_job_output"]

_WORLD_SIZE_VARIABLES = ["WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"]
_LONGEST_WAIT = datetime.timedelta(hours=2)  # a process with no shard left waits for the others', then the merge


def job_processes(device: str | torch.device | None = None) -> PartialState | None:
    """The `accelerate` state of the processes that share a job, or `None` for a process that works alone.

    Under `accelerate launch --num_processes N` (or `torchrun`), the N processes run on GPUs, one each, or on CPUs
    (gloo) when `ACCELERATE_USE_CPU` is set, when `device` is a CPU or when there is no CUDA device. A process
    started alone leaves the `accelerate` state untouched, so that a later `Accelerator` or `Trainer` in the same
    process is free to set it. Every process must run the whole job: they wait for each other.

    Args:
        device (`str` or `torch.device`, *optional*): where the models run; a CPU keeps the processes on CPUs.
    """
    if get_int_from_env(_WORLD_SIZE_VARIABLES, 1) < 2:
        return None
    cpu = parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available()
    cpu = cpu or (device is not None and torch.device(device).type == "cpu")
    return PartialState(cpu=cpu, timeout=_LONGEST_WAIT)


def end_job_processes() -> None:
    """Closes the process group of a job's processes, if one was opened; each process calls it once its work is done.

    A process that exits with its gloo process group still open may abort at interpreter shutdown ("terminate called
    without an active exception") after all its work is written, failing a run that succeeded.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


class JobProcesses:
    """This process's place among the processes that share a job (see [`job_processes`])."""

    def __init__(self, state: PartialState | None):
        self.rank = state.process_index if state else 0
        self.count = state.num_processes if state else 1
        self.is_main = self.rank == 0
        self.device = state.device if state and self.count > 1 else None

    def share(self, items: list) -> list:
        """This process's share of `items`: every `count`-th one, from its rank on."""
        return items[self.rank :: self.count]

    def gather(self, value) -> list:
        """The `value` of every process, by rank."""
        return gather_object([value]) if self.count > 1 else [value]

    def from_main(self, step: Callable[[], object]):
        """Runs `step` on the main process alone and returns its result in every process; an error of the main
        process is raised there, and stops the other processes with its message."""
        if self.count == 1:
            return step()
        result, error = None, None
        if self.is_main:
            try:
                result = step()
            except Exception as exception:  # handed to the other processes first, so that none waits for ever
                error = exception
        outcome = broadcast_object_list([result, None if error is None else f"{type(error).__name__}: {error}"])
        if error is not None:
            raise error
        if outcome[1] is not None:
            raise RuntimeError(f"process {self.rank} stopped: the main process failed ({outcome[1]})")
        return outcome[0]


def lock_job_output(lock: contextlib.ExitStack, out: str | os.PathLike, overwrite: bool) -> None:
    """Takes the lock of the output folder `out` into `lock` (the main process, before any work): refuses an
    existing non-empty `out` without `overwrite`, before and again after waiting for the lock (another job may have
    finished it meanwhile)."""
    from .data.writers import check_output_folder
    from .jobs import output_lock

    check_output_folder(out, overwrite)
    lock.enter_context(output_lock(out))
    check_output_folder(out, overwrite)
