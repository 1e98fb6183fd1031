"""
data/m21/parts_count.py: how many single-part excerpts music21's MusicXML and kern scores give
(data/m21/parts.py), and how many of them verovio draws as their labels say (the agreement check).

    python data/m21/parts_count.py --out=results/sources/parts_count.json            # every piece, no drawing
    python data/m21/parts_count.py --draw_every=8 --out=results/sources/parts_draw.json  # every 8th piece, drawn

Count mode parses every piece and counts its parts' supported windows (2-8 measures, mostly notes) and
the excerpts prepare.py --parts keeps (excerpts_per_part=2 per 32 measures, at most 8 a part). Draw mode
runs prepare's own job (sources.process_part) on every n-th piece (by hash): excerpts made, mismatches.
"""
import argparse
import json
import os
import time
from multiprocessing import Pool

import numpy as np

import prepare  # noqa: F401  (data/m21/prepare.py: importing it puts the repo and data/ on sys.path)
import excerpts  # noqa: E402
import parts  # noqa: E402
import sources  # noqa: E402


def count(job):
    src, rel = job
    out = dict(src=src, fmt='kern' if rel.endswith('.krn') else 'musicxml', parts=0, parts_ok=0, windows=0, kept=0, skips={})
    try:
        got = parts.piece_parts(rel)
    except Exception as e:
        out['skips'][f'unreadable ({type(e).__name__})'] = 1
        return out
    rng = np.random.default_rng([1337, parts.piece_hash(rel) & 0xFFFFFFFF])
    for _, ms in got:
        out['parts'] += 1
        if isinstance(ms, str):
            out['skips'][ms] = out['skips'].get(ms, 0) + 1
            continue
        w = [x for x in excerpts.choose_excerpts(ms, rng, 10 ** 9) if sources.mostly_notes(ms[x[0]:x[1]])]
        out['parts_ok'] += bool(w)
        out['windows'] += len(w)
        out['kept'] += min(len(w), min(sources.MAX_PART_EXCERPTS, 2 * max(1, len(ms) // 32)))
    return out


def draw(job):
    src, rel = job
    t = time.process_time()
    samples, skips = sources.process_part(dict(src=src, rel=rel, seed=1337, excerpts_per_part=2, no_meter_share=0.0))
    return dict(src=src, fmt='kern' if rel.endswith('.krn') else 'musicxml', excerpts=len(samples), skips=skips,
                cpu_s=time.process_time() - t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--draw_every', type=int, default=0, help='draw every n-th piece (by hash) instead of counting')
    ap.add_argument('--workers', type=int, default=2)
    ap.add_argument('--out', required=True)
    a = ap.parse_args()
    pieces = parts.list_pieces()
    if a.draw_every:
        pieces = [p for p in pieces if parts.piece_hash(p[1], 'draw') % a.draw_every == 0]
    t0 = time.time()
    rows = []
    with Pool(a.workers) as pool:  # one JSON line per piece on stdout as it finishes: progress, and kept
        for r in pool.imap_unordered(draw if a.draw_every else count, pieces, chunksize=2):
            rows.append(r)
            print(json.dumps(r), flush=True)
    agg = {}
    for r in rows:
        for key in (r['fmt'], r['src'], 'all'):
            g = agg.setdefault(key, {})
            g['pieces'] = g.get('pieces', 0) + 1
            for k, v in r.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    g[k] = round(g.get(k, 0) + v, 2)
                elif k == 'skips':
                    s = g.setdefault('skips', {})
                    for kk, vv in v.items():
                        s[kk] = s.get(kk, 0) + vv
    if a.draw_every:
        for g in agg.values():
            mis = g.get('skips', {}).get('excerpt: label/image mismatch', 0)
            g['agreement_pass_rate'] = round(g['excerpts'] / max(1, g['excerpts'] + mis), 4)
            g['excerpts_per_cpu_second'] = round(g['excerpts'] / max(1e-9, g['cpu_s']), 2)
    res = dict(mode='draw' if a.draw_every else 'count', draw_every=a.draw_every, wall_s=round(time.time() - t0, 1),
               workers=a.workers, by=agg)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, 'w') as f:
        json.dump(res, f, indent=1)
    print(json.dumps(agg, indent=1))


if __name__ == '__main__':
    main()
