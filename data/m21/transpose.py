"""
data/m21/transpose.py: move a run of measures (canonical.py's events) into another key and octave, and
pick the clef that fits a line's range. Labels stay label-first: the transposed events are written by
canonical.write_excerpt and drawn from that text, so the image is of the transposed music.

Pitches are (step, octave, alter). A key change of d fifths is the interval of d perfect fifths (4 diatonic
steps, 7 semitones each), reduced to the nearest octave (|semitones| <= 6) and then moved by whole octaves:
every pitch keeps its letter distance and its semitone distance to every other pitch, so the key signature
becomes exactly the target's and every accidental follows (F# in G major -> C# in D major).
"""
from fractions import Fraction

STEPS = 'CDEFGAB'
NATURAL = (0, 2, 4, 5, 7, 9, 11)  # semitones of the natural steps above C
# staff lines per clef as diatonic indices (step index + 7 * octave): (bottom line, top line)
STAFF = {'treble': (30, 38), 'bass': (18, 26), 'alto': (24, 32), 'tenor': (22, 30)}  # E4-F5, G2-A3, F3-G4, D3-E4


def diatonic(p):
    """(step, octave, alter) -> diatonic index: C4 = 28, one per line or space."""
    return STEPS.index(p[0]) + 7 * p[1]


def semitone(p):
    return NATURAL[STEPS.index(p[0])] + 12 * p[1] + p[2]


def transpose_pitch(p, steps, semis):
    """move a pitch by an interval of `steps` letters and `semis` semitones (a major third up = (2, 4))."""
    i = diatonic(p) + steps
    step, octave = STEPS[i % 7], i // 7
    alter = semitone(p) + semis - (NATURAL[i % 7] + 12 * octave)
    return (step, octave, alter)


def key_interval(from_sharps, to_sharps, octaves=0):
    """the interval (steps, semitones) that takes the key with from_sharps to the one with to_sharps
    (sharps > 0, flats < 0): d fifths, reduced to the nearest octave, plus `octaves` octaves."""
    d = to_sharps - from_sharps
    steps, semis = 4 * d, 7 * d
    k = round(Fraction(semis, 12))  # the nearest: a tritone either way is fine
    return steps - 7 * k + 7 * octaves, semis - 12 * k + 12 * octaves


def transpose_measures(measures, to_sharps, octaves=0, clef=None):
    """copies of measures (one ctx) in the key with to_sharps, moved by `octaves`, drawn in `clef` (default:
    the measures' own). Raises ValueError when a pitch would need a triple accidental or leave octaves 1-7
    (what canonical.score_to_measures accepts)."""
    old_clef, sharps, meter = measures[0]['ctx']
    steps, semis = key_interval(sharps, to_sharps, octaves)
    out = []
    for m in measures:
        evs = []
        for e in m['events']:
            ps = [transpose_pitch(p, steps, semis) for p in e['pitches']]
            if any(not -2 <= a <= 2 or not 1 <= o <= 7 for _, o, a in ps):
                raise ValueError('transposed out of range')
            evs.append(dict(e, pitches=ps))
        out.append(dict(m, events=evs, ctx=(clef or old_clef, to_sharps, meter)))
    return out


def pitch_range(measures):
    """(lowest, highest) diatonic index of the notes in measures, or None for a line of rests."""
    idx = [diatonic(p) for m in measures for e in m['events'] for p in e['pitches']]
    return (min(idx), max(idx)) if idx else None


def ledger_lines(lo, hi, clef):
    """the most ledger lines a note of the range [lo, hi] needs on this clef's staff (0 if it fits)."""
    bottom, top = STAFF[clef]
    return max(0, (bottom - lo) // 2, (hi - top) // 2)


def fit_clef(lo, hi, rng=None, clefs=('treble', 'bass', 'alto', 'tenor'), c_clef_p=0.3):
    """the clef a copyist would use for the range [lo, hi]: the fewest ledger lines, treble or bass on a tie.
    With rng, an alto or tenor clef that needs no more ledger lines than the best wins with
    probability c_clef_p (C clefs are real but rarer)."""
    need = {c: ledger_lines(lo, hi, c) for c in clefs}
    best = min(need.values())
    plain = [c for c in ('treble', 'bass') if c in need and need[c] == best]
    c_clefs = [c for c in ('alto', 'tenor') if c in need and need[c] <= max(best, 1)]
    if c_clefs and (not plain or (rng is not None and rng.random() < c_clef_p)):
        return c_clefs[int(rng.integers(len(c_clefs)))] if rng is not None else c_clefs[0]
    return plain[0] if plain else min(need, key=need.get)


def random_transposition(measures, rng, max_ledgers=3, octave_choices=(-2, -1, 0, 1)):
    """a random target key (any of the 15 signatures) and octave shift whose range some clef shows with at
    most max_ledgers ledger lines, and that clef -> (to_sharps, octaves, clef); None if no octave fits."""
    _, sharps, _ = measures[0]['ctx']
    to = int(rng.integers(-7, 8))
    rg = pitch_range(measures)
    if rg is None:
        return None
    fits = []
    for o in octave_choices:
        steps, _ = key_interval(sharps, to, o)
        lo, hi = rg[0] + steps, rg[1] + steps
        if lo >= 7 and hi <= 55 and min(ledger_lines(lo, hi, c) for c in STAFF) <= max_ledgers:  # octaves 1-7
            fits.append((o, lo, hi))
    if not fits:
        return None
    o, lo, hi = fits[int(rng.integers(len(fits)))]
    return to, o, fit_clef(lo, hi, rng)
