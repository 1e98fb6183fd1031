"""
tests/test_engravers.py: the three engravers behind data/engravers.py (verovio, LilyPond, abcm2ps) and
prepare.py's --engravers / --test_all_engravers. Real labels from music21's corpus; each engraver's
image must look like verovio's to the pipeline (one staff, staff space 18-27 px, white margin, ink),
and each agreement check must pass on the label drawn and fail on a label changed after drawing.
A test skips only when the engraver's binary is missing (abcm2ps: apt-get install abcm2ps; LilyPond:
pip install lilypond).
"""
import hashlib
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location('m21_prepare', os.path.join(ROOT, 'data', 'm21', 'prepare.py'))
P = importlib.util.module_from_spec(spec)
spec.loader.exec_module(P)
import engravers as E  # noqa: E402  (data/ is on sys.path after prepare.py's import)
import engrave_abcm2ps as A  # noqa: E402
import engrave_lilypond as L  # noqa: E402
import sources as S  # noqa: E402  (data/m21/sources.py)

need = {e: pytest.mark.skipif(not E.available(e), reason=f'{e} is not installed') for e in E.ENGRAVERS}
# a label with a pickup, accidentals, a dotted rhythm, a triplet, a grace note, a chord, a tie and repeats
RICH = 'M:6/8\nL:1/8\nK:D\nE3/2F/G (3ABc {g2} d | [G2B2] A- Acd | _B3 AGF |: e3 z2 :|'


@pytest.fixture(scope='module')
def real():
    """(label, measures) of 4 real excerpts: O'Neill's and Ryan's tunes, as prepare.py cuts them."""
    out = []
    for src, rel, idx, text in P.select_tunes(P.list_tunes(['oneills1850', 'ryansMammoth']), 6, seed=1):
        measures = P.score_to_measures(P.parse_abc(text))
        for a, b in P.choose_excerpts(measures, np.random.default_rng(0), 1):
            ex = [dict(m, events=[dict(e) for e in m['events']]) for m in measures[a:b]]
            P.mark_ties(ex)
            out.append((P.write_excerpt(ex), ex))
    assert len(out) >= 4
    return out[:4]


def looks_like_verovio(img):
    """what the pipeline asks of a training image: grayscale, white margin, black ink, one staff found
    by sample.py's staff finder, a staff space in the training range."""
    from inference import staves
    a = np.asarray(img)
    assert img.mode == 'L' and 100 <= img.height <= 400 and img.width > 2 * img.height
    assert a[0].min() == 255 and a[-1].min() == 255 and a[:, 0].min() == 255 and a.min() < 50
    page = staves.find_staves(img)
    assert staves.is_single_line(page)
    assert 17.5 <= page.staves[0].space <= 27.5, page.staves[0].space


def moved_up(label):
    """the label with its first note a step higher (one letter on), everything else alike."""
    head, body = label.rsplit('\n', 1)
    i = next(i for i, c in enumerate(body) if c in 'ABCDEFGabcdef')
    return head + '\n' + body[:i] + chr(ord(body[i]) + 1) + body[i + 1:]


@need['abcm2ps']
def test_abcm2ps_draws_real_labels_that_agree(real):
    rng = np.random.default_rng(0)
    for label, ex in real + [(RICH, E.label_measures(RICH))]:
        layout = E.sample_layout('abcm2ps', rng)
        svg = A.draw_svg(label, layout)
        A.check_svg(svg, ex)
        img = A.rasterize(svg, layout)
        looks_like_verovio(img)
        assert abs(A.staff_lines(svg)[2][0] - A.staff_lines(svg)[2][4]) > 0
    # the check fails on a label changed after drawing: a pitch, a duration, an accidental, a tie
    label, ex = RICH, E.label_measures(RICH)
    for wrong in (moved_up(label), label.replace('AGF', 'AG2'), label.replace('_B3', 'B3'), label.replace('A- A', 'A A')):
        with pytest.raises(ValueError, match='mismatch'):
            A.check_svg(A.draw_svg(wrong, layout), ex)


@need['abcm2ps']
def test_abcm2ps_meter_digits_are_drawn(real):
    """resvg drops abcm2ps' `font:` shorthand text: the rewrite must keep the meter's digits (and the
    triplet's 3), which are ink the image would lack without them."""
    layout = dict(E.sample_layout('abcm2ps', np.random.default_rng(1)), justify=None, margin=10)
    svg = A.draw_svg(RICH, layout)
    assert A.svg_symbols(svg)['meter'] == '6/8' and A.svg_symbols(svg)['triplets'] == 1
    without = A.re.sub(r'<g style="font:bold[^"]*"[^>]*>.*?</g>', '', svg, flags=A.re.S)
    without = A.re.sub(r'<text style="font:italic[^"]*"[^>]*>3</text>', '', without)
    ink = lambda s: int((np.asarray(A.rasterize(s, layout)) < 128).sum())
    space = layout['space']
    # two digits of two staff spaces each and a small 3: at least a staff space squared of ink
    assert ink(svg) - ink(without) > space * space, (ink(svg), ink(without))
    # and the text goes through resvg as attributes it reads
    assert 'style="font:' not in A.for_resvg(svg, layout) and 'font-weight="bold"' in A.for_resvg(svg, layout)


@need['lilypond']
def test_lilypond_draws_real_labels_that_agree(real):
    rng = np.random.default_rng(0)
    labels = [lb for lb, _ in real[:2]] + [RICH]
    imgs = E.engrave_images(labels, 'lilypond', [E.sample_layout('lilypond', rng) for _ in labels])
    for label, img in zip(labels, imgs):
        assert not isinstance(img, ValueError), (label, img)
        looks_like_verovio(img)
    # the check reads the MusicXML back: a label changed after drawing no longer matches it
    for label in (RICH, real[0][0]):
        xml = L.to_musicxml(L.label_score(label))
        L.check_musicxml(xml, label)
        for wrong in (moved_up(label), label.replace(' | ', ' || ', 1)):
            with pytest.raises(ValueError, match='mismatch'):
                L.check_musicxml(L.to_musicxml(L.label_score(wrong)), label)
    # and LilyPond's own drawing: its bar lines are counted (an incomplete last bar keeps its '|')
    svg = L.draw([real[0][0]], [E.sample_layout('lilypond', rng)], svg_only=True)[0]
    L.check_bars(svg, real[0][0])
    with pytest.raises(ValueError, match='mismatch in bar lines'):
        L.check_bars(svg, real[0][0].replace(' | ', ' || ', 1))
    # the beams are the label's: written apart, two eighths are two groups
    split = RICH.replace('Acd', 'A c d', 1)
    with pytest.raises(ValueError, match='mismatch in beams'):
        L.check_musicxml(L.to_musicxml(L.label_score(split)), RICH)


@need['verovio']
def test_one_interface_for_every_engraver(real):
    label, ex = real[1]
    for eng in E.ENGRAVERS:
        if not E.available(eng):
            continue
        img = E.engrave_image(label, eng, E.sample_layout(eng, np.random.default_rng(2)), ex)
        looks_like_verovio(img)
    # the clef is the label's in every engraver: music21 ignores clef=alto, abcm2ps would pick by range
    alto = 'M:3/4\nL:1/8\nK:A clef=alto\nA,2 CE A=G | A4 z2 | G3/2F/ E2 D2 |]'
    for eng in E.ENGRAVERS:
        if E.available(eng):
            looks_like_verovio(E.engrave_image(alto, eng, E.sample_layout(eng, np.random.default_rng(3))))
    assert A.svg_symbols(A.draw_svg(alto, E.sample_layout('abcm2ps', np.random.default_rng(3))))['clef'] == ('cclef', 4)
    with pytest.raises(ValueError, match='mismatch'):  # verovio's check through the same interface
        E.engrave_image(moved_up(label), 'verovio', E.sample_layout('verovio', np.random.default_rng(2)), ex)
    assert E.parse_shares('verovio:0.6,lilypond:0.2,abcm2ps:0.2') == {'verovio': 0.6, 'lilypond': 0.2, 'abcm2ps': 0.2}
    for bad in ('musescore:1', 'verovio:x', 'verovio:0'):
        with pytest.raises(ValueError):
            E.parse_shares(bad)


TUNE = 'X:1\nM:3/4\nL:1/8\nK:D\n|: FGA2 d2 | c2 B2 A2 | ^G2 A2 =c2 | d6 :|\nz2 f4 | e6 |]\n'


def _job_in(split, opts=None):
    idx = next(i for i in range(1000) if P.split_of('engr/t.abc', i) == split)
    return ('test', 'engr/t.abc', idx, TUNE, 1337, 2) + ((opts,) if opts else ())


def digest(samples):
    h = hashlib.sha1()
    for s in samples:
        h.update(s['image'] + s['transcription'].encode() + s['font'].encode())
    return h.hexdigest()


def test_without_the_options_the_samples_are_unchanged():
    """the default path, byte for byte: this digest was computed with prepare.py before the engravers
    came (verovio 6.4.1, resvg-py 0.5.0)."""
    plain, skips = P.process_tune(_job_in('train'))
    assert skips == {} and len(plain) == 1 and 'engraver' not in plain[0]
    assert digest(plain) == 'cfce97040c5b07b3f269dee7d4ccbd1de8ff761e'
    # all to verovio: the same samples, now saying which engraver drew them
    allv, _ = P.process_tune(_job_in('train', dict(engravers={'verovio': 1.0})))
    assert allv == [dict(s, engraver='verovio') for s in plain]


@need['lilypond']
@need['abcm2ps']
def test_prepare_engravers_and_the_paired_test():
    plain, _ = P.process_tune(_job_in('test'))
    # every excerpt to LilyPond or abcm2ps: the same excerpts (same first measure), other engravers
    train_plain, _ = P.process_tune(_job_in('train'))
    mixed, skips = P.process_tune(_job_in('train', dict(engravers={'lilypond': 0.5, 'abcm2ps': 0.5})))
    assert skips == {} and [s['excerpt'] for s in mixed] == [s['excerpt'] for s in train_plain]
    assert {s['engraver'] for s in mixed} <= {'lilypond', 'abcm2ps'} and all(s['font'] == s['engraver'] for s in mixed)
    # the paired test: each test excerpt by every engraver, one label, and train untouched
    paired, skips = P.process_tune(_job_in('test', dict(test_all_engravers=True)))
    assert skips == {} and len(paired) == 3 * len(plain)
    for s in plain:
        same = [p for p in paired if p['excerpt'] == s['excerpt']]
        assert sorted(p['engraver'] for p in same) == sorted(E.ENGRAVERS)
        assert {p['transcription'] for p in same} == {s['transcription']}
        v = next(p for p in same if p['engraver'] == 'verovio')
        assert v['image'] == s['image'] and v['font'] == s['font']  # verovio's is the default image
    train_paired, _ = P.process_tune(_job_in('train', dict(test_all_engravers=True)))
    assert [dict(s, engraver=None) for s in train_paired] == [dict(s, engraver=None) for s in train_plain]


@need['lilypond']
@need['abcm2ps']
def test_prepare_cli_engravers(tmp_path):
    import datasets
    out = str(tmp_path / 'c')
    P.prepare(out, max_tunes=4, seed=5, num_workers=2, quiet=True, vocab_size=300, sources=['oneills1850'],
              engraver_shares='verovio:0.34,lilypond:0.33,abcm2ps:0.33')
    dd = datasets.load_from_disk(out)
    assert dd['train'].column_names == ['image', 'transcription', 'source', 'tune_id', 'font', 'engraver']
    got = [e for s in dd for e in dd[s]['engraver']]
    assert set(got) == set(E.ENGRAVERS), got
    r = subprocess.run([sys.executable, 'data/m21/prepare.py', '--engravers=musescore:1', '--out_dir=/tmp/never'],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and 'Traceback' not in r.stderr and r.stderr.strip().count('\n') == 0
    assert "unknown engraver 'musescore'" in r.stderr


@need['lilypond']
@need['abcm2ps']
def test_new_sources_take_the_engravers():
    """a synthetic line and a transposed tune (data/m21/sources.py) drawn by the engraver drawn for each
    excerpt; on the test split by every engraver, one label; without the options, verovio's rows as before."""
    job = dict(kind='synth', index=0, seed=3, no_meter_share=0.0)
    plain, _ = S.process_job(job)
    mixed, skips = S.process_job(dict(job, engraving=dict(shares={'lilypond': 0.5, 'abcm2ps': 0.5}, all=False)))
    assert {s['engraver'] for s in mixed} == {'lilypond', 'abcm2ps'} and all(s['font'] == s['engraver'] for s in mixed)
    assert {s['transcription'] for s in mixed} <= {s['transcription'] for s in plain}  # the same lines, other pictures
    assert len(mixed) + sum(skips.values()) >= len(plain) - 1
    paired, _ = S.process_job(dict(job, engraving=dict(shares=None, all=True)))
    for s in plain:
        same = [p for p in paired if p['tune_id'] == s['tune_id']]
        v = next(p for p in same if p['engraver'] == 'verovio')
        assert dict(v, engraver=None) == dict(s, engraver=None)  # verovio's image is the default one
        assert {p['transcription'] for p in same} == {s['transcription']} and len(same) >= 2
    assert {p['engraver'] for p in paired} == set(E.ENGRAVERS)
    # a line without meter stays verovio's (the other checks read the label through music21)
    nm, _ = S.process_job(dict(job, no_meter_share=1.0, engraving=dict(shares={'abcm2ps': 1.0}, all=True)))
    assert nm and all(s['engraver'] == 'verovio' and 'M:' not in s['transcription'] for s in nm)
