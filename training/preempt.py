"""
training/preempt.py: stopping a run in time. The cluster's warning before it kills a job, caught. SLURM sends
SIGTERM on scancel and preemption, and the signal of --signal=USR1@120 that long before its time
limit; torchrun forwards SIGTERM to every rank. train.py calls install() once; after each optimizer
step its loop asks stop_flags(), and on a signal it writes ckpt_last and exits with EXIT_CODE, so a
requeued job resumes (init_from='auto') where this one stopped.

The handler only records the signal: the step in flight finishes (no half-applied update, no
collective left waiting), and the loop decides at a point where every rank is.

A time box (max_time_minutes) stops the loop too. On a machine slower than the one a recipe was sized
on, that would cut the learning-rate schedule short, mid-cosine; with fit_to_time, train.py asks
fit_iters() after a few measured steps for the number of steps that will fit, and shortens the run.
"""

import signal

import torch
import torch.distributed as dist

EXIT_CODE = 75  # sysexits' EX_TEMPFAIL, "try again later": checkpoint written, requeue the job
SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
_received = []


def _record(signum, frame):
    _received.append(signum)


def install():
    """Catch SIGTERM and SIGUSR1 (DataLoader workers forked later inherit this: they keep working
    until the main process stops them, instead of dying under its feet mid-step)."""
    for s in SIGNALS:
        signal.signal(s, _record)


def received():
    """The name of the first signal caught ('SIGTERM', 'SIGUSR1'), or None."""
    return signal.Signals(_received[0]).name if _received else None


def report(iter_num, out_dir):
    """The one line a preempted run prints last."""
    return (f"{received()}: saved {out_dir}/ckpt_last at iter {iter_num} and stopped; resume with "
            f"--init_from=resume (or auto); exit code {EXIT_CODE}")


def stop_flags(time_up, device, ddp):
    """(time_up, signalled) as rank 0 sees them, on every rank: rank 0 decides and broadcasts it, so
    all ranks leave the loop at the same iteration and none hangs in a collective. Single process:
    no tensor, no sync."""
    time_up, signalled = _rank0([time_up, received() is not None], device, ddp)
    return bool(time_up), bool(signalled)


def _rank0(values, device, ddp):
    """Rank 0's numbers on every rank (one broadcast); single process: the numbers as they are."""
    if not ddp:
        return values
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.broadcast(t, 0)
    return t.tolist()


def fit_iters(iter_num, max_iters, step_s, eval_s, eval_interval, seconds_left, device='cpu', ddp=False,
              spare=0.05):
    """max_iters, or fewer: the last iteration reachable in seconds_left (less `spare` of it) at step_s
    seconds a step, plus an eval of eval_s seconds every eval_interval steps and one at the end.
    Rank 0's answer on every rank: the ranks' clocks differ a little, their schedules must not."""
    budget = (1 - spare) * seconds_left - eval_s  # the final eval is paid for first
    cost = step_s + eval_s / eval_interval  # one step, and its share of the evals on the way
    fit = min(max_iters, iter_num + max(1, int(budget / cost)))
    return int(_rank0([fit], device, ddp)[0])
