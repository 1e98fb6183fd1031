"""
data/m21/synth.py: label-first synthetic lines for what real tunes rarely hold: ledger lines three deep
above and below the staff, 2-4-note chords, grace groups, triplets (eighth and 16th), ties, rests of every
value, dotted and double-dotted rhythms, any of the 15 key signatures, all four clefs.

A line is made as canonical.py's measures of events (the form score_to_measures gives for a real tune), so
the same writer turns it into the canonical label and the same agreement check proves that verovio drew
what the label says. Rhythms follow the beat: a note of a beat or longer starts on a beat, a shorter one
stays inside its beat, so beams and spacing look like engraved music; pitches are a random walk in the
key, with chromatic notes, and excursions to the ledger lines.
"""
from fractions import Fraction

from canonical import key_alters, mark_ties, write_excerpt
from features import label_features
from transpose import STAFF, STEPS

F = Fraction
# written value in eighths -> (type, dots): every value from the whole note to the 32nd, dotted, double-dotted
VALUE = {F(8): ('whole', 0), F(7): ('half', 2), F(6): ('half', 1), F(4): ('half', 0), F(7, 2): ('quarter', 2),
         F(3): ('quarter', 1), F(2): ('quarter', 0), F(7, 4): ('eighth', 2), F(3, 2): ('eighth', 1), F(1): ('eighth', 0),
         F(3, 4): ('16th', 1), F(1, 2): ('16th', 0), F(1, 4): ('32nd', 0)}
T8, T16 = ('t', F(2, 3), 'eighth'), ('t', F(1, 3), '16th')  # triplet notes: three in the time of two
h, q, e = F(1, 2), F(1, 4), F(3, 4)
# rhythm cells as engravers group them: (values in eighths, weight, the feature that boosts it or None).
# one beat of a simple meter (a quarter):
SIMPLE = [((2,), 6, None), ((1, 1), 8, None), ((F(3, 2), h), 2, 'dots'), ((1, h, h), 3, None), ((h, h, 1), 3, None),
          ((h,) * 4, 3, None), ((F(7, 4), q), 1, 'dots'), ((e, q, h, h), 1, 'dots'), ((q,) * 8, 0.4, None),
          ((h, h, q, q, q, q), 0.8, None), ((q, q, h, 1), 0.6, None), ((T8,) * 3, 1.5, 'tuplet'),
          ((T16,) * 3 + (1,), 0.7, 'tuplet'), ((1,) + (T16,) * 3, 0.7, 'tuplet')]
# one beat of a compound meter (a dotted quarter):
COMPOUND = [((3,), 5, None), ((2, 1), 6, None), ((1, 1, 1), 8, None), ((F(3, 2), h, 1), 3, 'dots'), ((1, 2), 2, None),
            ((h,) * 6, 1.5, None), ((1, h, h, 1), 2, None), ((h, h, 1, 1), 2, None), ((e, q, 1, 1), 1, 'dots'),
            ((q,) * 4 + (1, 1), 0.4, None), ((F(7, 4), q, 1), 0.6, 'dots')]
# several beats from a beat start: (values, weight, feature, beats it takes)
SIMPLE_LONG = [((4,), 4, None, 2), ((3, 1), 2, 'dots', 2), ((F(7, 2), h), 1, 'dots', 2), ((6,), 1.5, None, 3),
               ((7, 1), 0.6, 'dots', 4), ((8,), 1, None, 4)]
COMPOUND_LONG = [((6,), 2, None, 2), ((4, 2), 0.6, None, 2), ((F(7, 2), h, 2), 0.3, 'dots', 2)]
METERS = ['4/4', '3/4', '2/4', '6/8', '3/8', '9/8', '12/8', 'C', 'C|', '2/2', '3/2']
CLEFS = ['treble', 'bass', 'alto', 'tenor']
CLEF_P = [0.35, 0.35, 0.15, 0.15]
FEATURES = ('ledger', 'chord', 'grace', 'tuplet', 'tie', 'rest', 'dots')


def meter_units(meter):
    """meter -> (measure length, beat length) in eighths; compound meters beat in dotted quarters."""
    if meter in ('C', 'C|'):
        return Fraction(8), Fraction(2)
    n, d = (int(x) for x in meter.split('/'))
    length = Fraction(8 * n, d)
    return length, Fraction(3) if d == 8 and n % 3 == 0 else Fraction(2)


def rhythm(length, beat, rng, want):
    """one measure -> list of ('n'|'t', eighths, type, dots): beat-sized cells (or a long value over several
    beats from a beat start), dotted and triplet cells boosted when their feature is wanted and triplets only
    then; 't' is a note of a triplet."""
    compound = beat == 3
    out, pos = [], Fraction(0)
    while pos < length:
        beats_left = int((length - pos) // beat)
        cand = [(c, w, f, 1) for c, w, f in (COMPOUND if compound else SIMPLE)]
        cand += [c for c in (COMPOUND_LONG if compound else SIMPLE_LONG) if c[3] <= beats_left]
        cand = [c for c in cand if c[2] != 'tuplet' or 'tuplet' in want]
        w = [wt * (4 if f in want else 0.3 if f == 'dots' else 1) for _, wt, f, _ in cand]
        cells, _, _, n = cand[int(rng.choice(len(cand), p=[x / sum(w) for x in w]))]
        for v in cells:
            if isinstance(v, tuple):
                out.append(v + (0,))
            else:
                t, d = VALUE[Fraction(v)]
                out.append(('n', Fraction(v), t, d))
        pos += n * beat
    return out


def _walk(idx, lo, hi, rng):
    """the next diatonic index: mostly steps and small leaps, kept inside [lo, hi]."""
    nxt = idx + int(rng.choice([-4, -3, -2, -1, 1, 2, 3, 4, 0], p=[.04, .08, .15, .2, .2, .15, .08, .04, .06]))
    return min(hi, max(lo, nxt))


def _pitch(idx, alters, rng, chromatic):
    step, octave = STEPS[idx % 7], idx // 7
    a = alters.get(step, 0)
    if rng.random() < chromatic:
        a = max(-2, min(2, a + int(rng.choice([-1, 1]))))
    return (step, octave, a)


# a feature wanted -> the label feature (features.label_features) that proves the line holds it
PROOF = {'ledger': ('ledger3',), 'chord': ('chord',), 'grace': ('grace',), 'tuplet': ('tuplet',), 'tie': ('tie',),
         'rest': ('rest',), 'dots': ('dotted', 'double_dot')}


def synth_line(rng, n_measures=None, want=None, max_events=32, tries=30):
    """-> (measures, want): a random line in canonical.py's measure form (2-4 measures, one clef, key and
    meter) and the set of features (FEATURES) it holds: each drawn with probability 0.45, or `want`. A
    line is drawn again (up to `tries` times) until its label shows every wanted feature: ledger lines 3
    deep, a chord, a grace group, a triplet, a tie, a rest, a dotted or double-dotted value."""
    if want is None:
        want = {f for f in FEATURES if rng.random() < 0.45}
    for _ in range(tries):
        measures = _line(rng, n_measures, want, max_events)
        ex = [dict(m, events=[dict(e) for e in m['events']]) for m in measures]
        mark_ties(ex)
        got = label_features(write_excerpt(ex))
        if all(any(got[p] for p in PROOF[f]) for f in want):
            return measures, want
    raise ValueError(f'no line with {sorted(want)} in {tries} tries')


def _line(rng, n_measures, want, max_events):
    """one draw of synth_line."""
    clef = CLEFS[int(rng.choice(len(CLEFS), p=CLEF_P))]
    sharps = int(rng.integers(-7, 8))
    meter = METERS[int(rng.integers(len(METERS)))]
    length, beat = meter_units(meter)
    bottom, top = STAFF[clef]
    deep = 6 if 'ledger' in want else 2  # 3 ledger lines are 6 diatonic steps past the outer line
    lo, hi = max(7, bottom - deep), min(55, top + deep)
    alters = key_alters(sharps)
    idx = int(rng.integers(bottom, top + 1))
    n_measures = n_measures or int(rng.integers(2, 5))
    measures, n_events, prev = [], 0, None
    excursion = 0  # notes left of a run out to the ledger lines
    for mi in range(n_measures):
        for _ in range(20):  # a measure that would pass max_events is drawn again
            cells = rhythm(length, beat, rng, want)
            if n_events + len(cells) <= max_events or mi < 2:
                break
        else:
            break
        events, pos = [], Fraction(0)
        for ci, (kind, u, t, d) in enumerate(cells):
            in_tuplet = kind == 't'
            rest = not in_tuplet and rng.random() < (0.25 if 'rest' in want else 0.06)
            if 'ledger' in want and excursion == 0 and rng.random() < 0.15:
                excursion = int(rng.integers(2, 5))
                idx = int(rng.choice([lo + int(rng.integers(0, 2)), hi - int(rng.integers(0, 2))]))
            else:
                idx = _walk(idx, lo if excursion else max(lo, bottom - 3), hi if excursion else min(hi, top + 3), rng)
            excursion = max(0, excursion - 1)
            tie = (not rest and prev is not None and len(prev['pitches']) == 1 and not in_tuplet and not prev['tuplet']
                   and 'tie' in want and rng.random() < 0.25)  # single notes: verovio ties each note of a chord
            if tie:
                pitches = list(prev['pitches'])
                prev['tie_start'] = True
            elif rest:
                pitches = []
            else:
                pitches = [_pitch(idx, alters, rng, 0.08)]
                if 'chord' in want and not in_tuplet and rng.random() < 0.35:
                    top_i = idx
                    for _ in range(int(rng.integers(1, 4))):  # 2-4 notes, thirds to fifths apart
                        top_i += int(rng.choice([2, 2, 3, 4]))
                        if top_i > hi:
                            break
                        pitches.append(_pitch(top_i, alters, rng, 0.0))
            if not rest and not tie and 'grace' in want and not in_tuplet and len(pitches) == 1 and rng.random() < 0.2:
                g_n = int(rng.integers(1, 5))
                g_t = 'eighth' if g_n == 1 and rng.random() < 0.5 else '16th'
                g_idx = idx + int(rng.choice([-1, 1])) * int(rng.integers(1, 3))
                for gi in range(g_n):
                    gp = min(hi, max(lo, g_idx + (gi if g_idx < idx else -gi)))
                    events.append(dict(rest=False, pitches=[_pitch(gp, alters, rng, 0.0)], type=g_t, dots=0, grace=True,
                                       tuplet=0, tie_start=False, start=pos / 2, qlen=Fraction(0)))
            e = dict(rest=rest, pitches=pitches, type=t, dots=d, grace=False, tuplet=3 if in_tuplet else 0,
                     tie_start=False, start=pos / 2, qlen=u / 2)  # offsets in quarters, as music21 gives them
            events.append(e)
            prev = e
            pos += u
        n_events += len(cells)
        measures.append(dict(ctx=(clef, sharps, meter), events=events, ok=True, left='', right='|',
                             offset0=Fraction(0)))
    measures[-1]['right'] = str(rng.choice(['|', '|', '||', '|]', ':|']))
    if rng.random() < 0.1:
        measures[0]['left'] = '|:'
    return measures
