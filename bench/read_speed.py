"""
bench/read_speed.py: how fast sample.py reads a folder of line images (issue 24's "Speed": >= 50 lines/s
on the idle 2-core CPU, model load included). Writes N fixed test lines of a prepared corpus as PNGs
(rows 0, k, 2k, ... of its test split, k = len // N, the stored PNG bytes as they are), then times
`python sample.py --out_dir=<reader> --image=<folder>` end to end, a fresh process per run (import,
model load, staff checks, decoding, printing), and prints lines/s per run and the median.

    python -m bench.read_speed                                   # 184 lines of data/m21/all, 5 runs
    python -m bench.read_speed --data_dir=data/m21/all --n=184 --runs=5 --folder=/tmp/speed/lines
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_lines(data_dir, n, folder):
    """The fixed set: n rows of <data_dir>/test, evenly spaced, as <k>_<row>.png in folder."""
    from datasets import Image as DImage, load_from_disk
    d = load_from_disk(os.path.join(data_dir, 'test')).cast_column('image', DImage(decode=False))
    step = max(1, len(d) // n)
    os.makedirs(folder, exist_ok=True)
    for k, i in enumerate(range(0, step * n, step)):
        path = os.path.join(folder, f'{k:03d}_{i:04d}.png')
        with open(path + '.tmp', 'wb') as f:
            f.write(d[i]['image']['bytes'])
        os.replace(path + '.tmp', path)
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--data_dir', default=os.path.join(ROOT, 'data', 'm21', 'all'))
    ap.add_argument('--n', type=int, default=184)
    ap.add_argument('--runs', type=int, default=5)
    ap.add_argument('--folder', default='/tmp/read_speed_lines')
    ap.add_argument('--out_dir', default='reader')
    ap.add_argument('--args', default='', help="more sample.py options, e.g. '--page=no'")
    a = ap.parse_args()
    n = write_lines(a.data_dir, a.n, a.folder)
    rates = []
    for r in range(a.runs):
        t = time.perf_counter()
        p = subprocess.run([sys.executable, 'sample.py', f'--out_dir={a.out_dir}', f'--image={a.folder}', *a.args.split()],
                           cwd=ROOT, capture_output=True, text=True)
        dt = time.perf_counter() - t
        read = p.stdout.count('\n% ') + p.stdout.startswith('% ')
        if p.returncode or read != n:
            sys.exit(f"error: sample.py exit {p.returncode}, {read} of {n} lines read: {p.stderr.strip()[-300:]}")
        rates.append(n / dt)
        print(f"run {r + 1}: {dt:.2f} s, {n / dt:.1f} lines/s", flush=True)
    print(f"median {statistics.median(rates):.1f} lines/s over {a.runs} runs of {n} lines ({a.args or 'default options'})")


if __name__ == '__main__':
    main()
