"""
data/m21/engraver_speed.py: the three engravers measured on the same real excerpts (music21's folk
tunes, cut as prepare.py cuts them): CPU seconds per excerpt (the engravers' own processes included)
and the agreement check's pass rate.

    python data/m21/engraver_speed.py --n=200 --batch=4          # results/engravers.md
"""
import argparse
import collections
import json
import os
import sys
import time

import numpy as np

import prepare as P  # data/m21/prepare.py; importing it puts the repo and data/ on sys.path
import engrave_lilypond  # noqa: E402  (data/)
import engravers  # noqa: E402  (data/)




def bench(n=200, seed=0, batch=4, which=engravers.ENGRAVERS, save=None):
    """draw the same n real excerpts (music21's folk tunes, cut as data/m21/prepare.py cuts them) with
    each engraver -> {engraver: dict(excerpts, passed, reasons, cpu_s_per_excerpt, wall_s_per_excerpt)}.
    CPU time counts the engraver's own processes (abcm2ps, musicxml2ly, lilypond) too. save: a folder
    for the first 3 images of each engraver."""
    items = []
    for src, rel, idx, text in P.select_tunes(P.list_tunes(P.ABC_SOURCES), n, seed):
        try:
            measures = P.score_to_measures(P.parse_abc(text))
        except Exception:
            continue
        for a, b in P.choose_excerpts(measures, np.random.default_rng([seed, idx]), 1):
            ex = [dict(m, events=[dict(e) for e in m['events']]) for m in measures[a:b]]
            P.mark_ties(ex)
            items.append((P.write_excerpt(ex), ex))
    items = items[:n]
    out = {}
    for eng in which:
        rng = np.random.default_rng(seed)
        layouts = [engravers.sample_layout(eng, rng) for _ in items]
        t0, w0, reasons, passed = os.times(), time.time(), collections.Counter(), 0
        s0 = engrave_lilypond.server_cpu_seconds()
        for i in range(0, len(items), batch):
            chunk = items[i:i + batch]
            got = engravers.engrave_images([c[0] for c in chunk], eng, layouts[i:i + batch], [c[1] for c in chunk])
            for j, g in enumerate(got):
                if isinstance(g, ValueError):
                    reasons[str(g)[:80]] += 1
                else:
                    passed += 1
                    if save and i + j < 3:
                        os.makedirs(save, exist_ok=True)
                        g.save(os.path.join(save, f'{eng}_{i + j}.png'))
        t1 = os.times()
        cpu = (t1.user + t1.system + t1.children_user + t1.children_system) - (t0.user + t0.system + t0.children_user + t0.children_system)
        cpu += engrave_lilypond.server_cpu_seconds() - s0  # the musicxml2ly server, still running
        out[eng] = dict(excerpts=len(items), passed=passed, reasons=dict(reasons.most_common(8)),
                        cpu_s_per_excerpt=round(cpu / max(1, len(items)), 4),
                        wall_s_per_excerpt=round((time.time() - w0) / max(1, len(items)), 4))
    return out


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description='measure the engravers on real excerpts: cost and agreement-check pass rate')
    ap.add_argument('--n', type=int, default=200)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--batch', type=int, default=4, help='excerpts per LilyPond call')
    ap.add_argument('--engravers', default=','.join(engravers.ENGRAVERS))
    ap.add_argument('--save', default=None, help='a folder for the first 3 images of each engraver')
    a = ap.parse_args()
    which = [e for e in a.engravers.split(',') if e]
    bad = [e for e in which if e not in engravers.ENGRAVERS or not engravers.available(e)]
    if bad:
        sys.exit(f'error: unknown or not installed engraver(s) {bad}')
    print(json.dumps(bench(a.n, a.seed, a.batch, which, a.save), indent=1))
