"""
bench/killloop.py: the slow kill -9 loop. Training and data preparation are killed
(SIGKILL to the process group: no handler, no cleanup) at random moments, and while a checkpoint is
being written, then relaunched with the same command until they finish; the result must equal an
uninterrupted run bit for bit. Also SIGTERM / SIGUSR1 (the preemption path, exit 75 then
init_from=auto).

    python -m bench.killloop [--trials=8]   # -> results/robustness/killloop.json and .md

Training: config/tiny_test.py, 12 iterations, eval_interval=1 (ckpt_last at every iteration: a kill
loses at most one), init_from=auto. Equal = the same sha256 of ckpt_last/model.safetensors and the same
val losses in log.jsonl. Prepare: 20 tunes into a fresh dir; equal = the same content hash (rows,
images, tokenizer) as an uninterrupted prepare. One process at a time, one thread (a shared machine).
"""

import argparse
import glob
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.join(ROOT, 'results', 'robustness')  # where the tables go
ENV = dict(os.environ, OMP_NUM_THREADS='1', PYTHONHASHSEED='0')
ENV.pop('RANK', None)


def quiet():
    while os.path.exists('/tmp/cpu_quiet'):
        time.sleep(30)


def sha(path):
    return hashlib.sha256(open(path, 'rb').read()).hexdigest()


def train_args(corpus, out):
    return [sys.executable, 'train.py', 'config/tiny_test.py', f'--data_dir={corpus}', f'--out_dir={out}',
            '--max_iters=12', '--eval_interval=1', '--init_from=auto']


def prepare_args(out):
    return [sys.executable, 'data/m21/prepare.py', f'--out_dir={out}', '--max_tunes=20', '--num_workers=1']


def launch(cmd):
    quiet()
    return subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)  # its own process group: the kill takes its workers too


def kill(proc, sig=signal.SIGKILL):
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    return proc.wait()


def result_train(out):
    log = [json.loads(l) for l in open(os.path.join(out, 'log.jsonl'))]
    return dict(weights=sha(os.path.join(out, 'ckpt_last', 'model.safetensors')),
                val=[(r['iter'], r['val_loss']) for r in log])


def result_corpus(d):
    import datasets
    h = hashlib.sha256()
    dd = datasets.load_from_disk(d)
    for sp in ('train', 'val', 'test'):
        for row in dd[sp].cast_column('image', datasets.Image(decode=False)):
            h.update(row['transcription'].encode() + row['image']['bytes'])
    h.update(open(os.path.join(d, 'tokenizer.model'), 'rb').read())
    return h.hexdigest()


def until_done(cmd, kills, rng, t_max, when_writing=None):
    """Run cmd, killing it `kills` times (at a random moment up to t_max s, or the moment a path
    matching when_writing appears), then to completion. Returns (kill moments, relaunches, rc)."""
    moments = []
    for k in range(kills + 20):
        proc = launch(cmd)
        if len(moments) < kills:
            t0, deadline = time.time(), time.time() + rng.uniform(0.5, t_max)
            while proc.poll() is None and time.time() < deadline + (60 if when_writing else 0):
                if when_writing and time.time() >= deadline and glob.glob(when_writing):
                    break
                time.sleep(0.005 if when_writing else 0.05)
            if proc.poll() is None:
                kill(proc)
                moments.append(round(time.time() - t0, 2))
                continue
        rc = proc.wait()
        if rc == 0:
            return moments, k + 1, rc
    return moments, k + 1, rc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--trials', type=int, default=8)
    a = ap.parse_args()
    rng = random.Random(1337)
    work = tempfile.mkdtemp(prefix='killloop-')
    rows = []
    # the uninterrupted references
    ref_corpus = os.path.join(work, 'ref_corpus')
    assert launch(prepare_args(ref_corpus)).wait() == 0
    ref_c = result_corpus(ref_corpus)
    ref_out = os.path.join(work, 'ref_run')
    t0 = time.time()
    assert launch(train_args(ref_corpus, ref_out)).wait() == 0
    t_train = time.time() - t0
    ref_t = result_train(ref_out)
    print(f"references: train {t_train:.1f} s", flush=True)

    def record(kind, n, moments, launches, rc, same, extra=''):
        rows.append(dict(fault=kind, trial=n, kills=len(moments), at_s=moments, launches=launches, rc=rc,
                         survived=rc == 0, same_result=same))
        print(f"{kind:34s} trial {n}: kills at {moments} s, {launches} launches, rc {rc}, same result {same} {extra}",
              flush=True)

    for n in range(a.trials):  # kill -9 at random moments, 3 per trial
        out = os.path.join(work, f'train{n}')
        moments, launches, rc = until_done(train_args(ref_corpus, out), 3, rng, t_train)
        record('kill -9, training (random moment)', n, moments, launches, rc, rc == 0 and result_train(out) == ref_t)
    for n in range(max(2, a.trials // 2)):  # kill -9 while ckpt_last is being written (its temp dir exists)
        out = os.path.join(work, f'write{n}')
        moments, launches, rc = until_done(train_args(ref_corpus, out), 2, rng, t_train / 2,
                                           when_writing=os.path.join(out, 'ckpt_last.*-*'))
        record('kill -9, during a checkpoint write', n, moments, launches, rc, rc == 0 and result_train(out) == ref_t)
    for n, sig in enumerate([signal.SIGTERM, signal.SIGUSR1] * max(1, a.trials // 4)):  # preemption
        out = os.path.join(work, f'sig{n}')
        proc = launch(train_args(ref_corpus, out))
        time.sleep(rng.uniform(0.6, 0.9) * t_train)
        code = kill(proc, sig)
        rc = launch(train_args(ref_corpus, out)).wait()
        record(f'{signal.Signals(sig).name}, training', n, [code], 2, rc, rc == 0 and result_train(out) == ref_t,
               f'(first exit code {code})')
    for n in range(max(2, a.trials // 2)):  # kill -9 during prepare
        d = os.path.join(work, f'corpus{n}')
        moments, launches, rc = until_done(prepare_args(d), 2, rng, 8.0)
        record('kill -9, data/m21/prepare.py', n, moments, launches, rc, rc == 0 and result_corpus(d) == ref_c)
    shutil.rmtree(work, ignore_errors=True)
    json.dump(rows, open(os.path.join(HERE, 'killloop.json'), 'w'), indent=1)
    with open(os.path.join(HERE, 'killloop.md'), 'w') as f:
        f.write('| fault | trials | kills / signals | all finished | same weights, losses / corpus as uninterrupted |\n'
                '|---|---:|---:|---|---|\n')
        for kind in dict.fromkeys(r['fault'] for r in rows):
            rs = [r for r in rows if r['fault'] == kind]
            f.write(f"| {kind} | {len(rs)} | {sum(r['kills'] for r in rs)} | "
                    f"{'yes' if all(r['survived'] for r in rs) else 'NO'} | "
                    f"{sum(r['same_result'] for r in rs)} of {len(rs)} |\n")
    print(open(os.path.join(HERE, 'killloop.md')).read())


if __name__ == '__main__':
    main()
