"""
tests/test_poly.py: the polyphonic corpus (data/m21_poly): xml2abc's voices -> canonical multi-voice
labels, the agreement check (it passes on real chorales and fails on a changed note or a dropped rest),
a tiny build whose labels equal their source excerpts note by note, and train.py on a mix of corpora.
"""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POLY = os.path.join(ROOT, 'data', 'm21_poly')


def _load(name):
    spec = importlib.util.spec_from_file_location(f'poly_{name}', os.path.join(POLY, f'{name}.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # puts data/ and data/m21_poly on sys.path
    return mod


P = _load('prepare')
import agree  # noqa: E402  (data/m21_poly, on sys.path now)
import voices  # noqa: E402
from engrave import engrave  # noqa: E402

LAYOUT = dict(scale=70, spacingLinear=0.25, spacingNonLinear=0.6)
# a train, a val and a test chorale (split_of hashes the path), and a Haydn quartet movement (train)
PIECES = ['bach/bwv66.6.mxl', 'bach/bwv126.6.mxl', 'bach/bwv253.mxl', 'haydn/opus1no1/movement2.mxl']


def chorale(name='bach/bwv66.6.mxl'):
    import music21
    return voices.split_voices(voices.xml_to_abc(voices.read_musicxml(os.path.join(os.path.dirname(music21.corpus.__file__), name))))


def test_xml2abc_voices_and_the_label_format():
    piece = chorale()
    assert piece['staves'] == [[1], [2], [3], [4]] and piece['clefs'] == {1: 'treble', 2: 'treble', 3: 'bass', 4: 'bass'}
    assert [len(b) for b in piece['voices'].values()] == [10] * 4  # every voice has every bar, once
    assert piece['voices'][1][1]['music'] == 'A2 B2 c2 e2'  # !fermata! and the bar-number comment are gone
    lab = voices.label_of(piece, 1, 4, [[1, 2], [3, 4]], {1: 'treble', 3: 'bass'}, brace=True, force_clefs=True)
    lines = lab.split('\n')
    assert lines[:8] == ['%%score { ( 1 2 ) | ( 3 4 ) }', 'L:1/8', 'M:4/4', 'K:A', 'V:1 treble', 'V:2 treble',
                         'V:3 bass', 'V:4 bass']  # F# minor is written as its signature's major key
    assert lines[8] == '[V:1] A2 B2 c2 e2 | c2 B2 A2 c2 | AB G2 F2 A2 |'
    assert [ln.count('|') for ln in lines[8:]] == [3, 3, 3, 3]
    assert not any(bad in lab for bad in ('T:', 'nm=', 'w:', '!', '"', 'Q:'))


def test_agreement_passes_on_the_engraving_and_fails_on_a_changed_note():
    piece = chorale()
    for staves, clefs, brace, renum in (([[1, 2], [3, 4]], {1: 'treble', 3: 'bass'}, True, [[1, 2], [3, 4]]),
                                        (piece['staves'], piece['clefs'], False, [[1], [2], [3], [4]])):
        lab = voices.label_of(piece, 0, 3, staves, clefs, brace)
        xml = voices.label_to_musicxml(lab)
        svg, mei = engrave(xml, 'Leland', LAYOUT)
        agree.check_agreement(mei, xml, lab, renum)  # passes
        bad = lab.replace('[V:3] A,B, | C2', '[V:3] A,B, | D2')
        assert bad != lab
        with pytest.raises(ValueError, match='mismatch'):  # the image of the label vs another label
            agree.check_agreement(mei, voices.label_to_musicxml(bad), bad, renum)


def test_agreement_counts_catch_what_the_engraving_drops():
    # a second voice resting a whole bar: verovio draws no rest for it, the label has one -> caught
    lab = '\n'.join(['%%score { ( 1 2 ) | ( 3 4 ) }', 'L:1/8', 'M:4/4', 'K:Bb', 'V:1 treble', 'V:2 treble', 'V:3 bass',
                     'V:4 bass', '[V:1] B8 | d4 f4 |', '[V:2] F8 | z8 |', '[V:3] D8 | z4 F,2 G,2 |',
                     '[V:4] B,,8 | B,,2 C,2 D,2 E,2 |'])
    xml = voices.label_to_musicxml(lab)
    svg, mei = engrave(xml, 'Bravura', LAYOUT)
    with pytest.raises(ValueError, match='counts'):
        agree.check_agreement(mei, xml, lab, [[1, 2], [3, 4]])
    assert agree.label_counts(lab) == {1: (2, 3), 2: (2, 2), 3: (2, 4), 4: (2, 5)}


def test_cleaning_rules():
    bars = voices._bars('!p! (A2 .B2) "_cresc." {g}c2 x2 | Z | [K:bass] D,2 E,2 F,4 |1 G8 :|', '4/4', 'G')
    assert [b['music'] for b in bars] == ['A2 B2 c2 z2', 'z8', 'D,2 E,2 F,4', 'G8']
    assert [b['reason'] for b in bars] == [None, None, None, 'volta']
    assert bars[2]['clef'] == 'bass' and bars[1]['clef'] is None
    assert voices.key_sharps('F#min') == 3 and voices.key_sharps('Dmix') == 1 and voices.key_sharps('Bb') == -2


@pytest.fixture(scope='module')
def poly_corpus(tmp_path_factory):
    out = str(tmp_path_factory.mktemp('poly') / 'm21_poly_tiny')
    meta = P.prepare(out, pieces=PIECES, excerpts_per_piece=6, num_workers=2, quiet=True, vocab_size=400)
    return out, meta


def test_tiny_build_layout_and_label_check(poly_corpus):
    import datasets
    out, meta = poly_corpus
    dd = datasets.load_from_disk(out)
    assert {sp: len(dd[sp]) for sp in dd} == meta['excerpts'] and all(meta['excerpts'].values())
    assert dd['train'].column_names == ['image', 'transcription'] + [c for c, _ in P.COLUMNS]
    assert meta['excerpts_per_cpu_second'] > 0
    for r in dd['train']:
        a = np.asarray(r['image'])
        assert r['image'].mode == 'L' and a[0].min() == 255 and a.min() < 50
        lab = r['transcription']
        assert lab.startswith('%%score ') and '\nL:1/8\nM:' in lab
        assert lab.count('\n[V:') == r['n_voices'] and len(r['staff_map'].split(',')) == r['n_staves']
        assert r['kind'] in ('a', 'b') and (r['kind'] == 'a') == lab.startswith('%%score {')
        assert len({ln.count('|') for ln in lab.split('\n') if ln.startswith('[V:')}) == 1  # same bars in every voice
    assert set(dd['train']['kind']) == {'a', 'b'}
    # the labels, read by abc2xml + music21, are the source excerpts note by note
    R = _load('report')
    for sp in ('train', 'test'):
        check = R.label_check(out, n=len(dd[sp]), split=sp)
        assert check['checked'] == len(dd[sp]) and check['equal'] == check['checked'], check['differences']
    stats = R.corpus_stats(out)
    assert stats['train']['kinds']['a']['staves'] == {2: stats['train']['kinds']['a']['excerpts']}


def test_train_on_a_mix_of_both_corpora(poly_corpus, tiny_corpus, tmp_path):
    """data_mix: one loader over both corpora, one tokenizer over both, test SER per kind."""
    out, _ = poly_corpus
    env = dict(os.environ, OMP_NUM_THREADS='1')
    args = ['config/tiny_test.py', f'--data_dir={out}', f'--data_mix={tiny_corpus}', f'--out_dir={tmp_path}',
            '--img_height=64', '--max_seq_len=320', '--eval_test_samples=-1']
    p = subprocess.run([sys.executable, 'train.py', *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode != 0 and 'data_mix needs tokenizer_vocab' in p.stderr + p.stdout  # one line, no traceback
    assert 'Traceback' not in p.stderr
    p = subprocess.run([sys.executable, 'train.py', *args, '--tokenizer_vocab=400'], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    final = json.load(open(tmp_path / 'final_eval.json'))
    assert set(final['by_kind']) <= {'a', 'b', 'line'} and 'line' in final['by_kind']
    import data
    tok = data.Tokenizer(str(tmp_path / 'tokenizer.model'))
    import datasets
    for d in (out, tiny_corpus):  # the run's tokenizer covers both corpora: no byte fallback
        texts = datasets.load_from_disk(d)['train']['transcription'][:20]
        assert all(tok.decode(tok.encode(t)) == t for t in texts)
        assert not any(tok.sp.is_byte(i) for t in texts for i in tok.encode(t))


def test_grand_staff_brings_a_treble8_tenor_down_an_octave():
    """xml2abc writes a treble-8 tenor at its written pitch; on a kind-a bass staff it must sound the
    same, so its notes come down an octave (the label check found 3 of 63 kind-a labels wrong before)."""
    import music21
    R = _load('report')
    piece = chorale('bach/bwv120.6.mxl')
    assert piece['clefs'][3] == 'treble-8'
    st, clefs, brace, staff_map = P.layout_of(piece, 'a')
    lab = voices.label_of(piece, 0, 4, st, clefs, brace, force_clefs=True)
    src = R._staff_notes(music21.corpus.parse('bach/bwv120.6.mxl'), 0, 4)
    want = [sorted(x for s in grp.split('+') for x in src[int(s) - 1]) for grp in staff_map.split(',')]
    got = R._staff_notes(music21.converter.parse(voices.label_to_musicxml(lab), format='musicxml'), 0, 4)
    assert got == want
    assert voices.octave_down("c2 B,2 [CEg]2 ^f' =a,") == "C2 B,,2 [C,E,G]2 ^f =A,"
