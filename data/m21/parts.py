"""
data/m21/parts.py: single parts of the MusicXML and Humdrum (kern) scores inside music21's corpus as
monophonic lines: Bach chorale voices, string quartet parts, madrigal, Palestrina and trecento voices.
They bring what the folk tunes lack: bass, alto and tenor clefs, wide ranges, 16ths and 32nds, breves.

A part becomes canonical.py's measures of events (score_to_measures, as a folk tune does) and then goes
through the same windows, writer and agreement check (sources.render_windows). Clefs verovio's ABC reader
cannot draw (the tenor voices' treble-8, soprano and baritone C clefs) are replaced by the clef that fits
the part's range (transpose.fit_clef): the label names the clef that is drawn, and pitches stay as sounding.

Splits are by piece, with the hash data/m21_poly uses (sha1 of the corpus path), so a piece lies in the
same split in both corpora and all of its parts lie in one split.
"""
import glob
import hashlib
import os

from canonical import CLEFS, score_to_measures
from transpose import STAFF, diatonic, fit_clef

# music21 corpus folders with scores (as data/m21_poly), grouped for the round-robin selection
PART_SOURCES = ['bach', 'beethoven', 'haydn', 'mozart', 'monteverdi', 'palestrina', 'trecento', 'handel', 'schubert',
                'corelli', 'cpebach', 'luca', 'verdi', 'weber', 'ciconia', 'lusitano']
EXTS = ('.mxl', '.xml', '.musicxml', '.krn')
SPLIT_PCT = (90, 5, 5)


def piece_hash(rel, salt=''):
    return int(hashlib.sha1(f'{salt}{rel}'.encode()).hexdigest()[:12], 16)


def split_of(rel):
    """train/val/test of a score: data/m21_poly/prepare.py's split_of, so both corpora agree."""
    h = piece_hash(rel) % 100
    return 'train' if h < SPLIT_PCT[0] else 'val' if h < SPLIT_PCT[0] + SPLIT_PCT[1] else 'test'


def list_pieces(sources=None):
    """-> [(source folder, corpus path)] of every score file in the folders, deterministic order."""
    import music21
    root = os.path.dirname(music21.corpus.__file__)
    out = []
    for src in sources or PART_SOURCES:
        paths = sorted(p for p in glob.glob(os.path.join(root, src, '**', '*'), recursive=True) if p.endswith(EXTS))
        out += [(src, os.path.relpath(p, root)) for p in paths]
    return out


def select_pieces(pieces, n, seed):
    """n pieces (all if n < 0 or n >= len): round-robin over the folders in a seeded hash order, so the small
    folders (quartets, madrigals) are all in before Palestrina's 1,318 masses fill the rest; stratified so
    that val and test each get their 5% (at least one piece)."""
    if n < 0 or n >= len(pieces):
        return pieces
    out = []
    for want_split, k in (('val', max(1, round(n * SPLIT_PCT[1] / 100))), ('test', max(1, round(n * SPLIT_PCT[2] / 100))),
                          ('train', None)):
        by_src = {}
        for p in sorted(pieces, key=lambda p: piece_hash(p[1], f'parts{seed}')):
            if split_of(p[1]) == want_split:
                by_src.setdefault(p[0], []).append(p)
        k = n - len(out) if k is None else k
        rr = [p for i in range(max((len(v) for v in by_src.values()), default=0)) for v in by_src.values() if i < len(v)
              for p in [v[i]]]
        out += rr[:max(0, k)]
    keep = set(out)
    return [p for p in pieces if p in keep]


def part_measures(part, rng=None):
    """music21 Part -> canonical.py measures; clefs the label cannot name become the clef that fits the
    part's range (with rng, an alto or tenor clef that fits as well wins at times: transpose.fit_clef).
    Raises ValueError (one-line reason) for parts we do not write."""
    from music21 import clef as m21clef
    from music21 import stream
    inst = part.getInstrument(returnDefault=False)
    if inst is not None and inst.transposition is not None and inst.transposition.semitones % 12:
        raise ValueError('transposing instrument')
    ms = list(part.getElementsByClass(stream.Measure))
    odd = [m for m in ms if m.clef is not None and type(m.clef).__name__ not in CLEFS]
    if odd:
        idx = [diatonic((p.step, p.octave, 0)) for n in part.recurse().notes for p in n.pitches if p.octave is not None]
        if not idx:
            raise ValueError('no notes')
        fit = fit_clef(min(idx), max(idx), rng, clefs=tuple(STAFF))
        new = {'treble': m21clef.TrebleClef, 'bass': m21clef.BassClef, 'alto': m21clef.AltoClef, 'tenor': m21clef.TenorClef}[fit]
        for m in odd:
            m.clef = new()
    return score_to_measures(part)


def piece_parts(rel, rng=None):
    """corpus path -> [(part label, measures or the ValueError's reason)] for every part of the score."""
    import music21
    score = music21.converter.parse(os.path.join(os.path.dirname(music21.corpus.__file__), rel))
    out = []
    for i, part in enumerate(score.parts):
        name = (part.partName or part.id or f'part{i + 1}')
        try:
            out.append((f'{i + 1}:{name}', part_measures(part, rng)))
        except ValueError as e:
            out.append((f'{i + 1}:{name}', str(e)))
    return out
