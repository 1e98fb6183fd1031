"""
tests/test_pages.py: reading pages end to end. join_lines (header once, inline [K:]/[M:] changes, bad
lines left out), PDFs (rendered at the staff size of training, several pages, broken and encrypted
files as one line), MusicXML (bar repair numbers; every export parses with music21 and its complete
bars fill the meter; real labels round-trip note by note), the attention maps (equal to the model's
own attention, rows of probabilities, both memory layouts), and sample.py on pages and PDFs with the
tiny memorizing checkpoint of tests/test_sample.py.
"""
from fractions import Fraction

import pytest
import torch
from PIL import Image, ImageDraw
from test_sample import TUNES, one_error_line, run, run_dir  # noqa: F401 (run_dir: the fixture)

import model as M
from core import metrics
from inference import attention as A
from inference import musicxml, pages, staves
from inference.tune import METERS, bar_lengths as abc_bars, first_staff_header, join_lines, settle_meter

pytestmark = pytest.mark.usefixtures('one_thread')  # see tests/conftest.py


# -----------------------------------------------------------------------------
# joining lines

def test_join_lines_header_once_inline_changes_and_skips():
    lines = ['M:4/4\nL:1/8\nK:G\nGABc d2 e2 |', 'M:4/4\nL:1/8\nK:G\nf2 g2 a4 |',
             'garbage without a key', 'M:3/4\nL:1/8\nK:F\nA2 B2 c2 |', 'M:3/4\nL:1/8\nK:F clef=bass\nF,6 |]',
             'M:3/4\nL:1/8\nK:F\n', 'L:1/8\nK:F clef=bass\nA,6 |]']
    tune, skipped = join_lines(lines)
    assert tune == ('M:4/4\nL:1/8\nK:G\nGABc d2 e2 |\nf2 g2 a4 |\n[K:F][M:3/4] A2 B2 c2 |\n'
                    '[K:F clef=bass] F,6 |]\nA,6 |]')
    assert skipped == [2, 5]
    assert join_lines(['nothing', '']) == ('', [0, 1])
    # bench_pages scores a page against its lines joined the same way: a page read without its second
    # line costs exactly that line's symbols and its line break, over the page's symbols
    lost, _ = join_lines([lines[0], lines[3], lines[4], lines[6]])
    n_line, n_page = len(metrics.abc_symbols('f2 g2 a4 |')), len(metrics.abc_symbols(tune))
    assert (n_line, n_page) == (6, 35)
    assert metrics.score([lost], [tune])['ser'] == pytest.approx((n_line + 1) / n_page)



def test_join_lines_takes_only_changes_the_page_shows():
    """Key and clef are drawn on every staff, so a change lasts: one staff's own key between two that
    agree, or a last staff's, is a misreading. A meter is drawn once, where it changes: a later staff's
    M: is taken only where its bars add up to it (a pickup and a short last bar left out)."""
    d = lambda k, body, m=None: (f'M:{m}\n' if m else '') + f'L:1/8\nK:{k}\n{body}'
    two = 'A2 B2 | c2 d2 | e4 |'
    # keys: a lone G between two D staves, a lone G on the last staff; a lasting change to G is taken
    assert join_lines([d('D', two, '2/4'), d('G', two), d('D', two), d('G', two)])[0] == \
        'M:2/4\nL:1/8\nK:D\n' + '\n'.join([two] * 4)
    # labels (references) are joined as written: their every change is real
    assert join_lines([d('D', two, '2/4'), d('G', two)], labels=True)[0].split('\n')[4] == '[K:G] ' + two
    assert join_lines([d('D', two, '2/4'), d('G', two), d('G', two)])[0] == \
        'M:2/4\nL:1/8\nK:D\n' + two + '\n[K:G] ' + two + '\n' + two
    # key and clef are judged apart: the key lasts, a one-staff bass clef does not
    assert join_lines([d('D', two, '2/4'), d('G clef=bass', two), d('G', two)])[0].split('\n')[4] == '[K:G] ' + two
    # meters: a meter guessed on a staff whose bars are 2/4 is not a change; one its bars fit is
    assert join_lines([d('D', two, '2/4'), d('D', two, 'C'), d('D', two)])[0].count('[M:') == 0
    jig = 'F | A2 B c2 d | e3 f3 | g3 a2'  # a pickup, two 6/8 bars, a short last one
    assert join_lines([d('D', two, '2/4'), d('D', jig, '6/8'), d('D', two)])[0].split('\n')[4] == '[M:6/8] ' + jig
    assert join_lines([d('D', two, '2/4'), d('D', 'A2 B2 | c3 d3 |', '6/8'), d('D', two)])[0].count('[M:') == 0

def test_bar_lengths_count_tuplets_chords_graces_and_stop_at_a_meter_change():
    assert abc_bars('|: {g}A2 B | (3cde [CEG]2 | z/ A3/2 [A/c/]4 :| [M:2/4] B4 |') == \
        [Fraction(3, 8), Fraction(4, 8), Fraction(4, 8)]  # '|:' opens no bar; [A/c/]4 = 2 units
    assert abc_bars('A4 | B4', Fraction(1, 4)) == [1, 1]  # the last bar needs no bar line


def test_settle_meter_lets_the_bars_choose_among_the_likely_meters():
    bars = lambda n, bar: ' | '.join([bar] * n) + ' |'
    page = lambda m, body: f'M:{m}\nL:1/8\nK:G\n{body}'
    lik = lambda **kw: {m: kw.get(m.replace('/', '_').replace('|', 'bar'), -20.0) for m in METERS}  # log-probs
    two4 = 'G | ' + bars(6, 'G2 A2') + ' G2'  # a pickup, six bars of 2/4, a short last bar
    # a 2/4 read as 4/4 with 2/4 close behind: the bars choose 2/4
    assert settle_meter(page('4/4', two4), lik(**{'4_4': -1.0, '2_4': -2.5})) == page('2/4', two4)
    for m, body, sc in [('4/4', two4, lik(**{'4_4': -1.0, '2_4': -4.5})),      # 2/4 more than 3 nats behind
                        ('2/4', two4, lik(**{'4_4': -1.0, '2_4': -2.0})),      # the bars fit the meter read
                        ('6/8', bars(6, 'G2 A2 B2'), lik(**{'6_8': -1.0, '3_4': -1.5})),  # one length: kept
                        ('4/4', 'G | A4 | B8 | c |', lik(**{'4_4': -1.0, '2_4': -1.5})),  # one whole bar each: a tie
                        ('', two4, lik(**{'2_4': -1.0}))]:                    # free time
        assert settle_meter(page(m, body), sc) == page(m, body)
    assert settle_meter(page('4/4', two4), None) == page('4/4', two4)
    poly = 'M:4/4\nL:1/8\nK:G\n[V:1] ' + two4 + '\n[V:2] ' + two4
    assert settle_meter(poly, lik(**{'2_4': -1.0})) == poly  # voices: left alone


def test_first_staff_header_asks_for_the_key_the_next_staves_agree_on():
    st = lambda k, m=None: (f'M:{m}\n' if m else '') + f'L:1/8\nK:{k}\nGABc d2 e2 |'
    assert first_staff_header([st('F clef=bass', '3/4'), st('G'), 'garbage', st('G'), st('D')]) == \
        (0, 'M:3/4\nL:1/8\nK:G\n')
    assert first_staff_header(['no key', st('C', 'C'), st('G'), st('G')]) == (1, 'M:C\nL:1/8\nK:G\n')
    for abcs in ([st('G', '3/4'), st('G'), st('D')],       # the first agrees with the next
                 [st('F', '3/4'), st('G'), st('D')],       # the next two disagree
                 [st('F', '3/4'), st('G')],                # two staves: nothing to outvote with
                 ['[V:1] ' + st('F'), st('G'), st('G')]):  # voices
        assert first_staff_header(abcs) == (None, None)


def test_respace_reads_a_sparse_staff_again_squeezed_with_its_header_forced():
    """pages.Reader.respace on a stand-in model (characters as tokens): a staff with fewer symbols than its
    width holds at SPACING is decoded again from an image squeezed to that spacing, at most to
    MIN_SQUEEZE, its header (up to K:) the forced prefix; a dense staff, one without K: and CTC decoding
    keep their readings."""
    r = object.__new__(pages.Reader)
    r.how, r.beam_size, r.temperature = 'attention', 1, 0.0
    r.tok = type('Chars', (), dict(encode=lambda self, t: [ord(c) for c in t], decode=lambda self, s: ''.join(map(chr, s))))()
    calls = []

    def decode(xs, prefixes=None):
        calls.append(([tuple(x.shape) for x in xs], [r.tok.decode(p) for p in prefixes]))
        return [p + r.tok.encode('GA |') for p in prefixes]
    r.decode = decode
    H = 64
    head = 'M:3/4\nL:1/8\nK:D\n'
    body = lambda n: ' '.join(['ABc'] * n) + ' |'            # 4 symbols a group: 3 notes, a space
    n_sym = lambda n: len(metrics.abc_symbols(body(n)))
    staves = [(torch.ones(3, H, 1000), head + body(3)),       # sparse: squeezed to MIN_SQUEEZE
              (torch.ones(3, H, 1000), head + body(40)),      # dense: kept
              (torch.ones(3, H, 1000), head + body(10)),      # between: squeezed to SPACING
              (torch.ones(3, H, 1000), 'GAB cde |'),           # no header: kept
              (torch.ones(3, H, 800), 'L:1/8\nK:D\n' + body(2))]
    xs, ids = [x for x, _ in staves], [r.tok.encode(a) for _, a in staves]
    out, = r.respace([(xs, ids)])
    assert pages.MIN_SQUEEZE < n_sym(10) * pages.SPACING * H / 1000 < 1 < n_sym(40) * pages.SPACING * H / 1000
    widths = [1000 * pages.MIN_SQUEEZE, 1000 * n_sym(10) * pages.SPACING * H / 1000, 800 * pages.MIN_SQUEEZE]
    assert calls == [([(3, H, round(w)) for w in widths], [head, head, 'L:1/8\nK:D\n'])]
    assert [r.tok.decode(s) for s in out] == [head + 'GA |', staves[1][1], head + 'GA |', staves[3][1], 'L:1/8\nK:D\nGA |']
    r.how = 'ctc'
    assert r.respace([(xs, ids)]) == [ids] and len(calls) == 1


# -----------------------------------------------------------------------------
# PDFs

def page_image(scale=60):
    from bench import pages as B
    tune = ('X:1\nT:PDF Page\nC:Someone\nM:6/8\nL:1/8\nK:D\n' + ' '.join(['d2e fed | A3 A2z | B,2C DEF | G2A Bcd |'] * 5) + ']\n')
    img, truth, _ = B.engrave_page(tune, 'Leland', scale=scale)
    return img, truth


def encrypted_pdf():
    """a one-page PDF with a Standard security handler whose password is not empty: pdfium asks for it."""
    objs = [b'<< /Type /Catalog /Pages 2 0 R >>', b'<< /Type /Pages /Kids [3 0 R] /Count 1 >>',
            b'<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] >>',
            b'<< /Filter /Standard /V 1 /R 2 /O <' + b'11' * 32 + b'> /U <' + b'22' * 32 + b'> /P -4 >>']
    out, offs = b'%PDF-1.4\n', []
    for i, o in enumerate(objs):
        offs.append(len(out))
        out += f'{i + 1} 0 obj\n'.encode() + o + b'\nendobj\n'
    x = len(out)
    out += f'xref\n0 {len(objs) + 1}\n0000000000 65535 f \n'.encode() + b''.join(f'{o:010d} 00000 n \n'.encode() for o in offs)
    out += (f'trailer\n<< /Size {len(objs) + 1} /Root 1 0 R /Encrypt 4 0 R /ID [<{"ab" * 16}> <{"ab" * 16}>] >>\n'
            f'startxref\n{x}\n%%EOF\n').encode()
    return out


def test_pdf_pages_render_at_training_staff_size(tmp_path):
    img, truth = page_image()  # staff space 10.8 px in the PNG
    pdf = tmp_path / 'score.pdf'
    img.convert('RGB').save(pdf, save_all=True, append_images=[img.convert('RGB')], resolution=100)
    got = list(pages.read_pdf(str(pdf), 10**8))
    assert [n for n, _ in got] == [1, 2]
    for _, im in got:
        p = staves.find_staves(im)
        assert len(p.staves) == len(truth)
        assert abs(p.space - pages.TARGET_SPACE) <= 3  # re-rendered from 150 dpi to ~20 px per space
    fixed = list(pages.read_pdf(str(pdf), 10**8, dpi=100))[0][1]
    assert abs(fixed.size[0] - img.size[0]) <= 1 and abs(fixed.size[1] - img.size[1]) <= 1  # its own resolution: its size


def test_broken_and_encrypted_pdf_are_one_line_errors(tmp_path):
    cases = {'broken.pdf': (b'%PDF-1.4\nthis is not a pdf', 'not a readable PDF'),
             'empty.pdf': (b'', 'empty file'),
             'locked.pdf': (encrypted_pdf(), 'encrypted')}
    for name, (payload, expect) in cases.items():
        (tmp_path / name).write_bytes(payload)
        with pytest.raises(ValueError) as e:
            list(pages.read_pdf(str(tmp_path / name), 10**8))
        assert str(e.value).startswith(str(tmp_path / name)) and expect in str(e.value) and '\n' not in str(e.value)


# -----------------------------------------------------------------------------
# MusicXML

def bar_lengths(xml):
    """[(bar duration in quarters, the meter's in quarters)] per measure of a MusicXML text."""
    import music21
    s = music21.converter.parse(xml, format='musicxml')
    return [(Fraction(m.duration.quarterLength).limit_denominator(96), Fraction(m.barDuration.quarterLength))
            for m in s.parts[0].getElementsByClass('Measure')]


def test_repair_bars_numbers():
    r = musicxml.repair_bars
    assert r('M:4/4\nL:1/8\nK:C\nC2 | D2 E2 | F8 G2 | [CEG]4 z2 | A2 |]') == \
        'M:4/4\nL:1/8\nK:C\nC2 | D2 E2 z4 | F8 | [CEG]4 z2 z2 | A2 |]'  # pickup, pad, trim, pad, last kept
    # a triplet counts 2/3, a grace nothing; an over-long triplet is dropped whole
    assert r('M:2/4\nL:1/8\nK:C\nA4 | {g}(3ABc B | A2 B2 (3ABc | c4 |]') == \
        'M:2/4\nL:1/8\nK:C\nA4 | {g}(3ABc B z | A2 B2 | c4 |]'
    # the short bar before ':|' that completes the pickup stays short; other bars are padded; a 5/8 note
    # (no single note value) is written tied, as a half and an eighth
    assert r('M:6/8\nL:1/8\nK:D\nA | d3 d2 | d6 | d5 :|\nd6 |]') == 'M:6/8\nL:1/8\nK:D\nA | d3 d2 z | d6 | d4-d :|\nd6 |]'
    # inline meter changes and L:1/16 are followed
    assert r('M:2/4\nL:1/16\nK:C\nc4 | c8 | [M:3/4] c8 | c12 |]') == 'M:2/4\nL:1/16\nK:C\nc4 | c8 | [M:3/4] c8 z4 | c12 |]'


def test_every_export_parses_and_complete_bars_fill_the_meter(tmp_path):
    model_like = ['M:6/8\nL:1/8\nK:G\nD | BGG dBG | BGG dB | G3/2A/G GAB c | dBd g2 d :|',
                  'M:3/4\nL:1/8\nK:F\nA2 B2 c2 | d4 z | F6 F2 |\n[K:G][M:2/4] G2 A2 | B4 c2 |]',
                  'M:C|\nL:1/8\nK:D\n|: d2 fd Adfd | e2 ge Beg :| (3ABc d2 |]',
                  'M:4/4\nL:1/8\nK:C clef=bass\nC,2 E,2 G,2 | [C,E,]8 | z8 |]']
    for i, abc in enumerate(model_like):
        path = str(tmp_path / f'{i}.musicxml')
        musicxml.write_musicxml(abc, path)
        with open(path, encoding='utf-8') as f:
            lens = bar_lengths(f.read())
        assert len(lens) >= 3
        for k, (got, meter) in enumerate(lens):
            if 0 < k < len(lens) - 1:
                assert got == meter, (abc, k, got, meter)
            else:
                assert got <= meter
    for junk in ('', 'M:4/4\nL:1/8\nK:C\n| | |]'):
        with pytest.raises(ValueError, match='no music'):
            musicxml.to_musicxml(junk)


def test_real_labels_round_trip_note_by_note():
    """Canonical labels of real test-split tunes (prepare.py's own writer): ABC -> MusicXML ->
    music21 gives the same pitches and durations, note by note, as music21 reading the ABC."""
    import music21

    from bench import pages as B
    P = B.load_prepare()
    checked = 0
    for src, rel, idx, text in P.list_tunes(['oneills1850'])[:60]:
        try:
            measures = P.score_to_measures(P.parse_abc(text))
        except Exception:
            continue
        ok = [m for m in measures[:8] if m['ok']]
        if len(ok) < 4 or len({m['ctx'] for m in ok}) != 1:
            continue
        label = B.label(P, ok)
        direct = music21.converter.parse('X:1\n' + label, format='abc')
        via = music21.converter.parse(musicxml.to_musicxml(label), format='musicxml')

        def notes(s):
            return [(tuple(p.midi for p in n.pitches), Fraction(n.quarterLength).limit_denominator(96))
                    for n in s.flatten().notes]
        assert notes(via) == notes(direct), label
        checked += 1
        if checked == 6:
            break
    assert checked == 6


# -----------------------------------------------------------------------------
# attention

def tiny_model(collapse):
    torch.manual_seed(0)
    cfg = M.MusicTrOCRConfig(backbone='cnn_tiny', vocab_size=64, n_layer=2, n_head=4, d_model=32, d_ff=64,
                             max_seq_len=32, dropout=0.0, img_height=64, collapse_height=collapse)
    return M.MusicTrOCR(cfg).eval()


@pytest.mark.parametrize('collapse', [False, True])
def test_cross_attention_is_the_models_own(collapse):
    m = tiny_model(collapse)
    images = torch.ones(2, 3, 64, 200)
    images[:, :, 20:44, 10:150] = torch.rand(2, 3, 24, 140)
    widths = torch.tensor([200, 128])  # 128: whole 16-px columns, so the mass check below is exact
    ids = torch.tensor(m.generate(images, 8, widths=widths, ignore_eos=True))  # (2, 8)
    weights, logits = A.cross_attention(m, images, ids, widths)
    assert len(weights) == 2
    assert torch.equal(logits.argmax(-1), ids)  # the re-run is the decoder that generated ids
    memory, mask = m.encode(images, widths)
    S = memory.size(1)
    assert weights[0].shape == (2, 4, 8, S)
    for w in weights:
        assert torch.allclose(w.sum(-1), torch.ones(2, 4, 8), atol=1e-5)
        assert w[1][..., ~mask[1]].abs().max() == 0  # padding gets no attention
    # weights @ v is what the module computes with scaled_dot_product_attention
    blk = m.blocks[0]
    x = m.tok_emb(torch.cat([torch.full((2, 1), m.config.bos_id), ids[:, :-1]], 1)) + m.pos_emb(torch.arange(8))
    x = x + blk.attn(blk.ln_1(x))
    h = blk.ln_2(x)
    k, v = blk.cross.memory_kv(memory)
    y = (weights[0] @ v).transpose(1, 2).reshape(2, 8, -1)
    with torch.no_grad():
        assert torch.allclose(blk.cross.c_proj(y), blk.cross(h, (k, v), mask), atol=1e-5)
    maps = A.to_pixels(m, A.select(weights, "last")[1], 64, 128)
    assert maps.shape == (8, 64, 128)
    assert torch.allclose(maps[:, 0, :].sum(-1) if collapse else maps.sum((1, 2)),
                          A.select(weights, 'last')[1].sum(-1) * (16 if collapse else 16 * 16), atol=1e-4)
    assert torch.allclose(A.select(weights, 'all'), torch.stack(weights).mean((0, 2)))


# -----------------------------------------------------------------------------
# sample.py on pages

def make_page(imgs, path, title=True):
    """a page of line images (the tunes the tiny model memorized) on white, with a title and text."""
    lines = [Image.open(p).convert('L') for p in imgs]
    W = max(im.size[0] for im in lines) + 120
    H = 140 + sum(im.size[1] + 40 for im in lines) + 80
    page = Image.new('L', (W, H), 255)
    d = ImageDraw.Draw(page)
    if title:
        d.text((W // 2 - 40, 30), 'A Page Title', fill=0)
        d.text((W - 140, 70), 'Composer Name', fill=0)
    y = 140
    for im in lines:
        page.paste(im, (60, y))
        y += im.size[1] + 40
    d.text((W // 2, H - 40), '1', fill=0)  # a page number
    page.save(path)
    return page


def test_sample_reads_a_page_into_one_tune(run_dir, tmp_path):
    out, imgs = run_dir
    page = make_page([imgs / 'tune0.png', imgs / 'tune1.png', imgs / 'tune0.png'], tmp_path / 'page.png')
    assert len(staves.find_staves(page).staves) == 3
    save, attn = tmp_path / 'pred', tmp_path / 'attn'
    # the tiny model has memorized its lines at their own spacing: read without Reader.respace (tested in
    # test_respace_*), which would squeeze them to a training line's spacing first
    r = run(f'--out_dir={out}', f'--image={tmp_path / "page.png"}', f'--save_dir={save}', f'--attention={attn}',
            '--max_new_tokens=60', '--respace=False')
    assert r.returncode == 0, r.stderr
    lines = r.stdout.rstrip('\n').split('\n')
    assert [ln[:2] for ln in lines[:3]] == ['M:', 'L:', 'K:']
    assert not any(ln[:2] in ('M:', 'L:', 'K:') for ln in lines[3:])  # the header once
    # every staff read back as the tune the tiny model memorized, joined under one header
    want, _ = join_lines([TUNES[0], TUNES[1], TUNES[0]])
    assert r.stdout.rstrip('\n') == want and 'left out' not in r.stderr, (r.stdout, r.stderr)
    for ext in ('.abc', '.musicxml', '.staves.png'):
        assert (save / f'page{ext}').exists(), ext
    assert (save / 'page.abc').read_text() == r.stdout.rstrip('\n')
    bar_lengths((save / 'page.musicxml').read_text())  # music21 opens it
    with Image.open(save / 'page.staves.png') as im:
        assert im.size == page.size
    for k in (1, 2, 3):
        with Image.open(attn / f'page.staff{k}.attn.png') as im:
            assert im.mode == 'RGB' and im.size[1] > 14
    # the same page as a 2-page PDF: one tune of twice the staves
    pdf = tmp_path / 'page.pdf'
    page.convert('RGB').save(pdf, save_all=True, append_images=[page.convert('RGB')], resolution=100)
    r = run(f'--out_dir={out}', f'--image={pdf}', f'--save_dir={save}', '--max_new_tokens=60', '--respace=False')
    assert r.returncode == 0, r.stderr
    assert r.stdout.rstrip('\n') == join_lines([TUNES[0], TUNES[1], TUNES[0]] * 2)[0], r.stderr
    # with respace (the default) the page is still one tune: a header once, a line a staff, nothing left out
    r = run(f'--out_dir={out}', f'--image={pdf}', '--max_new_tokens=60')
    assert r.returncode == 0 and 'left out' not in r.stderr and 'not read again' not in r.stderr, r.stderr
    lines = r.stdout.rstrip('\n').split('\n')
    assert [ln[:2] for ln in lines[:3]] == ['M:', 'L:', 'K:'] and len(lines) == 3 + 6
    assert (save / 'page.p1.staves.png').exists() and (save / 'page.p2.staves.png').exists()


def test_sample_page_errors(run_dir, tmp_path):
    out, imgs = run_dir
    Image.new('L', (800, 1100), 255).save(tmp_path / 'blank.png')
    line = one_error_line(run(f'--out_dir={out}', f'--image={tmp_path / "blank.png"}'))
    assert 'blank.png' in line and 'no staff found' in line
    (tmp_path / 'broken.pdf').write_bytes(b'%PDF-1.4 nothing here')
    line = one_error_line(run(f'--out_dir={out}', f'--image={tmp_path / "broken.pdf"}'))
    assert 'broken.pdf' in line and 'not a readable PDF' in line
    line = one_error_line(run(f'--out_dir={out}', f'--image={imgs / "tune0.png"}', '--page=maybe'))
    assert "page must be 'auto', 'yes' or 'no'" in line
    # in a folder: the line images are read as before, the bad PDF and the blank page are reported
    folder = tmp_path / 'mixed'
    folder.mkdir()
    for f in ('tune0.png', 'tune1.png'):
        (folder / f).write_bytes((imgs / f).read_bytes())
    (folder / 'blank.png').write_bytes((tmp_path / 'blank.png').read_bytes())
    (folder / 'broken.pdf').write_bytes(b'%PDF-1.4 nothing here')
    r = run(f'--out_dir={out}', f'--image={folder}', '--max_new_tokens=60')
    assert r.returncode == 1
    assert r.stdout == f'% tune0.png\n{TUNES[0]}\n\n% tune1.png\n{TUNES[1]}\n\n'
    errs = [ln for ln in r.stderr.splitlines() if ln.startswith('error:')]
    assert len(errs) == 3 and errs[-1] == 'error: 2 of 4 image(s) could not be read'


def test_bench_pages_transcription_report_runs(run_dir):
    """bench_pages.py's model part (page SER vs line SER, s/page) on one page with the tiny checkpoint:
    the numbers' quality does not matter here, only that the report is computed."""
    from bench import pages as B
    out, _ = run_dir
    pgs = B.build_pages(1)
    assert len(pgs) == 1 and 3 <= len(pgs[0]['truth']) <= 10 and len(pgs[0]['lines']) == len(pgs[0]['truth'])
    found = [staves.find_staves(p['image']) for p in pgs]
    B.out_dir, B.max_new_tokens = str(out), 40
    report = B.transcription_report(pgs, found)
    assert '| page (joined tune vs reference tune) | 1 |' in report and 's per page' in report


def test_line_image_with_attention(run_dir, tmp_path):
    """a cropped line is still read as is (--page=auto), and --attention draws one panel per token."""
    out, imgs = run_dir
    r = run(f'--out_dir={out}', f'--image={imgs / "tune0.png"}', f'--attention={tmp_path}', '--max_new_tokens=60')
    assert r.returncode == 0, r.stderr
    assert r.stdout == TUNES[0] + '\n'
    import data
    n_tok = len(data.Tokenizer(str(out / 'tokenizer.model')).encode(TUNES[0]))
    with Image.open(tmp_path / 'tune0.attn.png') as im:
        assert im.size[1] % n_tok == 0 and im.size[1] // n_tok > 14  # one panel (label + image) per token
