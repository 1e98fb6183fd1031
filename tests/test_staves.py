"""
tests/test_staves.py: staves.py finds every staff of verovio-engraved pages (titles, composer, lyrics,
page footer; all five fonts) where verovio's SVG says it is, still does on pages rotated by 2 degrees,
crops a staff the way training images are cropped, reads LilyPond pages (a second engraver, committed
as PNGs in tests/data/), and says 'no staff found' for blank, photo-like and text-only images.
"""
import os

import numpy as np
import pytest
from PIL import Image, ImageDraw

from bench import pages as B
from inference import staves

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# a tune of 6+ systems with lyrics, a tempo text, ledger lines above and below, and a key change
TUNE = ('X:1\nT:A Test Page\nC:The Composer\nQ:"Allegro"\nM:4/4\nL:1/8\nK:G\n'
        + ' '.join(["GABc d2 e2 | f2 g2 a'2 c'2 | A,2 C2 D4 | B2 A2 G4 |"] * 8) + ' "^text" d8 |]\n'
        + 'w: ' + ' '.join(["la"] * 60) + '\n')


@pytest.fixture(scope='module')
def page():
    img, truth, n = B.engrave_page(TUNE, 'Leipzig', scale=60)
    assert n == 1 and len(truth) >= 5
    return img, truth


def test_boxes_match_verovio_svg(page):
    img, truth = page
    p = staves.find_staves(img)
    assert p.angle == 0.0
    assert len(p.staves) == len(truth)
    for st, t in zip(p.staves, truth):
        assert B.iou(st.box, t['box']) > 0.9
        assert np.abs(np.array(st.lines) - np.array(t['lines'])).max() < 1.5  # line centres, pixels
        assert st.space == pytest.approx(np.diff(t['lines']).mean(), abs=0.5)
        x0, y0, x1, y1 = st.crop_box  # the crop holds the staff, plus at most its ledger-line reach
        assert x0 <= st.box[0] and y0 < st.box[1] and x1 >= st.box[2] and y1 > st.box[3]
        assert st.crop.size == (x1 - x0, y1 - y0)
    for a, b in zip(p.staves, p.staves[1:]):  # crops never overlap
        assert a.crop_box[3] <= b.crop_box[1]


@pytest.mark.parametrize('font', ['Bravura', 'Gootville', 'Leland', 'Petaluma'])
def test_other_fonts(font):
    img, truth, _ = B.engrave_page(TUNE, font, scale=50)
    p = staves.find_staves(img)
    assert B.match([s.box for s in p.staves], [t['box'] for t in truth]) == len(truth) == len(p.staves)


@pytest.mark.parametrize('deg', [2.0, -2.5])
def test_deskew(page, deg):
    img, truth = page
    rotated = img.rotate(-deg, resample=Image.Resampling.BILINEAR, fillcolor=255)  # lines now tilt by deg
    p = staves.find_staves(rotated)
    assert p.angle == pytest.approx(deg, abs=0.1)
    assert len(p.staves) == len(truth)
    # rotated back about the centre, the boxes land where the unrotated page has them
    assert B.match([s.box for s in p.staves], [t['box'] for t in truth], thr=0.7) == len(truth)


def test_scan_like_page(page):
    """grey paper, sensor noise, a little blur and a 1.5 degree tilt: still every staff, in place."""
    from PIL import ImageFilter
    img, truth = page
    rng = np.random.default_rng(0)
    im = img.rotate(-1.5, resample=Image.Resampling.BILINEAR, fillcolor=255).filter(ImageFilter.GaussianBlur(0.8))
    a = np.asarray(im).astype(np.float32) * 0.8 + 30 + rng.normal(0, 12, im.size[::-1])
    p = staves.find_staves(Image.fromarray(a.clip(0, 255).astype(np.uint8)))
    assert p.angle == pytest.approx(1.5, abs=0.1)
    assert B.match([s.box for s in p.staves], [t['box'] for t in truth], thr=0.7) == len(truth) == len(p.staves)


def test_crop_looks_like_training():
    """A staff cut from a page has the height, in staff spaces, of the training image of the same
    music (prepare.engrave + rasterize with its 6-19 px margin), within one staff space."""
    P = B.load_prepare()
    abc = 'M:3/4\nL:1/8\nK:D\nA,2 D2 F2 | a2 c\'2 e\'2 | d6 |]'
    svg, _ = P.engrave(abc, 'Bravura', dict(scale=100, spacingLinear=0.25, spacingNonLinear=0.6))
    line = P.rasterize(svg, margin=10)
    pl = staves.find_staves(line)
    assert len(pl.staves) == 1 and staves.is_single_line(pl)
    sp = pl.staves[0].space
    img, truth, _ = B.engrave_page('X:1\nT:Title\n' + abc + '\n', 'Bravura', scale=100)
    pg = staves.find_staves(img)
    assert len(pg.staves) == 1 and not staves.is_single_line(pg)
    st = pg.staves[0]
    assert abs(st.crop.size[1] / st.space - line.size[1] / sp) < 1.0
    # and the crop of a line that is already cropped is (nearly) the whole image
    x0, y0, x1, y1 = pl.staves[0].crop_box
    assert x0 <= 2 and y0 <= 2 and x1 >= line.size[0] - 2 and y1 >= line.size[1] - 2


@pytest.mark.parametrize('name,n', [('lily_page1', 5), ('lily_page2', 6)])
def test_lilypond_pages(name, n):
    """Pages from a second engraver (LilyPond 2.24, 150 dpi; sources in tests/data/*.ly): every
    staff found, five evenly spaced lines each, the lyrics and titles left out of the crops."""
    p = staves.find_staves(Image.open(os.path.join(HERE, 'data', name + '.png')))
    assert len(p.staves) == n
    for st in p.staves:
        gaps = np.diff(st.lines)
        assert gaps.max() - gaps.min() <= 1.5 and 9 <= st.space <= 12
    for st in p.staves[1:]:  # a staff and its notes, not the lyrics line under it nor the bar numbers
        assert st.crop.size[1] < 10 * st.space
    # the first staff may take the tempo mark or composer line right above it as one island of ink
    # (see crops.ink_extent), never the title further up
    assert p.staves[0].crop_box[1] > 110 and p.staves[0].crop.size[1] < 12 * p.staves[0].space


def test_no_staff():
    rng = np.random.default_rng(0)
    blank = Image.new('L', (800, 1100), 255)
    gray = Image.new('L', (800, 1100), 128)
    noise = Image.fromarray((rng.random((600, 800)) * 255).astype(np.uint8))
    # a photo-like image: smooth blobs, dark and light areas
    small = rng.random((12, 16))
    photo = Image.fromarray((small * 255).astype(np.uint8)).resize((800, 600), Image.Resampling.BICUBIC)
    text = Image.new('L', (800, 1100), 255)
    d = ImageDraw.Draw(text)
    for i in range(30):
        d.text((40, 30 + 34 * i), 'Lorem ipsum dolor sit amet, consectetur ' * 2, fill=0)
    d.line((40, 1060, 760, 1060), fill=0, width=2)  # one ruled line is not a staff
    for im in (blank, gray, noise, photo, text, Image.new('L', (3, 3), 0)):
        with pytest.raises(ValueError, match='no staff found'):
            staves.find_staves(im)


def test_bled_ink_keeps_its_staves_stripes_do_not_pass():
    """A copy whose ink bled (lily_page1 with its ink grown 2 px each way: lines 6 px thick at a 10-px
    staff space, thicker than the gaps) still shows its 5 staves; a photo-like image of horizontal
    stripes whose run lengths look the same (bench/scan_negatives' photo-like blobs 6 and 14: each made
    five-line 'staves' before MAX_MID_GREY) is still no staff."""
    from PIL import ImageFilter

    from bench import scan_negatives
    bled = Image.open(os.path.join(HERE, 'data', 'lily_page1.png')).convert('L').filter(ImageFilter.MinFilter(5))
    t, sp = staves.line_metrics(staves.ink_mask(np.asarray(bled)))
    assert sp / 2 < t <= 0.7 * sp
    p = staves.find_staves(bled)
    assert len(p.staves) == 5 and all(9 <= st.space <= 12 for st in p.staves)
    blobs = dict(scan_negatives.negatives(seed=0, n=20))['photo-like blobs']
    for im in (blobs[6], blobs[14]):
        t, sp = staves.line_metrics(staves.ink_mask(np.asarray(im.convert('L'))))
        assert sp / 2 < t <= 0.7 * sp  # what the thickness rule alone lets through
        with pytest.raises(ValueError, match='no staff found'):
            staves.find_staves(im)


def test_draw_staves(page, tmp_path):
    p = staves.find_staves(page[0])
    im = staves.draw_staves(p)
    a = np.asarray(im)
    assert im.size == page[0].size and im.mode == 'RGB'
    red = (a[..., 0] > 200) & (a[..., 1] < 50)
    x0, y0, x1, y1 = p.staves[0].crop_box
    assert red[y0, x0:x1].mean() > 0.9  # the crop box is drawn


def test_training_images_are_single_lines():
    """Real training images (prepare.process_tune on real tunes: grace notes, triplets, ledger lines,
    all fonts) are each one staff and staves.is_single_line, so sample.py reads them as it always did;
    and their crop holds all their ink, so a page's crop keeps what a training image shows."""
    import io
    P = B.load_prepare()
    n = 0
    for src, rel, idx, text in P.list_tunes(['oneills1850', 'ryansMammoth'])[::40][:8]:
        samples, _ = P.process_tune((src, rel, idx, text, 1337, 4))
        for s in samples:
            p = staves.find_staves(Image.open(io.BytesIO(s['image'])))
            assert len(p.staves) == 1 and staves.is_single_line(p), (s['tune_id'], s['font'])
            assert p.ink_outside <= 20  # grace notes and triplet numbers included in the crop
            n += 1
    assert n >= 20


def test_plain_line_check_takes_real_lines_never_pages():
    """staves.is_plain_line, sample.py's quick path for a cropped line: True for most shipped line
    images of the three engravers (clean), and wherever it says True the full check agrees (one staff,
    is_single_line) and so does looks_like_line (--page=no). Pages, a staff with the title above it,
    two staves, a tilted line, blank, gray, noise and degenerate images: False (the full check decides)."""
    import glob
    lines = sorted(glob.glob(os.path.join(ROOT, 'reader', 'samples', 'clean_*.png'))
                   + glob.glob(os.path.join(ROOT, 'reader', 'samples', 'test_*.png')))
    yes = 0
    for path in lines:
        im = Image.open(path).convert('L')
        if staves.is_plain_line(im):
            yes += 1
            pg = staves.find_staves(im)
            assert len(pg.staves) == 1 and staves.is_single_line(pg) and staves.looks_like_line(im), path
    assert len(lines) == 24 and yes >= 20, yes
    pg = staves.find_staves(Image.open(os.path.join(HERE, 'data', 'lily_page1.png')))
    g, (st, st2) = pg.image, pg.staves[:2]
    x0, y0, x1, y1 = st2.crop_box
    assert staves.is_plain_line(g.crop(st2.crop_box))  # the staff alone is a plain line
    no = [pg.image, g.crop((0, 0, g.size[0], st.crop_box[3])),            # the page; title + first staff
          g.crop((x0, st.crop_box[1], x1, y1)),                           # two staves
          g.crop((x0, int(y0 - 8 * st2.space), x1, y1)),                  # a staff and what is above it
          g.crop(st2.crop_box).rotate(1.5, resample=Image.Resampling.BILINEAR, expand=True, fillcolor=255),
          Image.new('L', (900, 120), 255), Image.new('L', (900, 120), 128), Image.new('L', (9000, 7), 0),
          Image.fromarray((np.random.default_rng(0).random((120, 900)) * 255).astype(np.uint8))]
    assert [staves.is_plain_line(im) for im in no] == [False] * len(no)
