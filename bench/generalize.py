"""
bench/generalize.py: the paired generalization test of a reader (issue 24). Every test excerpt of a
corpus prepared with --test_all_engravers is drawn by verovio, LilyPond and abcm2ps; core.degrade gives
the same images printed and scanned (split test_scan). This reads both splits with a checkpoint and
splits the symbol error rate (SER) by engraver x clean/scan, by source group (folk tunes, score parts,
synthetic lines) and by notational feature (data/m21/features.py: chords, grace notes, clefs, ...).

    python -m bench.generalize --out_dir=reader --data_dir=data/m21/all --json=results/generalize/reader.json
    python -m bench.generalize --report results/generalize/*.json --md=results/generalize_tables.md --plot=results/generalize.png

Lines are read in order of width, 32 at a time (inference.pages.Reader, the checkpoint's decoding), so
the seconds per line are a folder's worth of sample.py minus the PNG reading. SER is corpus-level
(core.metrics.score); a cell's 95% interval resamples its excerpts 1,000 times.
"""
import argparse
import glob
import json
import os
import time

import numpy as np

import data
from bench.pages import load_prepare
from core import degrade, metrics
from core.files import atomic_path, atomic_write
from inference import pages
from training import evaluation

ENGRAVERS = ('verovio', 'lilypond', 'abcm2ps')


def engraver_of(font):
    """the font column: verovio's five fonts, or the engraver's own name (data/engravers.py)."""
    return font if font in ENGRAVERS else 'verovio'


def read_split(reader, data_dir, split, n=-1):
    """-> rows (dict per line: engraver, group, label, pred) and seconds spent reading."""
    ds = data.load_split(data_dir, split)
    idx = list(range(len(ds) if n < 0 else min(n, len(ds))))
    ims = [ds[i]['image'].convert('L') for i in idx]
    order = sorted(idx, key=lambda i: ims[i].width / ims[i].height)  # similar widths batch with little padding
    t0 = time.time()
    preds, _ = reader.read([ims[i] for i in order])
    dt = time.time() - t0
    got = dict(zip(order, preds))
    cols = ds.select_columns(['transcription', 'font', 'source'])
    rows = [dict(engraver=engraver_of(cols[i]['font']), group=metrics.source_group(cols[i]['source']),
                 kind=kind_of(cols[i]['source']), label=cols[i]['transcription'], pred=got[i]) for i in idx]
    return rows, dt


def kind_of(source):
    """the source column -> folk (a tune as written), transposed (a tune or part moved to another key,
    octave and clef), part (a score's part as written) or synth (sources.py's synthetic lines)."""
    return source.split(':')[0] if ':' in source else 'synth' if source == 'synth' else 'folk'


def cell(rows, n_boot=1000, seed=0):
    """SER of rows with a bootstrap 95% interval over their labels (an excerpt's drawings stay together)."""
    if not rows:
        return None
    s = metrics.score([r['pred'] for r in rows], [r['label'] for r in rows])
    labels = sorted({r['label'] for r in rows})
    at = {t: i for i, t in enumerate(labels)}
    edits, length = np.zeros(len(labels)), np.zeros(len(labels))
    for r in rows:
        ref = metrics.abc_symbols(r['label'])
        edits[at[r['label']]] += metrics.levenshtein(metrics.abc_symbols(r['pred']), ref) if r['pred'] != r['label'] else 0
        length[at[r['label']]] += len(ref)
    w = np.stack([np.bincount(d, minlength=len(labels))
                  for d in np.random.default_rng(seed).integers(len(labels), size=(n_boot, len(labels)))])
    boot = (w @ edits) / np.maximum(w @ length, 1)
    return dict(ser=s['ser'], exact=s['seq_acc'], n=len(rows),
                ci95=[float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))])


def breakdown(rows_by_split, feature_fn):
    """{split: rows} -> the tables: engraver x split, engraver x group (per split), feature x split."""
    out = dict(engraver={}, group={}, feature={})
    for sp, rows in rows_by_split.items():
        for r in rows:
            r['features'] = [k for k, v in feature_fn(r['label']).items() if v]
        out['engraver'][sp] = {e: cell([r for r in rows if e in ('all', r['engraver'])]) for e in ('all',) + ENGRAVERS}
        kinds = [k for k in ('folk', 'transposed', 'part', 'synth') if any(r['kind'] == k for r in rows)]
        out['group'][sp] = {f'{g}/{e}': cell([r for r in rows if r['kind'] == g and e in ('all', r['engraver'])])
                            for g in kinds for e in ('all',) + ENGRAVERS}
        feats = sorted({f for r in rows for f in r['features']})
        out['feature'][sp] = {f: cell([r for r in rows if f in r['features']]) for f in feats}
    return out


def retable(path, data_dir):
    """recompute a measure() JSON's tables from its .rows.json (no model): after a change to the tables"""
    res, rows = json.load(open(path)), json.load(open(path.replace('.json', '.rows.json')))
    for sp, rs in rows.items():
        src = data.load_split(data_dir, sp)['source']
        for i, r in enumerate(rs):
            r['kind'] = kind_of(src[i])
    held = res['tables'].get('holdout')
    res['tables'] = breakdown(rows, load_prepare().features.label_features)
    if held:
        res['tables']['holdout'] = held
    atomic_write(path, json.dumps(res, indent=1))
    atomic_write(path.replace('.json', '.rows.json'), json.dumps(rows))


def measure(args):
    dd = json.load(open(os.path.join(args.data_dir, 'dataset_dict.json')))
    scan = 'test_scan' if args.preset == 'medium' else f'test_scan_{args.preset}'
    if scan not in dd['splits']:
        print(f"writing {args.data_dir}/{scan} (core.degrade, preset {args.preset})", flush=True)
        degrade.degrade_split(args.data_dir, 'test', args.preset, 0)
    t0 = time.time()
    reader = pages.Reader(args.out_dir, batch_size=32)
    load_s = time.time() - t0
    rows, secs = {}, {}
    for sp in ('test', scan)[:args.splits]:
        rows[sp], secs[sp] = read_split(reader, args.data_dir, sp, args.n)
        print(f"{sp}: {len(rows[sp])} lines in {secs[sp]:.0f} s ({len(rows[sp]) / secs[sp]:.1f} lines/s)", flush=True)
    tables = breakdown(rows, load_prepare().features.label_features)
    held = (reader.meta.get('train_config') or {}).get('holdout_font')
    if held:  # a leave-one-out run: the held-out engraver or source against the rest
        test = rows['test']
        if held in ENGRAVERS:  # paired: only the excerpts every engraver drew (a check may turn one down)
            drawn = {}
            for r in test:
                drawn.setdefault(r['label'], set()).add(r['engraver'])
            test = [r for r in test if drawn[r['label']] == set(ENGRAVERS)]
        ds = type('DS', (), dict(fonts=[r['engraver'] for r in test], groups=[r['group'] for r in test]))()
        tables['holdout'] = evaluation.holdout_scores([(i, r['pred'], r['label'], None) for i, r in enumerate(test)],
                                                      ds, held)
        print(f"held out {held}: unseen/seen SER {tables['holdout']['ratio']}")
    res = dict(out_dir=args.out_dir, data_dir=args.data_dir, preset=args.preset, decode=reader.how, holdout=held,
               load_s=load_s, seconds=secs, tables=tables, lines_per_s={k: len(rows[k]) / v for k, v in secs.items()})
    for sp in rows:
        print(sp, '  '.join(f"{e} {100 * c['ser']:.2f}% (n {c['n']})" for e, c in tables['engraver'][sp].items() if c))
    if args.json:
        atomic_write(args.json, json.dumps(res, indent=1))
        atomic_write(args.json.replace('.json', '.rows.json'), json.dumps(rows))
    return res


def export_samples(data_dir, folder):
    """reader/samples: per engraver, the first test line of each source kind (folk, transposed, part,
    synth), clean and scanned (test_scan: the same excerpts), as <clean|scan>_<engraver>_<kind>.png with
    its label .abc beside it."""
    for sp in ('test', 'test_scan'):
        ds = data.load_split(data_dir, sp)
        keys = [(engraver_of(f), kind_of(s)) for f, s in zip(ds['font'], ds['source'])]
        for e in ENGRAVERS:
            for k in ('folk', 'transposed', 'part', 'synth'):
                i = keys.index((e, k))
                stem = os.path.join(folder, f"{'scan' if sp != 'test' else 'clean'}_{e}_{k}")
                ds[i]['image'].convert('L').save(stem + '.png')
                atomic_write(stem + '.abc', ds[i]['transcription'] + '\n')


def pct(c):
    return '–' if not c else f"{100 * c['ser']:.2f}% [{100 * c['ci95'][0]:.1f}, {100 * c['ci95'][1]:.1f}]"


def report(args):
    """Markdown tables (and a plot) from measure()'s JSON files, one column block per run."""
    runs = [json.load(open(p)) for p in sorted(args.report)]
    lines = []
    for res in runs:
        t = res['tables']
        sps = list(t['engraver'])
        lines += [f"### `{res['out_dir']}` on `{res['data_dir']}` ({res['decode']} decoding)", '',
                  '| engraver | ' + ' | '.join(f'SER {s} [95%]' for s in sps) + ' | scan / clean | lines |',
                  '|---|' + '---:|' * (len(sps) + 2)]
        for e in ('all',) + ENGRAVERS:
            c = [t['engraver'][s].get(e) for s in sps]
            ratio = c[1]['ser'] / max(c[0]['ser'], 1e-9) if len(c) > 1 and c[0] and c[1] else None
            lines.append(f"| {e} | " + ' | '.join(pct(x) for x in c) +
                         f" | {'–' if ratio is None else f'{ratio:.2f}'} | {c[0]['n'] if c[0] else 0} |")
        lines += ['', '| source kind / engraver | ' + ' | '.join(f'SER {s}' for s in sps) + ' | lines |',
                  '|---|' + '---:|' * (len(sps) + 1)]
        for k in t['group'][sps[0]]:
            c = [t['group'][s].get(k) for s in sps]
            if c[0]:
                lines.append(f"| {k} | " + ' | '.join(pct(x) for x in c) + f" | {c[0]['n']} |")
        lines += ['', '| feature (all engravers) | ' + ' | '.join(f'SER {s}' for s in sps) + ' | lines |',
                  '|---|' + '---:|' * (len(sps) + 1)]
        for k in t['feature'][sps[0]]:
            c = [t['feature'][s].get(k) for s in sps]
            lines.append(f"| {k} | " + ' | '.join(pct(x) for x in c) + f" | {c[0]['n']} |")
        h = t.get('holdout')
        if h and 'ratio' in h:
            lines += ['', f"Held out of training: **{res['holdout']}**. Its SER {100 * h['holdout_font']['ser']:.2f}% "
                          f"({h['holdout_font']['n']} lines) against {100 * h['seen_fonts']['ser']:.2f}% on the rest "
                          f"({h['seen_fonts']['n']}): ratio **{h['ratio']['value']:.2f}**, 95% interval "
                          f"[{h['ratio']['ci95'][0]:.2f}, {h['ratio']['ci95'][1]:.2f}] (excerpts resampled)."]
        lines += ['', f"Reading speed: {', '.join(f'{s} {v:.1f} lines/s' for s, v in res['lines_per_s'].items())} "
                      f"(batches of 32, model load {res['load_s']:.1f} s).", '']
    text = '\n'.join(lines)
    print(text)
    if args.md:
        atomic_write(args.md, text + '\n')
    if args.plot:
        plot(runs, args.plot)


def plot(runs, path):
    """test SER per source kind (all engravers), a bar per run and split, on a log scale."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    kinds = ('folk', 'transposed', 'part', 'synth')
    bars = [(os.path.basename(os.path.normpath(r['out_dir'])), sp, r['tables']['group'][sp]) for r in runs
            for sp in r['tables']['group']]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    w = 0.8 / len(bars)
    for j, (name, sp, t) in enumerate(bars):
        ser = [100 * (t.get(f'{k}/all') or {}).get('ser', np.nan) for k in kinds]
        ax.bar(np.arange(len(kinds)) + w * j, ser, w, label=f"{name}, {'scanned' if 'scan' in sp else 'clean'}")
    ax.set_xticks(np.arange(len(kinds)) + 0.4 - w / 2, kinds)
    ax.set_yscale('log')
    ax.set_ylabel('test SER (%), 3 engravers')
    ax.legend(fontsize=8)
    ax.grid(axis='y', alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format='png')


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--out_dir', default='reader')
    ap.add_argument('--data_dir', default='data/m21/all')
    ap.add_argument('--preset', default='medium')
    ap.add_argument('--n', type=int, default=-1, help='first n lines of each split (-1: all)')
    ap.add_argument('--splits', type=int, default=2, help='1: the clean test split only (leave-one-out runs)')
    ap.add_argument('--json', default=None)
    ap.add_argument('--report', nargs='+', default=None, help='measure() JSON files: print (and write) the tables')
    ap.add_argument('--md', default=None)
    ap.add_argument('--plot', default=None)
    ap.add_argument('--export_samples', default=None, help='a folder: write a test line per engraver and source kind there')
    ap.add_argument('--retable', default=None, help="a measure() JSON: recompute its tables from its rows")
    args = ap.parse_args()
    if args.retable:
        return retable(args.retable, args.data_dir)
    if args.export_samples:
        return export_samples(args.data_dir, args.export_samples)
    for path in filter(None, (args.json, args.md, args.plot)):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if args.report:
        args.report = [p for pat in args.report for p in glob.glob(pat) if not p.endswith('.rows.json')]
        return report(args)
    if not os.path.isfile(os.path.join(args.data_dir, 'dataset_dict.json')):
        raise SystemExit(f"error: no prepared corpus in {args.data_dir}; python data/m21/prepare.py --test_all_engravers ...")
    measure(args)


if __name__ == '__main__':
    main()
