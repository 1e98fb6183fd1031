"""
bench/bitcheck.py: the refactor's behaviour check (issue 14, "the house in order"), bit for bit.

It prepares a 40-tune corpus with data/m21/prepare.py, trains config/tiny_test.py on it for 20
iterations with a fixed seed (plus two variants that go through the LoRA/NF4 and CTC/distillation
paths), and transcribes reader/samples/test_*.png with the shipped reader (`python sample.py`, no
--out_dir). It records, per run, every iteration's exact training loss (--eval_interval=1, so each
log.jsonl record's train_loss is one iteration's loss at full float precision), the val losses, the
printed per-iteration lines, and the sha256 of the final model.safetensors; plus the corpus content
hash and the reader's transcriptions.

    python -m bench.bitcheck --record     # write results/house/bitcheck_ref.json (before the refactor)
    python -m bench.bitcheck              # compare with it; exit 1 on any difference

One torch thread (OMP_NUM_THREADS=1) and PYTHONHASHSEED=0, on CPU: the same machine gives the same bits.
"""
import argparse
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REF = os.path.join(ROOT, 'results', 'house', 'bitcheck_ref.json')
ENV = dict(os.environ, OMP_NUM_THREADS='1', PYTHONHASHSEED='0')
ENV.pop('RANK', None)
COMMON = ['config/tiny_test.py', '--max_iters=20', '--eval_interval=1', '--seed=1337']
VARIANTS = {
    'tiny': [],
    'qlora': ['--lora_rank=4', '--quant_backbone=nf4', '--nf4_double_quant=True'],
    'ctc_distill': ['--collapse_height=True', '--ctc_weight=0.3', '--teacher_dir={work}/tiny'],
}


def sha256(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def corpus(work):
    d = os.path.join(work, 'corpus40')
    shutil.rmtree(d, ignore_errors=True)
    code = ('import importlib.util, sys; s = importlib.util.spec_from_file_location("p", "data/m21/prepare.py"); '
            'm = importlib.util.module_from_spec(s); s.loader.exec_module(m); '
            f'm.prepare({d!r}, max_tunes=40, seed=1337, num_workers=2, quiet=True)')
    subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=ENV, check=True)
    import datasets
    h = hashlib.sha256()
    dd = datasets.load_from_disk(d)
    for sp in ('train', 'val', 'test'):
        ds = dd[sp].cast_column('image', datasets.Image(decode=False))
        for row in ds:
            for k in ('transcription', 'source', 'tune_id', 'font'):
                h.update(row[k].encode() + b'\0')
            h.update(row['image']['bytes'])
    return d, dict(content=h.hexdigest(), tokenizer=sha256(os.path.join(d, 'tokenizer.model')),
                   sizes={sp: len(dd[sp]) for sp in dd})


def train(name, data_dir, work):
    out = os.path.join(work, name)
    shutil.rmtree(out, ignore_errors=True)
    extra = [a.format(work=work) for a in VARIANTS[name]]
    p = subprocess.run([sys.executable, 'train.py', *COMMON, f'--data_dir={data_dir}', f'--out_dir={out}', *extra],
                       cwd=ROOT, env=ENV, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"train.py failed for {name}:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    with open(os.path.join(out, 'log.jsonl')) as f:
        log = [json.loads(line) for line in f]
    with open(os.path.join(out, 'final_eval.json')) as f:
        final = json.load(f)
    lines = re.findall(r'^iter (\d+): loss ([\d.]+), lr ([\d.e+-]+),', p.stdout, re.M)
    return dict(train_loss=[r['train_loss'] for r in log], val_loss=[r['val_loss'] for r in log],
                val_ser=[r['val_ser'] for r in log], lr=[r['lr'] for r in log],
                printed=[' '.join(t) for t in lines],
                final=dict((k, final[k]) for k in ('test_loss', 'ser', 'cer', 'n_params', 'n_trainable', 'iters')),
                ckpt_last=sha256(os.path.join(out, 'ckpt_last', 'model.safetensors')),
                ckpt_best=sha256(os.path.join(out, 'ckpt_best', 'model.safetensors')))


def reader():
    out = {}
    for path in sorted(glob.glob(os.path.join(ROOT, 'reader', 'samples', 'test_*.png'))):
        rel = os.path.relpath(path, ROOT)
        p = subprocess.run([sys.executable, 'sample.py', f'--image={rel}'], cwd=ROOT, env=ENV,
                           capture_output=True, text=True)
        out[os.path.basename(path)] = dict(rc=p.returncode, abc=p.stdout)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument('--record', action='store_true', help='write the reference instead of comparing')
    ap.add_argument('--work', default='/tmp/house-bitcheck')
    ap.add_argument('--only', default='', help='comma list of parts: corpus,tiny,qlora,ctc_distill,reader')
    ap.add_argument('--ref', default=REF, help='the reference to write (--record) or compare with')
    a = ap.parse_args()
    only = set(filter(None, a.only.split(','))) or {'corpus', 'reader', *VARIANTS}
    os.makedirs(a.work, exist_ok=True)
    got = {}
    data_dir, got['corpus'] = corpus(a.work)
    for name in VARIANTS:  # in order: ctc_distill's teacher is the tiny run
        if name in only or (name == 'tiny' and 'ctc_distill' in only):
            got[name] = train(name, data_dir, a.work)
            print(f"{name}: ckpt_last sha256 {got[name]['ckpt_last']}, losses {got[name]['train_loss'][1:4]}...",
                  flush=True)
    if 'reader' in only:
        got['reader'] = reader()
    if a.record:
        with open(a.ref, 'w') as f:
            json.dump(got, f, indent=1)
        print(f"wrote {a.ref}")
        return
    with open(a.ref) as f:
        ref = json.load(f)
    bad = 0
    for part, value in got.items():
        if value == ref.get(part):
            print(f"{part}: identical")
            continue
        bad += 1
        for k in value:
            if value[k] != ref[part].get(k):
                print(f"{part}: DIFFERENT {k}: {str(value[k])[:300]} != {str(ref[part].get(k))[:300]}")
    sys.exit(1 if bad else 0)


if __name__ == '__main__':
    main()
