"""
bench/reader_scan.py: what a scanned look does to the shipped reader (issue 24).

  --what=reject  the staff check: of N clearly readable lines of a corpus, printed and scanned with
                 degrade.scan (per preset), how many sample.py turns down as 'no staff found' (both
                 --page=auto and --page=no, through sample.load_input itself), and how many it reads
                 as a page instead of a line.
  --what=ser     SER of the shipped reader (or --out_dir's checkpoint; pages.Reader, line mode, its
                 decoding) on the test split
                 and on its degraded copy (python -m core.degrade --data_dir=...: the same excerpts), plus the SER
                 sample.py --page=auto would give, a rejected line counting as an empty transcription.

    python -m bench.reader_scan --what=reject --data_dir=data/m21/q200 --n=200 [--rev=8b7345c]
    python -m bench.reader_scan --what=ser --data_dir=data/m21/quick
"""
import argparse
import json
import os
import sys
import tempfile
import time
import importlib.util
import subprocess


import data
from core import degrade
from core import metrics
from core.files import atomic_write
import sample
from inference import pages

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def lines(data_dir, n, splits=('test', 'val', 'train')):
    """(split, index, PIL image, label) of the first n rows of the splits, in that order."""
    out = []
    for sp in splits:
        ds = data.load_split(data_dir, sp)
        for i in range(min(len(ds), n - len(out))):
            row = ds[i]
            out.append((sp, i, row['image'].convert('L'), row['transcription']))
    return out


def check(path, mode):
    """sample.load_input's verdict on one file: 'line', 'page:<staves>' or 'rejected'."""
    sample.page = mode
    try:
        r = sample.load_input(path, 64, 1024)
    except ValueError:
        return 'rejected'
    return 'line' if r['kind'] == 'line' else f"page:{len(r['xs'])}"


def reject(args):
    items = lines(args.data_dir, args.n)
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        for preset in ['clean'] + list(degrade.PRESETS):
            counts, bad = {}, []
            for sp, i, im, _ in items:
                path = os.path.join(tmp, f'{sp}_{i}.png')
                (im if preset == 'clean' else degrade.scan_image(im, [args.seed, i], preset)).save(path)
                for mode in ('auto', 'no'):
                    v = check(path, mode)
                    key = f'{mode}:{v.split(":")[0]}'
                    counts[key] = counts.get(key, 0) + 1
                    if v == 'rejected':
                        bad.append(f'{sp}_{i}/{mode}')
            res[preset] = dict(counts=counts, rejected=bad[:40])
            print(f'{preset:7s} {len(items)} lines: ' + ', '.join(f'{k} {v}' for k, v in sorted(counts.items())), flush=True)
    return res


def ser(args):
    split_scan = 'test_scan' if args.preset == 'medium' else f'test_scan_{args.preset}'
    dd = json.load(open(os.path.join(args.data_dir, 'dataset_dict.json')))
    if split_scan not in dd['splits'] or args.rebuild:
        degrade.degrade_split(args.data_dir, 'test', args.preset, args.seed)
    reader = pages.Reader(args.out_dir, batch_size=16)
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        for split in ('test', split_scan):
            ds = data.load_split(args.data_dir, split)
            n = min(len(ds), args.n)
            ims = [ds[i]['image'].convert('L') for i in range(n)]
            refs = [ds[i]['transcription'] for i in range(n)]
            t0 = time.time()
            preds, _ = reader.read(ims)
            dt = time.time() - t0
            verdicts = []
            for i, im in enumerate(ims):
                path = os.path.join(tmp, f'{split}_{i}.png')
                im.save(path)
                verdicts.append(check(path, 'auto'))
            auto = [p if v != 'rejected' else '' for p, v in zip(preds, verdicts)]
            m, ma = metrics.score(preds, refs), metrics.score(auto, refs)
            res[split] = dict(n=n, ser=m['ser'], seq_acc=m['seq_acc'], ser_with_rejections=ma['ser'],
                              rejected=verdicts.count('rejected'), read_as_page=sum(v.startswith('page') for v in verdicts),
                              seconds=dt)
            print(f"{split:16s} {n} lines: SER {100 * m['ser']:.2f}%, exact {100 * m['seq_acc']:.1f}%; "
                  f"--page=auto rejects {res[split]['rejected']}, reads {res[split]['read_as_page']} as pages, "
                  f"SER with rejections as empty {100 * ma['ser']:.2f}% ({dt:.0f}s to read)", flush=True)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--what', choices=('reject', 'ser'), required=True)
    ap.add_argument('--data_dir', default='data/m21/q200')
    ap.add_argument('--n', type=int, default=200)
    ap.add_argument('--preset', default='medium')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--rebuild', action='store_true')
    ap.add_argument('--out_dir', default='reader', help='with --what=ser: the checkpoint to score (default: the shipped reader)')
    ap.add_argument('--json', default=None)
    ap.add_argument('--rev', default=None, help="use the staves.py of this git revision (e.g. 8b7345c: before the fix)")
    args = ap.parse_args()
    if args.rev:  # sample.load_input imports staves when it runs: this module takes its place
        src = subprocess.run(['git', 'show', f'{args.rev}:staves.py'], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout
        path = os.path.join(tempfile.mkdtemp(), 'staves.py')
        with open(path, 'w') as f:
            f.write(src)
        spec = importlib.util.spec_from_file_location('staves', path)
        sys.modules['staves'] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules['staves'])
    res = reject(args) if args.what == 'reject' else ser(args)
    if args.json:
        atomic_write(args.json, json.dumps(dict(args=vars(args), results=res), indent=1))


if __name__ == '__main__':
    main()
