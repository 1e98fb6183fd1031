"""
data/builder.py: the machinery every corpus builder in data/*/prepare.py shares. A builder turns one
source item (a tune, a piece) into samples in a function of its own; this file runs that function in
crash-proof worker processes, keeps finished shards so that an interrupted build resumes, and writes
the DatasetDict + tokenizer + meta.json atomically (the layout of data/m21/README.md, "On disk").
"""
import contextlib
import json
import os
import pickle
import resource
import shutil
import sys
import time
from multiprocessing import Pipe, Process
from multiprocessing.connection import wait

from core.files import atomic_dir, atomic_write
from data import train_tokenizer

# -----------------------------------------------------------------------------
# crash-proof process pool: one item at a time per worker; a worker killed by a signal (verovio abort or
# segfault) costs only the item it was on, which is counted, and a fresh worker replaces it.

def _worker(fn, conn):
    while True:
        job = conn.recv()
        if job is None:
            return
        conn.send(fn(job))

def run_pool(fn, jobs, num_workers, on_result, unit='tune'):
    """calls on_result(i, *fn(jobs[i])) for every job i, in completion order; fn returns (samples, skips).
    Workers are forked, so fn may be any function (a test's fake too)."""
    todo = list(range(len(jobs)))[::-1]
    workers = {}  # sentinel -> (process, conn, job index)
    procs = []    # every process started, to clean up on an exception

    def start():
        a, b = Pipe()
        p = Process(target=_worker, args=(fn, b), daemon=True)
        p.start()
        procs.append(p)
        b.close()
        return p, a

    def feed(p, conn):
        i = todo.pop() if todo else None
        if i is None:
            conn.send(None)
            p.join()
            return
        conn.send(jobs[i])
        workers[p.sentinel] = (p, conn, i)

    try:
        for _ in range(max(1, min(num_workers, len(jobs)))):
            feed(*start())
        while workers:
            ready = wait([conn for _, conn, _ in workers.values()] + list(workers.keys()))
            for s, (p, conn, i) in list(workers.items()):
                if conn not in ready and s not in ready:
                    continue
                del workers[s]
                try:
                    result = conn.recv() if conn.poll() else None
                except (EOFError, OSError):  # died mid-send
                    result = None
                if result is None:  # the process died without a result: a crash inside verovio or music21
                    p.join()
                    on_result(i, [], {f'{unit}: worker crashed (exit code {p.exitcode})': 1})
                    conn.close()
                    feed(*start())
                else:
                    on_result(i, *result)
                    feed(p, conn)
    finally:  # Ctrl-C or an error in on_result: do not leave workers behind
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join()

def cpu_seconds():
    """user+sys CPU time of this process and its finished children (the workers, once joined)."""
    return sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
               for f in ('ru_utime', 'ru_stime'))

# -----------------------------------------------------------------------------
# the driver: shards (resumable), then the DatasetDict + tokenizer + meta, atomically

def build(out_dir, jobs, splits, options, pool, columns, vocab_size=4096, num_workers=None, quiet=False,
          unit='tunes', shard_size=32):
    """jobs[i] -> pool(jobs, num_workers, on_result) -> samples (dicts with 'image' PNG bytes,
    'transcription' and `columns`); splits[i] = 'train'|'val'|'test' of job i. Finished shards of
    shard_size jobs are kept in <out_dir>.partial/ and reused when `options` are the same. -> meta."""
    import datasets
    num_workers = num_workers or os.cpu_count() or 1
    t0 = time.time()
    partial = out_dir.rstrip('/') + '.partial'
    if os.path.isdir(partial):
        try:
            with open(os.path.join(partial, 'options.json')) as f:
                same = json.load(f) == options
        except (OSError, ValueError):
            same = False
        if not same:
            shutil.rmtree(partial)
    os.makedirs(partial, exist_ok=True)
    atomic_write(os.path.join(partial, 'options.json'), json.dumps(options))

    # shards of shard_size jobs; a finished shard is one pickle, so an interrupted run resumes there
    shards = [list(range(i, min(i + shard_size, len(jobs)))) for i in range(0, len(jobs), shard_size)]
    shard_path = lambda k: os.path.join(partial, f'shard_{k:05d}.pkl')
    results = {}  # job index -> (samples, skips)
    for k, sh in enumerate(shards):
        if os.path.exists(shard_path(k)):
            try:  # written atomically, so only a disk fault breaks one: redo that shard
                with open(shard_path(k), 'rb') as f:
                    results.update(pickle.load(f))
            except Exception as e:
                print(f'warning: {shard_path(k)} is unreadable ({type(e).__name__}); rendering it again')
                os.remove(shard_path(k))
    jobs_idx = [i for k, sh in enumerate(shards) if not os.path.exists(shard_path(k)) for i in sh]
    shard_of = {i: k for k, sh in enumerate(shards) for i in sh}
    pending = {k: len(sh) for k, sh in enumerate(shards) if not os.path.exists(shard_path(k))}
    n_done, n_excerpts, t_start = len(results), sum(len(r[0]) for r in results.values()), time.time()
    if n_done and not quiet:
        print(f'resuming: {n_done} {unit} already done in {partial}')

    progress = {'t': -1.0}

    def on_result(j, samples, skips):
        nonlocal n_done, n_excerpts
        i = jobs_idx[j]
        results[i] = (samples, skips)
        n_done += 1
        n_excerpts += len(samples)
        k = shard_of[i]
        pending[k] -= 1
        if pending[k] == 0:
            atomic_write(shard_path(k), pickle.dumps({t: results[t] for t in shards[k]}))
        # a progress line redrawn in place; at most one every 0.5 s on a terminal, and only every
        # 5% when stdout is a log file, so that logs stay readable
        step = 1 if sys.stdout.isatty() else max(1, len(jobs) // 20)
        if not quiet and (n_done % step == 0 or n_done == len(jobs)):
            dt = time.time() - t_start
            if sys.stdout.isatty() and dt - progress['t'] < 0.5 and n_done < len(jobs):
                return
            progress['t'] = dt
            end = '' if sys.stdout.isatty() else '\n'
            print(f'\r{unit} {n_done}/{len(jobs)}  excerpts {n_excerpts}  {dt:.0f}s', end=end, flush=True)

    cpu0 = cpu_seconds()
    pool([jobs[i] for i in jobs_idx], num_workers, on_result)
    cpu_s = cpu_seconds() - cpu0  # all cores together: excerpts per CPU-second = speed per core
    if not quiet:
        print()
    render_s = time.time() - t_start

    # collect in job order (deterministic whatever order the workers finished in)
    rows = {'train': [], 'val': [], 'test': []}
    skipped, used = {}, {'train': 0, 'val': 0, 'test': 0}
    for i in range(len(jobs)):
        samples, skips = results[i]
        for r, c in skips.items():
            skipped[r] = skipped.get(r, 0) + c
        used[splits[i]] += bool(samples)
        rows[splits[i]].extend(samples)
    features = datasets.Features({'image': datasets.Image(), 'transcription': datasets.Value('string'),
                                  **{c: datasets.Value(t) for c, t in columns}})
    dd = datasets.DatasetDict({sp: datasets.Dataset.from_dict(
        {'image': [{'bytes': r['image'], 'path': None} for r in rs], 'transcription': [r['transcription'] for r in rs],
         **{c: [r[c] for r in rs] for c, _ in columns}}, features=features) for sp, rs in rows.items()})
    if len(dd['train']) == 0:
        raise RuntimeError('no training excerpts were produced; see the skip reasons above')

    # atomic swap: out_dir is always complete or absent (checkpoint.atomic_dir)
    with atomic_dir(out_dir.rstrip('/')) as tmp:
        bars = not datasets.utils.are_progress_bars_disabled()
        datasets.disable_progress_bars()  # our own progress line is enough
        # an empty split (possible in tiny corpora) must be saved as one empty shard, else it will not load
        dd.save_to_disk(tmp, num_shards={sp: 1 for sp in dd if len(dd[sp]) == 0} or None)
        if bars:
            datasets.enable_progress_bars()
        train_tokenizer([r['transcription'] for r in rows['train']], os.path.join(tmp, 'tokenizer'), vocab_size)
        meta = dict(options, num_workers=num_workers, vocab_size=vocab_size, **{f'{unit}_selected': len(jobs),
                    f'{unit}_with_excerpts': used}, excerpts={sp: len(rs) for sp, rs in rows.items()},
                    skipped=dict(sorted(skipped.items(), key=lambda kv: -kv[1])),
                    render_seconds=round(render_s, 1), render_cpu_seconds=round(cpu_s, 1),
                    excerpts_per_cpu_second=round(sum(len(results[i][0]) for i in jobs_idx) / max(cpu_s, 1e-9), 2),
                    total_seconds=round(time.time() - t0, 1))
        with open(os.path.join(tmp, 'meta.json'), 'w') as f:
            json.dump(meta, f, indent=2)
    shutil.rmtree(partial, ignore_errors=True)
    if not quiet:
        print(f'wrote {out_dir}: ' + ', '.join(f'{sp} {n} excerpts from {used[sp]} {unit}'
                                               for sp, n in meta['excerpts'].items()))
        print(f'skipped: {sum(skipped.values())} ' + json.dumps(meta['skipped']))
        print(f'time: {meta["total_seconds"]}s, {meta["excerpts_per_cpu_second"]} excerpts per CPU-second (per core)')
        for sp, n in meta['excerpts'].items():
            if n == 0:
                print(f'warning: split {sp} is empty; use more {unit}')
    return meta


@contextlib.contextmanager
def cli_errors(out_dir):
    """a builder's command line: every expected failure is one line and exit 1, never a traceback."""
    try:
        yield
    except (ValueError, RuntimeError, FileNotFoundError) as e:
        sys.exit(f'error: {e}')
    except OSError as e:  # a full disk: atomic_dir has left any previous corpus in out_dir as it was
        sys.exit(f'error: cannot write {out_dir} ({e.strerror or e}); a corpus already there is intact: free some '
                 f'disk space and run the same command again (finished shards are kept in {out_dir}.partial)')
    except KeyboardInterrupt:
        sys.exit('interrupted: run the same command again to resume')
