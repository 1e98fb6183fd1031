"""
bench/holdout_errors.py: where a held-out-font run's extra errors are. Decodes the paired test split
(prepare.py --test_all_fonts: every excerpt in all five fonts) with a run's best checkpoint and splits
each line's symbol edit distance by the kind of symbol it hit (the M: and K: header fields, notes, bar
lines, ...), for the held-out font and for the seen fonts. The parts add up to the SER's edits, so the
table says which symbols the unseen font's extra SER is made of, and a lever can aim at them.

    python -m bench.holdout_errors out-h3k-strong-1338 data/m21/h3k-mixP2 > results/holdout/h3k-strong-1338/errors.md
"""
import collections
import os
import re
import sys

import torch

import data
from core import metrics
from inference import pages


def kind(s):
    k = metrics._kind(s)
    return s[:2] if k == 'field' else k  # the header fields apart: M:, K:, L:


NOTE = re.compile(r"([_^=]*)([A-Ga-g][,']*)(.*)")


def note_change(r, h):
    """what a substituted note got wrong, first of: its accidental, its pitch, its duration."""
    (ra, rp, _), (ha, hp, _) = NOTE.fullmatch(r).groups(), NOTE.fullmatch(h).groups()
    return 'note (accidental)' if ra != ha else 'note (pitch)' if rp != hp else 'note (duration)'


def edits_by_kind(hyp, ref):
    """Levenshtein alignment of two symbol lists -> Counter {kind: edits}. A substitution or deletion
    counts against the reference symbol's kind, an insertion against the inserted one's; the counts sum
    to metrics.levenshtein(hyp, ref). (A K:D read as K:G is one K: edit, not a K: and a note.) Note
    edits are split further: a note missed, added (in the first bar, where the clef, key and time
    signature are, or later), or its accidental, pitch or duration misread."""
    n, m = len(ref), len(hyp)
    d = [[0] * (m + 1) for _ in range(n + 1)]  # d[i][j]: distance of ref[:i] and hyp[:j]
    for i in range(n + 1):
        d[i][0] = i
    for j in range(m + 1):
        d[0][j] = j
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]))
    first_bar = next((j for j, t in enumerate(hyp) if kind(t) == 'bar'), m)
    out, i, j = collections.Counter(), n, m
    while i or j:  # walk back along one optimal path; between equal ones, a match or a substitution
        # within a kind first, then a deletion or insertion, and a change of kind last
        diag = i and j and d[i][j] == d[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1])
        if diag and (ref[i - 1] == hyp[j - 1] or kind(ref[i - 1]) == kind(hyp[j - 1])):
            if ref[i - 1] != hyp[j - 1]:
                k = kind(ref[i - 1])
                out[note_change(ref[i - 1], hyp[j - 1]) if k == 'note' else k] += 1
            i, j = i - 1, j - 1
        elif i and d[i][j] == d[i - 1][j] + 1:
            k = kind(ref[i - 1])
            out['note (missed)' if k == 'note' else k] += 1
            i -= 1
        elif j and d[i][j] == d[i][j - 1] + 1:
            k = kind(hyp[j - 1])
            out[k if k != 'note' else 'note (added, 1st bar)' if j - 1 < first_bar else 'note (added)'] += 1
            j -= 1
        else:
            k = kind(ref[i - 1])
            out['note (read as another kind)' if k == 'note' else k] += 1
            i, j = i - 1, j - 1
    return out


def main(run, data_dir):
    torch.set_num_threads(int(os.environ.get('THREADS', '2')))
    reader = pages.Reader(run, batch_size=16, decode='attention')
    reader.n_new = reader.model.config.max_seq_len - 1  # as train.py's final eval decodes
    held = reader.meta.get('train_config', {}).get('holdout_font')
    if not held:
        sys.exit(f'error: {run} was not trained with holdout_font=...: nothing is held out')
    ds = data.OMRDataset(data_dir, 'test', reader.tok, img_height=reader.img_height, max_width=reader.max_width)
    items = [ds[i] for i in range(len(ds))]
    ids = reader.decode([it['image'] for it in items])
    tally = {False: collections.Counter(), True: collections.Counter()}  # unseen? -> {kind: edits}
    length = collections.Counter()
    lines = collections.Counter()
    for it, s in zip(items, ids):
        unseen = ds.fonts[it['index']] == held
        ref, hyp = metrics.abc_symbols(it['text']), metrics.abc_symbols(reader.tok.decode(s))
        tally[unseen] += edits_by_kind(hyp, ref)
        length[unseen] += len(ref)
        lines[unseen] += 1
    print(f'{run}: symbol edits by kind, greedy attention decoding, test split of {data_dir}\n')
    print(f'| kind | seen fonts, edits per line (n={lines[False]}) | {held}, edits per line (n={lines[True]}) '
          f'| extra per line | share of the extra |')
    print('|---|---:|---:|---:|---:|')
    seen, unseen = ({k: v / max(lines[u], 1) for k, v in tally[u].items()} for u in (False, True))
    gap = sum(unseen.values()) - sum(seen.values())
    for k in sorted(set(seen) | set(unseen), key=lambda k: seen.get(k, 0) - unseen.get(k, 0)):
        x = unseen.get(k, 0) - seen.get(k, 0)
        share = f'{100 * x / gap:.0f}%' if gap else '–'
        print(f'| {k!r} | {seen.get(k, 0):.3f} | {unseen.get(k, 0):.3f} | {x:+.3f} | {share} |')
    ser = [sum(tally[u].values()) / max(length[u], 1) for u in (False, True)]
    print(f'| all | {sum(seen.values()):.3f} (SER {100 * ser[0]:.1f}%) | {sum(unseen.values()):.3f} '
          f'(SER {100 * ser[1]:.1f}%) | {gap:+.3f} | {"100%" if gap else "–"} |')


if __name__ == '__main__':
    if len(sys.argv) != 3:
        sys.exit('usage: python -m bench.holdout_errors RUN_DIR DATA_DIR')
    try:
        main(*sys.argv[1:])
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f'error: {e}')
