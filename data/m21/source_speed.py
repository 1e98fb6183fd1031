"""
data/m21/source_speed.py: prepare speed per source, in excerpts per CPU-second of one process (= per core):
the folk tunes (prepare.process_tune), their transposed copies, score parts and synthetic lines
(data/m21/sources.py), each job run in this process, timed with time.process_time.

    python data/m21/source_speed.py --out=results/sources/speed.json
"""
import argparse
import json
import os
import time

import prepare  # data/m21/prepare.py: importing it puts the repo and data/ on sys.path
import parts  # noqa: E402
import sources  # noqa: E402


def timed(fn, jobs):
    n, mis, t = 0, 0, time.process_time()
    for j in jobs:
        s, k = fn(j)
        n += len(s)
        mis += k.get('excerpt: label/image mismatch', 0)
    cpu = time.process_time() - t
    return dict(jobs=len(jobs), excerpts=n, mismatches=mis, cpu_s=round(cpu, 1), excerpts_per_cpu_second=round(n / cpu, 2))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--tunes', type=int, default=40)
    ap.add_argument('--pieces', type=int, default=12)
    ap.add_argument('--synth_jobs', type=int, default=10)
    ap.add_argument('--out', required=True)
    a = ap.parse_args()
    P = prepare
    tunes = P.select_tunes(P.list_tunes(P.ABC_SOURCES), a.tunes, 1337)
    pieces = parts.select_pieces(parts.list_pieces(), a.pieces, 1337)
    out = dict(
        folk=timed(P.process_tune, [t[:4] + (1337, 4) for t in tunes]),
        transposed=timed(sources.process_job, [dict(kind='transposed', tune=t[:4], seed=1337, max_excerpts=4,
                                                     no_meter_share=0.0) for t in tunes]),
        part=timed(sources.process_job, [dict(kind='part', src=s, rel=r, seed=1337, excerpts_per_part=2, no_meter_share=0.0)
                                         for s, r in pieces]),
        synth=timed(sources.process_job, [dict(kind='synth', index=i, seed=1337, no_meter_share=0.0)
                                          for i in range(a.synth_jobs)]),
        load_average=os.getloadavg(), cpus=os.cpu_count())
    with open(a.out, 'w') as f:
        json.dump(out, f, indent=1)
    print(json.dumps(out, indent=1))


if __name__ == '__main__':
    main()
