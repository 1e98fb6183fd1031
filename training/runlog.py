"""
training/runlog.py: a training run's log, written and read back. train.py appends one JSON object per eval
to out_dir/log.jsonl and redraws out_dir/loss.png from the whole log; study.py and bench_vram.py read
finished runs back (log.jsonl, final_eval.json, the checkpoint's config.json) with read_run.
"""

import glob
import json
import os

from core.files import atomic_path, atomic_write
from training.checkpoint import find_checkpoint, read_meta


def read_jsonl(path):
    """The records of a .jsonl file; a line that does not parse (a log cut short by a crash in an older
    version, which appended in place) is left out rather than taken for a record."""
    out = []
    with open(path, errors='replace') as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def start_log(out_dir, resume_iter=None):
    """A new run starts a new log.jsonl; a resumed one (resume_iter = its checkpoint's iteration) keeps
    the evals up to its checkpoint and drops any that an interrupted run wrote after it (they will be redone)."""
    path = os.path.join(out_dir, 'log.jsonl')
    if os.path.exists(path):
        kept = [r for r in read_jsonl(path) if resume_iter is not None and isinstance(r, dict) and r.get('iter', 1e18) <= resume_iter]
        atomic_write(path, ''.join(json.dumps(r) + '\n' for r in kept))


def append_log(out_dir, record, title):
    """Append one eval to out_dir/log.jsonl and redraw out_dir/loss.png from the whole log. The log is
    rewritten whole (atomic_write): a kill -9 or a full disk never leaves half a line in it."""
    path = os.path.join(out_dir, 'log.jsonl')
    log = (read_jsonl(path) if os.path.exists(path) else []) + [record]
    atomic_write(path, ''.join(json.dumps(r) + '\n' for r in log))
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    its = [r['iter'] for r in log]
    train = [(r['iter'], r['train_loss']) for r in log if r.get('train_loss') is not None]
    if train:
        ax1.plot(*zip(*train), label='train loss')
    ax1.plot(its, [r['val_loss'] for r in log], marker='o', label='val loss')
    ax1.set_xlabel('iteration')
    ax1.set_ylabel('cross-entropy (nats/token)')
    ax1.legend()
    for key, label in (('val_ser', 'val SER'), ('val_cer', 'val CER')):
        ax2.plot(its, [100 * r[key] if r.get(key) is not None else float('nan') for r in log], marker='o', label=label)
    ax2.set_yscale('log')  # from thousands of % (an untrained model babbles) down to a few %
    ax2.set_xlabel('iteration')
    ax2.set_ylabel('error rate (%), greedy decoding')
    ax2.legend()
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(os.path.join(out_dir, 'loss.png')) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


# -----------------------------------------------------------------------------
# reading a finished run back (study.py, bench_vram.py)

def run_mode(train_config):
    """The training mode a run used, from its own recorded config: full / frozen / lora_rN / qlora_rN."""
    rank = int(train_config.get('lora_rank') or 0)
    if train_config.get('quant_backbone') and rank:
        return f'qlora_r{rank}'
    if rank:
        return f'lora_r{rank}'
    return 'frozen' if train_config.get('freeze_backbone') else 'full'


def read_run(run_dir):
    """Everything the study and bench_vram need from one train.py run, straight from its own files.

    With final_eval.json (train.py writes it at the end: the best checkpoint scored on the test split,
    plus the run's mean samples/s, MFU, peak memory, train time and parameter count) every number
    comes from there. A run without it (killed before the end) falls back to log.jsonl: best val
    SER/CER/seq-acc, mean logged samples/s, last MFU, max peak memory, last elapsed_s; split='val'
    tells the reader which."""
    log_path = os.path.join(run_dir, 'log.jsonl')
    if not os.path.isfile(log_path):
        raise FileNotFoundError(f"{run_dir} is not a train.py run: no log.jsonl")
    log = read_jsonl(log_path)
    if not log:
        raise ValueError(f"{log_path} is empty: the run never reached its first eval")
    ckpt_dir = find_checkpoint(run_dir)  # config.json of its best checkpoint, else its last
    meta = read_meta(ckpt_dir)
    tc, ma = meta.get('train_config') or {}, meta['model_args']
    r = dict(name=os.path.basename(os.path.normpath(run_dir)), run_dir=run_dir, ckpt_dir=ckpt_dir,
             backbone=ma['backbone'], mode=run_mode(tc), img_height=ma.get('img_height'),
             init=tc.get('pretrained') or 'scratch',
             samples_per_iter=tc.get('batch_size', 0) * tc.get('gradient_accumulation_steps', 1),
             best_val_loss=min(e['val_loss'] for e in log), log=log)
    final_path = os.path.join(run_dir, 'final_eval.json')
    if os.path.isfile(final_path):
        with open(final_path) as f:
            final = json.load(f)
        keys = dict(ser='ser', cer='cer', seq_acc='seq_acc', test_loss='test_loss', params='n_params',
                    samples_per_sec='samples_per_sec', mfu='mfu', peak_mem_mb='peak_mem_mb',
                    wall_s='train_time_s', iters='iters', device='device')
        missing = [v for v in keys.values() if v not in final]
        if missing:
            raise ValueError(f"{final_path} lacks {', '.join(missing)}: written by an older train.py?")
        r.update({k: final[v] for k, v in keys.items()}, split='test')
    else:
        speeds = [e['samples_per_sec'] for e in log if e.get('samples_per_sec')]
        mfus = [e['mfu'] for e in log if e.get('mfu') is not None]
        peaks = [e['peak_mem_mb'] for e in log if e.get('peak_mem_mb') is not None]
        r.update(split='val', ser=min(e['val_ser'] for e in log), cer=min(e['val_cer'] for e in log),
                 seq_acc=max(e.get('val_seq_acc') or 0.0 for e in log), test_loss=None, params=None,
                 samples_per_sec=sum(speeds) / len(speeds) if speeds else None, mfu=mfus[-1] if mfus else None,
                 peak_mem_mb=max(peaks) if peaks else None, wall_s=log[-1].get('elapsed_s'),
                 iters=log[-1]['iter'], device=None)
    r['samples_seen'] = r['iters'] * r['samples_per_iter']
    return r


def expand(spec):
    dirs = []
    for part in [s for s in spec.split(',') if s]:
        dirs += [d for d in (sorted(glob.glob(part)) or [part]) if os.path.isdir(d)]
    dirs = [d for d in dirs if os.path.isfile(os.path.join(d, 'log.jsonl'))]
    if not dirs:
        raise FileNotFoundError(f"no train.py run (a directory with log.jsonl) matches {spec!r}")
    return dirs
