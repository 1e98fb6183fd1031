"""
tests/test_systems.py: systems.py groups the staves of verovio pages engraved from music21 corpus
MusicXML (chorales, a quartet, voice and piano, piano; five fonts) into the systems verovio drew,
keeps single-staff pages one staff per system, and sample.py --page=systems reads a page system by
system and joins the systems' multi-voice ABC voice by voice (the model replaced by a stand-in that
returns given transcriptions, so the test checks the plumbing, not a model).
"""
import os
import types

import pytest
from PIL import Image
from test_voices import GRAND, HEAD

import sample
from bench import pages as B
from bench import systems as BS
from inference import musicxml, pages, render, staves, systems
from inference.tune import join_lines

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.parametrize('work,font,unit', [('bach/bwv66.6', 'Leipzig', 9), ('bach/bwv269', 'Bravura', 10),
                                            ('haydn/opus74no1/movement3', 'Petaluma', 9),
                                            ('schubert/Lindenbaum', 'Leland', 10), ('joplin/maple_leaf_rag', 'Gootville', 9)])
def test_systems_are_verovios(work, font, unit):
    img, truth, _ = B.engrave_page(BS.musicxml_of(work), font, unit=unit)
    page = staves.find_staves(img)
    found = systems.find_systems(page)
    assert [len(s.staves) for s in found] == [t['staves'] for t in truth]
    assert len(truth) >= 2 and truth[0]['staves'] >= 2
    assert [st.system for st in page.staves] == [s.index for s in found for _ in s.staves]
    for s, t in zip(found, truth):
        assert B.iou(s.box, t['box']) > 0.9
        x0, y0, x1, y1 = s.crop_box  # every staff's crop inside, and the brace/bracket left of the lines
        sts = [page.staves[k] for k in s.staves]
        assert all(x0 <= c[0] and y0 <= c[1] and x1 >= c[2] and y1 >= c[3] for c in (st.crop_box for st in sts))
        assert x0 < min(st.box[0] for st in sts) - 0.3 * page.space
        assert s.crop.size == (x1 - x0, y1 - y0)
    for a, b in zip(found, found[1:]):
        assert a.crop_box[3] <= b.crop_box[1]


@pytest.mark.parametrize('deg', [2.0, -2.5])
def test_systems_of_a_tilted_page(deg):
    img, truth, _ = B.engrave_page(BS.musicxml_of('joplin/maple_leaf_rag'), 'Bravura', unit=10)
    found = systems.find_systems(staves.find_staves(img.rotate(-deg, resample=Image.Resampling.BILINEAR, fillcolor=255)))
    assert [len(s.staves) for s in found] == [t['staves'] for t in truth] == [2] * 5


def test_single_staff_pages_are_one_staff_per_system():
    tune = ('X:1\nT:A Test Page\nC:The Composer\nM:4/4\nL:1/8\nK:G\n'
            + ' '.join(["GABc d2 e2 | f2 g2 a'2 c'2 | A,2 C2 D4 | B2 A2 G4 |"] * 8) + ' d8 |]\n')
    img, truth, _ = B.engrave_page(tune, 'Leipzig', scale=60)
    with Image.open(os.path.join(HERE, 'data', 'lily_page1.png')) as lily:
        lily.load()
    for im, n in ((img, len(truth)), (lily, 5)):
        page = staves.find_staves(im)
        found = systems.find_systems(page)
        assert [s.staves for s in found] == [[k] for k in range(n)]
        assert all(s.crop is page.staves[k].crop and s.crop_box == page.staves[k].crop_box
                   for k, s in enumerate(found))


def _fake_reader(transcriptions):
    """pages.Reader's stand-in: line k of the batch is 'transcribed' as transcriptions[k]."""
    class Reader:
        def __init__(self, *args, **kwargs):
            self.tok = types.SimpleNamespace(decode=lambda ids: transcriptions[ids[0]])
            self.model = None

        def decode(self, xs):
            assert len(xs) == len(transcriptions)
            return [[k] for k in range(len(xs))]

        def settle(self, pages):  # the header checks are tests/test_reader.py's: here the readings as they are
            return [ids for _, ids in pages]

        respace = settle  # a staff's spacing: tests/test_pages.py and test_reader.py

        def join(self, xs, ids):
            return join_lines([self.tok.decode(s) for s in ids])
    return Reader


def _run_sample(monkeypatch, capsys, transcriptions, **config):
    from training import checkpoint
    monkeypatch.setattr(pages, 'Reader', _fake_reader(transcriptions))
    monkeypatch.setattr(checkpoint, 'find_checkpoint', lambda d: d)
    monkeypatch.setattr(checkpoint, 'read_meta', lambda c: {'model_args': {'img_height': 64}, 'train_config': {'max_width': 1024}})
    for k, v in dict(dict(out_dir='unused', attention=None, save_dir=None, page='auto'), **config).items():
        monkeypatch.setattr(sample, k, v)
    sample.main()
    return capsys.readouterr()


def test_sample_page_systems_joins_voices(monkeypatch, capsys, tmp_path):
    img, truth, _ = B.engrave_page(BS.musicxml_of('bach/bwv66.6'), 'Leipzig', unit=9)
    assert [t['staves'] for t in truth] == [4, 4]
    img.save(tmp_path / 'page.png')
    four = GRAND.replace('{ ( 1 2 ) | ( 3 4 ) }', '[ 1 | 2 | 3 | 4 ]')
    second = "%%score [ 1 | 2 | 3 | 4 ]\n" + HEAD + "[V:1] A4 |\n[V:2] E4 |\n[V:3] C4 |\n[V:4] A,,4 |"
    out = _run_sample(monkeypatch, capsys, [four, second], image=str(tmp_path / 'page.png'), page='systems',
                      save_dir=str(tmp_path / 'pred'))
    want, skipped = join_lines([four, second])
    assert skipped == [] and out.out == want + '\n'  # stdout: exactly the tune, its newlines intact
    assert want.split('\n')[8].endswith('B2 F2 E2 | A4 |') and len(want.split('\n')) == 12
    xml = (tmp_path / 'pred' / 'page.musicxml').read_text()
    import music21
    s = music21.converter.parse(xml, format='musicxml')
    assert len(s.parts) == 4 and all(len(p.getElementsByClass('Measure')) == 6 for p in s.parts)
    assert (tmp_path / 'pred' / 'page.png').exists() and (tmp_path / 'pred' / 'page.staves.png').exists()
    # per staff (--page=yes) the same page is 8 lines: the stand-in is asked for 8
    out = _run_sample(monkeypatch, capsys, ['M:4/4\nL:1/8\nK:A\nA8 |'] * 8, image=str(tmp_path / 'page.png'), page='yes')
    assert out.out.count('\n') == 3 + 8


def test_sample_prints_a_multi_voice_line_as_it_is(monkeypatch, capsys, tmp_path):
    im, _ = render.engrave(GRAND)
    im.save(tmp_path / 'line.png')
    out = _run_sample(monkeypatch, capsys, [GRAND], image=str(tmp_path / 'line.png'), page='no',
                      save_dir=str(tmp_path / 'pred'))
    assert out.out == GRAND + '\n'
    assert (tmp_path / 'pred' / 'line.abc').read_text() == GRAND
    assert (tmp_path / 'pred' / 'line.png').exists() and (tmp_path / 'pred' / 'line.mid').exists()
    assert (tmp_path / 'pred' / 'line.musicxml').read_text() == musicxml.to_musicxml(GRAND)


def test_page_systems_is_a_known_mode(monkeypatch):
    monkeypatch.setattr(sample, 'image', 'x.png')
    monkeypatch.setattr(sample, 'page', 'sytems')
    with pytest.raises(ValueError, match="'systems'"):
        sample.main()
