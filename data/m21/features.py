"""
data/m21/features.py: which notational features a canonical label holds (chords, grace notes, clefs, ledger
lines, keys with many accidentals, tuplets, ...), read from the label text alone, and their shares in a
prepared corpus, per split and per source. The same function can split a test set's SER by feature.

    python data/m21/features.py data/m21/quick            # JSON: shares per split and per source
"""
import json
import os
import re
import sys

from transpose import STAFF, STEPS  # data/m21/transpose.py: this folder is on sys.path (run, or imported by prepare.py)

# what --stats reports, in this order
FEATURES = ('chord', 'grace', 'tuplet', 'tie', 'clef_bass', 'clef_alto', 'clef_tenor', 'ledger2', 'ledger3',
            'key5', 'no_meter', 'n16', 'n32', 'dotted', 'double_dot', 'rest', 'rest_short')
KEYS5 = {'B', 'F#', 'C#', 'Db', 'Gb', 'Cb'}  # 5-7 sharps or flats
_NOTE = re.compile(r"[_^=]*([A-Ga-g])([,']*)(\d*)(/*)(\d*)")
_REST = re.compile(r"z(\d*)(/*)(\d*)")


def _length(num, slashes, den):
    """ABC length suffix parts -> (numerator, denominator) in L units (1/8)."""
    n = int(num) if num else 1
    d = (int(den) if den else 2 ** len(slashes)) if slashes else 1
    return n, d


def _eighths(n, d):
    return n / d


def label_features(label):
    """canonical ABC label -> {feature: bool} for FEATURES. ledger2/ledger3: some note (grace notes too)
    needs at least 2/3 ledger lines on the label's clef; key5: 5-7 sharps or flats; n16/n32: a 16th/32nd
    note or rest; dotted/double_dot: a dotted/double-dotted note or rest; rest_short: a rest of a 16th or shorter."""
    lines = label.split('\n')
    fields = {ln[0]: ln[2:].strip() for ln in lines[:-1] if len(ln) > 1 and ln[1] == ':'}
    body = lines[-1]
    key = fields.get('K', 'C').split()
    clef = next((w.split('=', 1)[1] for w in key[1:] if w.startswith('clef=')), 'treble')
    bottom, top = STAFF.get(clef, STAFF['treble'])
    music = re.sub(r'\[[A-Za-z]:[^\]]*\]', '', body)  # inline fields are not chords
    ledgers, lengths = 0, []
    for m in _NOTE.finditer(music):
        letter, marks = m.group(1), m.group(2)
        idx = STEPS.index(letter.upper()) + 7 * (4 if letter.isupper() else 5) + 7 * (marks.count("'") - marks.count(','))
        ledgers = max(ledgers, (bottom - idx) // 2, (idx - top) // 2)
        lengths.append(_length(m.group(3), m.group(4), m.group(5)))
    rests = [_length(*r.groups()) for r in _REST.finditer(music)]
    return dict(
        chord=bool(re.search(r'\[[_^=]*[A-Ga-g]', music)),
        grace='{' in music,
        tuplet='(3' in music,
        tie='-' in music,
        clef_bass=clef == 'bass', clef_alto=clef == 'alto', clef_tenor=clef == 'tenor',
        ledger2=ledgers >= 2, ledger3=ledgers >= 3,
        key5=key[0] in KEYS5 if key else False,
        no_meter='M' not in fields,
        n16=any(_eighths(*x) in (0.5, 0.75, 0.875) for x in lengths + rests),  # 16th, dotted, double-dotted
        n32=any(_eighths(*x) in (0.25, 0.375) for x in lengths + rests),
        dotted=any(n == 3 for n, _ in lengths + rests),
        double_dot=any(n == 7 for n, _ in lengths + rests),
        rest=bool(rests),
        rest_short=any(_eighths(*x) < 1 for x in rests),
    )


def feature_shares(labels):
    """-> {feature: share of labels that have it}, rounded to 4 places (0 for no labels)."""
    counts = dict.fromkeys(FEATURES, 0)
    for t in labels:
        for k, v in label_features(t).items():
            counts[k] += v
    return {k: round(c / max(1, len(labels)), 4) for k, c in counts.items()}


def corpus_features(data_dir):
    """feature shares of a prepared corpus per split, and of its train split per source kind (the part of
    `source` before ':': 'part', 'transposed'; 'synth'; the plain folk collections are 'folk')."""
    import datasets
    dd = datasets.load_from_disk(data_dir)
    out = {}
    for sp in dd:
        out[sp] = dict(excerpts=len(dd[sp]), **feature_shares(dd[sp]['transcription']))
    by = {}
    for t, s in zip(dd['train']['transcription'], dd['train']['source']):
        by.setdefault(s.split(':')[0] if ':' in s else s if s == 'synth' else 'folk', []).append(t)
    out['train_by_source'] = {k: dict(excerpts=len(v), **feature_shares(v)) for k, v in sorted(by.items())}
    return out


if __name__ == '__main__':
    if len(sys.argv) != 2 or not os.path.isdir(sys.argv[1]):
        sys.exit('usage: python data/m21/features.py <prepared corpus dir>')
    print(json.dumps(corpus_features(sys.argv[1]), indent=1))
