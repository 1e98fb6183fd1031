"""
tests/test_sources.py: the m21 corpus' sources beyond the folk tunes (data/m21/sources.py, parts.py,
transpose.py, synth.py, features.py): real score parts, transposition into all 15 keys, synthetic lines,
lines without a meter; each drawn by verovio from its label and proven by the agreement check.
"""
import importlib.util
import os
import re
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _p in (os.path.join(ROOT, 'data'), os.path.join(ROOT, 'data', 'm21')):
    if _p not in sys.path:
        sys.path.insert(0, _p)
spec = importlib.util.spec_from_file_location('m21_prepare', os.path.join(ROOT, 'data', 'm21', 'prepare.py'))
P = importlib.util.module_from_spec(spec)
spec.loader.exec_module(P)
import canonical  # noqa: E402
import engrave  # noqa: E402
import features  # noqa: E402
import parts  # noqa: E402
import sources  # noqa: E402
import synth  # noqa: E402
import transpose as tr  # noqa: E402

LAYOUT = dict(font='Leipzig', scale=100, spacingLinear=0.25, spacingNonLinear=0.6)
TUNE = ('X:1\nM:6/8\nL:1/8\nK:D\nA | d2 e fed | c2 d e3 | f/g/a f gfe | (3efe d c2 A :|\n')


def _label(measures):
    ex = [dict(m, events=[dict(e) for e in m['events']]) for m in measures]
    canonical.mark_ties(ex)
    return canonical.write_excerpt(ex), ex


def _drawn(abc, ex, no_meter=False):
    svg, mei = engrave.engrave(abc, LAYOUT['font'], LAYOUT)
    sources.check(mei, svg, ex, no_meter)
    return svg, mei


def test_chorale_parts_become_checked_labels():
    """bwv66.6: its four voices, each a monophonic line; the tenor's treble-8 is drawn in a clef the label names."""
    got = parts.piece_parts('bach/bwv66.6.mxl')
    assert [n for n, _ in got] == ['1:Soprano', '2:Alto', '3:Tenor', '4:Bass']
    samples, skips = sources.process_part(dict(src='bach', rel='bach/bwv66.6.mxl', seed=1337, excerpts_per_part=2,
                                               no_meter_share=0.0))
    assert not any('mismatch' in k for k in skips), skips
    assert {s['tune_id'] for s in samples} == {f'bach/bwv66.6.mxl#{n}' for n, _ in got}
    assert all(s['source'] == 'part:bach' and s['transcription'].startswith('M:C\nL:1/8\nK:A') for s in samples)
    bass = [s['transcription'] for s in samples if s['tune_id'].endswith('Bass')]
    assert bass and all('clef=bass' in t for t in bass)
    tenor_clef = {re.search(r'K:A( clef=\w+)?', s['transcription']).group(1) for s in samples if 'Tenor' in s['tune_id']}
    assert len(tenor_clef) == 1 and None not in tenor_clef  # one clef for the part, and not treble
    # the part's split is the polyphonic corpus' split of the same piece
    spec2 = importlib.util.spec_from_file_location('poly_prepare', os.path.join(ROOT, 'data', 'm21_poly', 'prepare.py'))
    poly = importlib.util.module_from_spec(spec2)
    spec2.loader.exec_module(poly)
    for rel in ('bach/bwv66.6.mxl', 'palestrina/Agnus_15.krn', 'mozart/k156/movement1.mxl'):
        assert parts.split_of(rel) == poly.split_of(rel)


@pytest.mark.parametrize('clef,line', [('alto', '3'), ('tenor', '4')])
def test_alto_and_tenor_clef_lines_round_trip(clef, line):
    label = f'M:3/4\nL:1/8\nK:Bb clef={clef}\nC,2 D,E, F,2 | B,4 A,G, | F,6 |]'
    measures = sources.label_to_measures(label)
    again, ex = _label(measures)
    assert again == label
    svg, mei = _drawn(again, ex)
    assert f'shape="C" line="{line}"' in mei
    # a different clef in the label is caught by the check
    other, _ = _label([dict(m, ctx=('treble',) + m['ctx'][1:]) for m in measures])
    svg, mei = engrave.engrave(other, 'Leipzig', LAYOUT)
    with pytest.raises(ValueError, match='clef/key/meter'):
        sources.check(mei, svg, ex, False)


def _notes(measures):
    """(semitone, type, dots, tuplet) of every note and rest, in order."""
    return [(tr.semitone(e['pitches'][0]) if e['pitches'] else None, e['type'], e['dots'], e['tuplet'])
            for m in measures for e in m['events']]


def test_transposition_into_all_15_keys_keeps_intervals_and_rhythm():
    measures = canonical.score_to_measures(canonical.parse_abc(TUNE))
    base = _notes(measures)
    for to in range(-7, 8):
        moved = tr.transpose_measures(measures, to, octaves=-1 if to % 2 else 0)
        label, ex = _label(moved)
        assert label.split('\n')[2] == f'K:{engrave.MAJOR[to]}'
        back = _notes(sources.label_to_measures(label))  # the label, read back by music21
        assert [b[1:] for b in back] == [b[1:] for b in base]  # rhythm: types, dots, triplets
        shift = {b[0] - a[0] for a, b in zip(base, back) if a[0] is not None}
        assert len(shift) == 1  # every interval kept
        assert shift.pop() == tr.key_interval(2, to, -1 if to % 2 else 0)[1]
        _drawn(label, ex)  # verovio draws the signature the label says (the check compares keysig)
    # F# is the third of D major: C# in A major (a fourth down, the nearer way), Bb in Gb major (a
    # diminished fourth up), F# two octaves down in D
    assert tr.transpose_pitch(('F', 5, 1), *tr.key_interval(2, 3)) == ('C', 5, 1)
    assert tr.transpose_pitch(('F', 5, 1), *tr.key_interval(2, -6)) == ('B', 5, -1)
    assert tr.transpose_pitch(('F', 5, 1), *tr.key_interval(2, 2, -2)) == ('F', 3, 1)


def test_octave_shift_picks_the_clef_that_fits():
    measures = canonical.score_to_measures(canonical.parse_abc(TUNE))
    lo, hi = tr.pitch_range(measures)
    assert tr.fit_clef(lo, hi) == 'treble'
    assert tr.fit_clef(lo - 14, hi - 14) == 'bass'  # two octaves down: bass clef, not ledger lines
    assert tr.ledger_lines(lo - 14, hi - 14, 'bass') <= 1 and tr.ledger_lines(lo - 14, hi - 14, 'treble') >= 5
    low = tr.transpose_measures(measures, 2, -2, 'bass')
    label, ex = _label(low)
    assert 'clef=bass' in label and 'A,, | D,2 E, F,E,D, |' in label  # A4 D5 -> A2 D3
    _drawn(label, ex)
    rng = np.random.default_rng(0)
    clefs = {sources.transposer([dict(m) for m in measures], rng)[0]['ctx'][0] for _ in range(40)}
    assert {'treble', 'bass'} <= clefs


def test_synthetic_lines_pass_the_check_and_hold_their_features():
    rng = np.random.default_rng(7)
    seen = set()
    for i in range(10):
        want = set(synth.FEATURES) if i < 4 else None  # all at once, then random sets
        measures, want = synth.synth_line(rng, want=want)
        label, ex = _label(measures)
        _drawn(label, ex)
        got = features.label_features(label)
        for f in want:
            assert any(got[p] for p in synth.PROOF[f]), (f, label)
        seen |= {k for k, v in got.items() if v}
    assert {'chord', 'grace', 'tuplet', 'tie', 'ledger3', 'double_dot', 'rest_short', 'key5'} <= seen
    # without a feature asked for, none of the rare ones is made
    for _ in range(5):
        label, _ = _label(synth.synth_line(rng, want=set())[0])
        got = features.label_features(label)
        assert not (got['chord'] or got['grace'] or got['tuplet'] or got['tie'] or got['ledger3']), label


def test_a_line_without_meter():
    from core import metrics
    from inference import musicxml
    measures = canonical.score_to_measures(canonical.parse_abc(TUNE))
    samples, skips = sources.render_windows(measures, [(0, 3)], np.random.default_rng(0), 'x', 'x#0', no_meter_share=1.0)
    assert skips == {} and len(samples) == 1
    label = samples[0]['transcription']
    assert label.startswith('L:1/8\nK:D\n') and 'M:' not in label and features.label_features(label)['no_meter']
    ex = _label(measures[:3])[1]
    svg, mei = engrave.engrave(label, 'Leipzig', LAYOUT)
    assert 'meterSig' not in svg and 'meterSig' not in mei
    with pytest.raises(ValueError, match='clef/key/meter'):  # the check knows a meter was expected otherwise
        canonical.check_agreement(mei, ex)
    # a drawn meter on a no-M: line is caught
    svg_m, mei_m = engrave.engrave('M:6/8\n' + label, 'Leipzig', LAYOUT)
    with pytest.raises(ValueError, match='mismatch'):
        sources.check(mei_m, svg_m, ex, True)
    # the model side reads it: SER counts one symbol less than with M:, MusicXML has no time signature
    with_m = 'M:6/8\n' + label
    assert len(metrics.abc_symbols(with_m)) == len(metrics.abc_symbols(label)) + 1
    # a reading without the meter of a line that shows one costs exactly that one symbol
    assert metrics.score([label], [with_m])['ser'] == pytest.approx(1 / len(metrics.abc_symbols(with_m)))
    xml = musicxml.to_musicxml(label)  # no invented 4/4 (abc2xml's default without M:)
    assert '<time' not in xml and '<key' in xml and xml.count('<measure') == 3
    assert '<time' in musicxml.to_musicxml(with_m)


def test_new_sources_through_prepare(tmp_path):
    out = str(tmp_path / 'mix')
    meta = P.prepare(out, max_tunes=3, seed=1337, num_workers=2, quiet=True, parts=1, part_sources=['bach'],
                     transpose=1.0, synth_share=0.2, no_meter_share=0.3)
    import datasets
    dd = datasets.load_from_disk(out)
    kinds = {s.split(':')[0] for sp in dd for s in dd[sp]['source']}
    assert {'part', 'transposed', 'synth'} <= kinds
    assert meta['skipped'].get('excerpt: label/image mismatch', 0) == 0
    labels = [t for sp in dd for t in dd[sp]['transcription']]
    assert any('M:' not in t for t in labels) and any(t.startswith('M:') for t in labels)
    from data import Tokenizer  # the corpus' tokenizer round-trips a label without M: as any other
    tok = Tokenizer(os.path.join(out, 'tokenizer.model'))
    assert all(tok.decode(tok.encode(t)) == t for t in labels if 'M:' not in t)
    assert meta['parts'] == 1 and meta['synth_share'] == 0.2


def test_without_the_new_options_prepare_is_unchanged(monkeypatch):
    """the folk-only corpus gets exactly the jobs, splits and options it had: the zero values add nothing."""
    calls = []
    monkeypatch.setattr(P.builder, 'build', lambda *a, **k: calls.append((a[1], a[2], a[3])))
    P.prepare('/nonexistent', max_tunes=30, seed=3)
    P.prepare('/nonexistent', max_tunes=30, seed=3, parts=0, transpose=0.0, synth_share=0.0, no_meter_share=0.0,
              excerpts_per_part=5, part_sources=['bach'])
    assert calls[0] == calls[1]
    jobs, splits, options = calls[0]
    assert len(splits) == len(jobs) == 30 and all(isinstance(j, tuple) for j in jobs)
    assert set(options) == {'max_tunes', 'excerpts_per_tune', 'seed', 'no_essen', 'sources', 'version'}
    with pytest.raises(ValueError, match='unknown part source'):
        P.prepare('/nonexistent', max_tunes=30, parts=2, part_sources=['nosuch'])
