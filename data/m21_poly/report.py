"""
data/m21_poly/report.py: what a prepared polyphonic corpus holds, and whether its labels are right.
    corpus_stats   excerpts per kind and split, staves/voices, tokens and characters per label, image sizes
    label_check    label -> abc2xml -> music21 against music21's reading of the source score, note by note
    plot_kinds     one excerpt of each kind with its label, as a PNG
Run through prepare.py: --stats, --label_check=N, --plot=PATH.
"""
import os
import sys
from collections import Counter
from fractions import Fraction

import numpy as np

from data import Tokenizer, load_split
from voices import label_to_musicxml, read_musicxml

HERE = os.path.dirname(os.path.abspath(__file__))
for _p in (os.path.dirname(os.path.dirname(HERE)), os.path.dirname(HERE), HERE):  # repo, data/, this folder
    if _p not in sys.path:
        sys.path.insert(0, _p)


def corpus_stats(data_dir):
    import datasets
    load_split(data_dir, 'train')  # a broken file: one line naming it
    dd = datasets.load_from_disk(data_dir)
    tok = Tokenizer(os.path.join(data_dir, 'tokenizer.model'))
    out = {}
    for sp in dd:
        cols = dd[sp].select_columns(['transcription', 'kind', 'n_staves', 'n_voices', 'tune_id'])
        texts, kinds, pieces = cols['transcription'], cols['kind'], cols['tune_id']
        n_tok = np.array([len(tok.encode(t)) for t in texts] or [0])
        sizes = np.array([im.size for im in dd[sp].select(range(min(300, len(texts))))['image']] or [(0, 0)])
        per_kind = {}
        for k in sorted(set(kinds)):
            idx = [i for i, x in enumerate(kinds) if x == k]
            per_kind[k] = dict(excerpts=len(idx), pieces=len({pieces[i] for i in idx}),
                               staves=dict(Counter(cols['n_staves'][i] for i in idx)),
                               voices=dict(Counter(cols['n_voices'][i] for i in idx)),
                               tokens_mean=round(float(n_tok[idx].mean()), 1), tokens_p95=int(np.percentile(n_tok[idx], 95)),
                               chars_mean=round(float(np.mean([len(texts[i]) for i in idx])), 1))
        out[sp] = dict(excerpts=len(texts), pieces=len(set(pieces)), kinds=per_kind,
                       sources=dict(Counter(dd[sp]['source'])),
                       tokens=dict(mean=round(float(n_tok.mean()), 1), p50=int(np.median(n_tok)), p95=int(np.percentile(n_tok, 95)),
                                   max=int(n_tok.max())),
                       image_height=dict(mean=round(float(sizes[:, 1].mean()), 1), min=int(sizes[:, 1].min()), max=int(sizes[:, 1].max())),
                       image_width=dict(mean=round(float(sizes[:, 0].mean()), 1), min=int(sizes[:, 0].min()), max=int(sizes[:, 0].max())))
    out['vocab_size'] = tok.vocab_size
    return out


def _staff_notes(score, a, b):
    """music21 score -> per staff (part or PartStaff), the sorted notes of measures a..b-1 as
    (bar in the window, offset in the bar, MIDI pitch, quarter length); chords give one entry per
    pitch, grace notes none (the labels leave them out)."""
    from music21 import stream
    out = []
    for part in score.parts:
        ms = list(part.getElementsByClass(stream.Measure))[a:b]
        notes = []
        for k, m in enumerate(ms):
            for n in m.recurse().notes:
                if n.duration.isGrace or n.duration.quarterLength == 0:
                    continue
                off = Fraction(n.getOffsetInHierarchy(m)).limit_denominator(96)
                ql = Fraction(n.duration.quarterLength).limit_denominator(96)
                for p in n.pitches:
                    notes.append((k, off, p.midi, ql))
        out.append(sorted(notes))
    return out


def label_check(data_dir, n=500, split='train', seed=0):
    """n excerpts of the corpus: is the label, read by abc2xml and music21, the source excerpt as music21
    reads the source file? -> dict(checked, equal, examples of differences)."""
    import datasets
    import music21
    ds = datasets.load_from_disk(data_dir)[split].select_columns(['transcription', 'tune_id', 'bars', 'staff_map', 'kind'])
    order = np.random.default_rng(seed).permutation(len(ds))[:n]
    order = sorted(order.tolist(), key=lambda i: ds[i]['tune_id'])  # one parse per source piece
    root = os.path.dirname(music21.corpus.__file__)
    sources, equal, diffs, per_kind = {}, 0, [], Counter()
    for i in order:
        r = ds[int(i)]
        if r['tune_id'] not in sources:
            sources.clear()  # sorted by piece: keep only the current one in memory
            path = os.path.join(root, r['tune_id'])
            sources[r['tune_id']] = music21.converter.parse(read_musicxml(path) if path.endswith('.krn') else path)
        a, b = map(int, r['bars'].split('-'))
        src = _staff_notes(sources[r['tune_id']], a, b)
        want = [sorted(x for s in grp.split('+') for x in src[int(s) - 1]) for grp in r['staff_map'].split(',')]
        got = _staff_notes(music21.converter.parse(label_to_musicxml(r['transcription']), format='musicxml'), 0, b - a)
        ok = got == want
        equal += ok
        per_kind[(r['kind'], ok)] += 1
        if not ok and len(diffs) < 5:
            diffs.append(dict(tune_id=r['tune_id'], bars=r['bars'], kind=r['kind'],
                              first_difference=next(([j, str(g[:3]), str(w[:3])] for j, (g, w) in enumerate(zip(got, want)) if g != w),
                                                    f'{len(got)} staves vs {len(want)}')))
    kinds = sorted({k for k, _ in per_kind})
    return dict(split=split, checked=len(order), equal=equal, share_equal=round(equal / max(1, len(order)), 4),
                by_kind={k: dict(checked=per_kind[(k, True)] + per_kind[(k, False)], equal=per_kind[(k, True)]) for k in kinds},
                differences=diffs)


def plot_kinds(data_dir, path, split='train'):
    """one excerpt of each kind (a, b, c) with its label beside it."""
    import datasets
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    ds = datasets.load_from_disk(data_dir)[split]
    kinds = ds['kind']
    rng = np.random.default_rng(1)
    picks = [int(rng.choice([i for i, k in enumerate(kinds) if k == want])) for want in ('a', 'b', 'c') if want in kinds]
    fig, axes = plt.subplots(len(picks), 2, figsize=(16, 4.2 * len(picks)), gridspec_kw=dict(width_ratios=(3, 2)))
    for (ax_im, ax_tx), i in zip(np.atleast_2d(axes), picks):
        r = ds[i]
        ax_im.imshow(r['image'], cmap='gray', vmin=0, vmax=255)
        ax_im.set_title(f"kind {r['kind']}: {r['tune_id']} bars {r['bars']}, {r['font']}, {r['image'].size[0]}x{r['image'].size[1]} px",
                        fontsize=9, loc='left')
        ax_im.axis('off')
        ax_tx.text(0, 1, r['transcription'], family='monospace', fontsize=7.5, va='top', wrap=True)
        ax_tx.axis('off')
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
