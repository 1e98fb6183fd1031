"""
bench/faults.py: every file the project reads, corrupted four ways, through the command
that reads it; plus a full disk (ENOSPC) while writing a checkpoint and a dataset, and NaN steps.

Each case runs in a fresh copy of a small trained run (tiny_test config, LoRA r2, adapters saved) and of
a 20-tune corpus. A case survives if the command either works (a file it does not need) or exits
non-zero with exactly one stderr line, no traceback, naming the file and a next step. Data lost: any
other file of the run or corpus changed (hashed before and after), or for ENOSPC, the previous
checkpoint / corpus no longer loads as it was.

    python -m bench.faults          # -> results/robustness/faults.json and faults.md
"""

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.join(ROOT, 'results', 'robustness')  # where the tables go
ENV = dict(os.environ, OMP_NUM_THREADS='1', PYTHONHASHSEED='0')
ENV.pop('RANK', None)
TINY = ['config/tiny_test.py', '--max_iters=4', '--eval_interval=2']
HOW = ['truncated', 'empty', 'garbage', 'wrong_json']


def quiet():
    while os.path.exists('/tmp/cpu_quiet'):  # the machine's owner asked for a quiet CPU
        time.sleep(30)


def run(args, **kw):
    quiet()
    return subprocess.run([sys.executable] + args, cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=600, **kw)


def corrupt(path, how):
    raw = open(path, 'rb').read()
    new = {'truncated': raw[:len(raw) // 2], 'empty': b'',
           'garbage': bytes(random.Random(0).randrange(256) for _ in range(4096)),
           'wrong_json': b'{"model_args": 3, "splits": 4, "lora": [1]}'}[how]
    with open(path, 'wb') as f:
        f.write(new)


def tree_hash(d, skip):
    out = {}
    for dp, _, fs in os.walk(d):
        for f in fs:
            p = os.path.join(dp, f)
            if os.path.relpath(p, d) != skip and not f.startswith('.'):
                out[os.path.relpath(p, d)] = hashlib.sha256(open(p, 'rb').read()).hexdigest()
    return out


def verdict(p, path):
    lines = [ln for ln in p.stderr.strip().splitlines() if ln.strip() and not ln.startswith('Overriding')]
    one = p.returncode != 0 and len(lines) == 1 and 'Traceback' not in p.stderr
    line = lines[-1] if lines else ''
    return dict(rc=p.returncode, line=line[:400], traceback='Traceback' in p.stderr,
                survived=bool(one and path in line) or (p.returncode == 0 and 'Traceback' not in p.stderr))


def main():
    work = tempfile.mkdtemp(prefix='faults-')
    corpus, base = os.path.join(work, 'corpus'), os.path.join(work, 'run')
    code = ('import importlib.util; s = importlib.util.spec_from_file_location("p", "data/m21/prepare.py"); '
            'm = importlib.util.module_from_spec(s); s.loader.exec_module(m); '
            f'm.prepare({corpus!r}, max_tunes=20, seed=1337, num_workers=1, quiet=True)')
    assert run(['-c', code]).returncode == 0
    p = run(['train.py', *TINY, f'--data_dir={corpus}', f'--out_dir={base}', '--lora_rank=2'])
    assert p.returncode == 0, p.stderr
    assert run(['checkpoint.py', 'save_adapter', base, f'{base}/adapter.safetensors']).returncode == 0
    image = os.path.join(ROOT, 'reader', 'samples', 'test_1.png')
    resume = lambda r: ['train.py', *TINY, f'--data_dir={corpus}', f'--out_dir={r}', '--lora_rank=2', '--init_from=auto']
    # (file, which tree, the command that reads it)
    cases = [('ckpt_last/state.pt', 'run', resume), ('ckpt_last/model.safetensors', 'run', resume),
             ('ckpt_last/config.json', 'run', resume), ('log.jsonl', 'run', resume),
             ('ckpt_best/model.safetensors', 'run', lambda r: ['sample.py', f'--out_dir={r}', f'--image={image}']),
             ('ckpt_best/config.json', 'run', lambda r: ['sample.py', f'--out_dir={r}', f'--image={image}']),
             ('tokenizer.model', 'run', lambda r: ['sample.py', f'--out_dir={r}', f'--image={image}']),
             ('adapter.safetensors', 'run', lambda r: ['checkpoint.py', 'load_adapter', r, f'{r}/adapter.safetensors',
                                                      f'{r}/merged'])]
    scratch = lambda c: ['train.py', *TINY, f'--data_dir={c}', f'--out_dir={c}-run']
    cases += [(n, 'corpus', scratch) for n in ('dataset_dict.json', 'train/state.json', 'train/dataset_info.json',
                                               'train/data-00000-of-00001.arrow', 'val/data-00000-of-00001.arrow',
                                               'tokenizer.model', 'meta.json')]
    rows = []
    for name, tree, cmd in cases:
        for how in HOW:
            src = base if tree == 'run' else corpus
            d = os.path.join(work, f'case-{len(rows)}')
            shutil.copytree(src, d)
            path = os.path.join(d, name)
            before = tree_hash(d, name)
            corrupt(path, how)
            p = run(cmd(d))
            v = verdict(p, path)
            after = tree_hash(d, name)
            lost = [k for k in before if after.get(k) != before[k] and not k.startswith(('log.jsonl', 'loss.png'))]
            if name == 'log.jsonl':  # the resume rewrites its own log; the checkpoints must be what they were
                lost = [k for k in lost if not k.startswith('ckpt_')] if p.returncode == 0 else lost
            rows.append(dict(file=name, how=how, read_by=' '.join(cmd(d)[:1]), **v, data_lost=lost if p.returncode else []))
            print(f"{name:38s} {how:10s} rc={p.returncode} survived={v['survived']} lost={len(rows[-1]['data_lost'])} "
                  f"| {v['line'][:150]}", flush=True)
            shutil.rmtree(d, ignore_errors=True)
            shutil.rmtree(d + '-run', ignore_errors=True)

    # a full disk at the second checkpoint write of a run, and while prepare writes the corpus
    d = os.path.join(work, 'enospc-run')
    full = ('import errno, os, runpy, sys, {mod}; real = {fn}; n = [0]\n'
            'def f(*a, **k):\n'
            '    n[0] += 1\n'
            '    if n[0] > {after}: raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))\n'
            '    return real(*a, **k)\n'
            '{fn} = f; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name="__main__")')
    p = run(['-c', full.format(mod='torch', fn='torch.save', after=2), 'train.py', *TINY, f'--data_dir={corpus}',
             f'--out_dir={d}'])
    v = verdict(p, d)
    ok = run(['-c', f'import checkpoint; m, meta, s = checkpoint.load_resume({d!r}); assert s["iter_num"] == 0'])
    rows.append(dict(file='ckpt_last/ (write)', how='ENOSPC', read_by='train.py', **v,
                     data_lost=[] if ok.returncode == 0 else ['ckpt_last']))
    c2 = os.path.join(work, 'enospc-corpus')
    shutil.copytree(corpus, c2)
    before = tree_hash(c2, None)
    p = run(['-c', full.format(mod='datasets', fn='datasets.DatasetDict.save_to_disk', after=0), 'data/m21/prepare.py',
             f'--out_dir={c2}', '--max_tunes=21', '--num_workers=1'])
    v = verdict(p, 'No space left')
    rows.append(dict(file='dataset dir (write)', how='ENOSPC', read_by='data/m21/prepare.py', **v,
                     data_lost=[k for k, h in before.items() if tree_hash(c2, None).get(k) != h]))
    # NaN: lr 1e30 blows the weights up after one step; the next steps' gradients are inf/NaN
    for policy in ('skip', 'stop'):
        d = os.path.join(work, f'nan-{policy}')
        p = run(['train.py', *TINY, f'--data_dir={corpus}', f'--out_dir={d}', '--learning_rate=1e30', '--min_lr=1e30',
                 '--warmup_frac=0', f'--nan_loss={policy}'])
        best = json.load(open(os.path.join(d, 'ckpt_best', 'config.json')))['best_val_loss']
        good = (p.returncode == 0 and 'step skipped' in p.stdout) if policy == 'skip' else \
            verdict(p, "nan_loss='stop'")['survived']
        rows.append(dict(file='(loss)', how=f'NaN, nan_loss={policy}', read_by='train.py', rc=p.returncode,
                         line=([ln for ln in p.stdout.splitlines() if 'step skipped' in ln] or [''])[0][:300]
                         if policy == 'skip' else p.stderr.strip().splitlines()[-1][:300],
                         traceback='Traceback' in p.stderr, survived=bool(good and best == best and best < 1e9),
                         data_lost=[]))
    shutil.rmtree(work, ignore_errors=True)
    json.dump(rows, open(os.path.join(HERE, 'faults.json'), 'w'), indent=1)
    with open(os.path.join(HERE, 'faults.md'), 'w') as f:
        f.write('| file | fault | read by | exit | survived | data lost | the line |\n|---|---|---|---:|---|---|---|\n')
        for r in rows:
            f.write(f"| {r['file']} | {r['how']} | {r['read_by']} | {r['rc']} | {'yes' if r['survived'] else 'NO'} | "
                    f"{', '.join(r['data_lost']) or 'none'} | `{r['line'].replace('|', '/').replace(work, '<tmp>')}` |\n")
    print(f"{sum(r['survived'] for r in rows)} of {len(rows)} survived, "
          f"{sum(bool(r['data_lost']) for r in rows)} lost data")


if __name__ == '__main__':
    main()
