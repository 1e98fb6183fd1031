"""
tests/test_clutter.py: page text around a training staff (core/clutter.py): it finds the staff of real
shipped lines of every engraver, only adds ink (text) and never moves the music, is a pure function of its
seed, and the training switch (augment_clutter) is off by default, draws its own stream and leaves the
scan stream as it was.
"""
import glob
import os

import numpy as np
import pytest
import torch
from PIL import Image

import data
from core import clutter, images

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(ROOT, 'reader', 'samples')


def line(name, h=64):
    with Image.open(os.path.join(SAMPLES, name)) as im:
        return images.preprocess(im, h, 4096)


def test_staff_lines_of_real_lines_from_every_engraver():
    names = [os.path.basename(p) for p in sorted(glob.glob(os.path.join(SAMPLES, 'clean_*.png')))]
    assert {n.split('_')[1] for n in names} == {'verovio', 'lilypond', 'abcm2ps'}
    for n in names + ['test_0.png', 'test_5.png']:
        a = line(n)
        top, bot = clutter.staff_lines(a)
        # the five lines are the darkest rows: each measured line row is far darker than the mean row
        d = (255 - a.astype(float)).mean(1)
        assert 0 <= top < bot < a.shape[0] and 3 <= (bot - top) / 4 <= 12, n
        assert d[int(round(top))] > 2 * d.mean() and d[int(round(bot))] > 2 * d.mean(), n
    assert clutter.staff_lines(np.full((64, 300), 255, np.uint8)) is None  # blank
    assert clutter.staff_lines(np.random.default_rng(0).integers(0, 256, (64, 300)).astype(np.uint8)) is None


def test_text_is_added_and_the_music_kept():
    a = line('test_0.png')
    kept = grown = 0
    for s in range(40):
        b = clutter.add(a, np.random.default_rng(s), 64, 4096)
        assert b.dtype == np.uint8 and b.shape[0] == 64 and b.flags.writeable
        if b.shape == a.shape:  # the music's own rows: text only darkens paper, every music pixel is where it was
            assert (b <= a).all()
            kept += 1
            if (b < a).any():
                top, bot = clutter.staff_lines(a)
                changed = np.nonzero((b < a).any(1))[0]
                assert ((changed < top) | (changed > bot)).any()  # text sits above or below the staff
        else:  # a short text band joined the crop: the line is scaled to fit 64 rows, so it is narrower
            assert b.shape[1] < a.shape[1]
            grown += 1
    assert kept >= 15 and grown >= 2
    x = clutter.add(a, np.random.default_rng(7), 64, 4096)
    assert np.array_equal(x, clutter.add(a, np.random.default_rng(7), 64, 4096))
    blank = np.full((64, 300), 255, np.uint8)
    assert np.array_equal(clutter.add(blank, np.random.default_rng(0)), blank)  # no staff: left as it is


@pytest.mark.usefixtures('one_thread')
def test_augment_clutter_draws_its_own_stream(tiny_corpus):
    tok = data.Tokenizer(os.path.join(tiny_corpus, 'tokenizer.model'))
    kw = dict(img_height=64, max_width=1024, seed=3)
    scan = data.OMRDataset(tiny_corpus, 'train', tok, scan=0.5, **kw)
    both = data.OMRDataset(tiny_corpus, 'train', tok, scan=0.5, clutter=0.5, **kw)
    n = min(16, len(scan))
    same = [torch.equal(scan[i]['image'], both[i]['image']) for i in range(n)]
    # about half get text; the others are exactly the scan-only images (the scan stream is unchanged)
    assert 0.2 * n <= same.count(False) <= 0.8 * n
    k = same.index(False)
    assert torch.equal(both[k]['image'], both[k]['image']) and both[k]['text'] == scan[k]['text']  # labels keep no text
    with pytest.raises(ValueError, match='augment_clutter'):
        data.OMRDataset(tiny_corpus, 'train', tok, clutter=1.5, **kw)
