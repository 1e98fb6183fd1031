"""
tests/test_degrade.py: each scan degradation (degrade.py) changes a real engraved line the way it says,
the pipeline is a pure function of its seed, the training switch (augment_scan) is off by default and
then leaves the loader's images bit-identical, the paired test split (python -m core.degrade --data_dir=...) holds the
same excerpts degraded, and the staff check (staves.looks_like_line / sample.load_input) still takes
degraded real lines while turning down blank, uniform and noise images.
"""
import io
import os

import numpy as np
import pytest
import torch
from PIL import Image

import data
from core import degrade, images
from inference import staves

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(ROOT, 'reader', 'samples')


def line(k=1):
    """a real engraved line (one of the reader's shipped test images), gray uint8 (H, W)."""
    with Image.open(os.path.join(SAMPLES, f'test_{k}.png')) as im:
        return np.array(images.to_gray(im))


def sharpness(a):
    """mean absolute horizontal + vertical gradient: edges blur away, this falls."""
    a = a.astype(np.float32)
    return float(np.abs(np.diff(a, axis=0)).mean() + np.abs(np.diff(a, axis=1)).mean())


def test_rotation_tilts_the_staff_lines_by_the_angle():
    a = line()
    assert abs(staves.skew_angle(staves.ink_mask(a))) < 0.05
    for deg in (1.5, -2.0, 0.7):
        b = degrade.rotate(a, deg)
        # PIL turns counter-clockwise for deg > 0: the lines then rise to the right (y falls with x)
        assert staves.skew_angle(staves.ink_mask(b)) == pytest.approx(-deg, abs=0.1)
        assert b.shape[0] > a.shape[0] and b.dtype == np.uint8  # the canvas grew: no note is cut off
        assert (255 - b.astype(int)).sum() == pytest.approx((255 - a.astype(int)).sum(), rel=0.03)  # ink kept


def test_blur_lowers_edge_sharpness_and_more_with_sigma():
    a = line()
    s = [sharpness(degrade.blur(a, sig, unit=a.shape[0] / 64)) for sig in (0.0, 0.4, 1.0)]
    assert s[0] == pytest.approx(sharpness(a)) and s[0] > 1.2 * s[1] > 1.2 * s[2]


def test_binarize_leaves_two_values_and_keeps_the_ink():
    a = degrade.light(degrade.fade(line(), np.random.default_rng(0), 0.4), np.random.default_rng(1), 0.3)
    for local in (False, True):
        b = degrade.binarize(a, local=local, unit=a.shape[0] / 64)
        assert set(np.unique(b).tolist()) == {0, 255}
        ink = line() < 128
        assert (b[ink] == 0).mean() > 0.8 and (b[~ink] == 255).mean() > 0.9  # ink stays ink, paper paper


def test_jpeg_quality_trades_size_for_error():
    a = degrade.noise(line(), np.random.default_rng(0), 0.03)
    sizes, errs = [], []
    for q in (20, 50, 90):
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format='JPEG', quality=q)
        sizes.append(len(buf.getvalue()))
        errs.append(np.abs(degrade.jpeg(a, q).astype(int) - a).mean())
    assert sizes[0] < sizes[1] < sizes[2] and errs[0] > errs[1] > errs[2] > 0


def test_noise_paper_light_fade_bleed_do_what_they_say():
    a = line()
    rng = np.random.default_rng(0)
    paper_px = a == 255
    n = degrade.noise(a, rng, 0.05).astype(np.float32)
    assert (n[paper_px] - 255).std() == pytest.approx(0.05 * 255 / 2, rel=0.35)  # half of it clipped above 255
    p = degrade.paper(a, rng, tone=0.1, grain=0.1)
    assert 255 * 0.8 < p[paper_px].mean() < 255 * 0.9 + 1 and p[paper_px].std() > 3  # darker, grainy sheet
    lit = degrade.light(a, rng, 0.4).astype(np.float32)
    cols = lit[:, :].max(0)  # the paper's brightness along the line: falls off to one side
    assert cols.max() - cols.min() > 0.15 * 255
    ink = a < 128
    f = degrade.fade(a, rng, 0.5)
    assert (255 - f[ink].astype(int)).mean() < 0.8 * (255 - a[ink].astype(int)).mean()  # fainter ink
    b = degrade.ink_bleed(a, 0.8, unit=a.shape[0] / 64)
    assert (b < 128).sum() > 1.1 * ink.sum()  # strokes thicker
    q = degrade.perspective(a, rng, 0.04)
    assert q.shape == a.shape and np.abs(q.astype(int) - a).mean() > 1
    assert (255 - q.astype(int)).sum() == pytest.approx((255 - a.astype(int)).sum(), rel=0.08)  # no ink cut off


def test_scan_is_a_pure_function_of_its_seed():
    a = line(2)
    for preset in degrade.PRESETS:
        x = degrade.scan(a, np.random.default_rng(7), preset)
        y = degrade.scan(a, np.random.default_rng(7), preset)
        z = degrade.scan(a, np.random.default_rng(8), preset)
        assert x.dtype == np.uint8 and x.ndim == 2 and x.flags.writeable
        assert x.shape[0] >= a.shape[0] - 1 and x.shape[1] >= a.shape[1] - 1
        assert np.array_equal(x, y) and not (x.shape == z.shape and np.array_equal(x, z))
    with pytest.raises(ValueError, match='preset'):
        degrade.scan(a, np.random.default_rng(0), 'ultra')
    im = degrade.scan_image(Image.open(os.path.join(SAMPLES, 'test_2.png')), [0, 5], 'heavy')
    assert im.mode == 'L'


@pytest.mark.usefixtures('one_thread')
def test_augment_scan_off_is_bit_identical_and_on_draws_its_own_stream(tiny_corpus):
    tok = data.Tokenizer(os.path.join(tiny_corpus, 'tokenizer.model'))
    kw = dict(img_height=64, max_width=1024, augment=True, seed=3)
    plain = data.OMRDataset(tiny_corpus, 'train', tok, **kw)
    off = data.OMRDataset(tiny_corpus, 'train', tok, scan=0.0, **kw)
    on = data.OMRDataset(tiny_corpus, 'train', tok, scan=0.5, **kw)
    collate = data.Collate(tok.pad_id)
    n = min(16, len(plain))
    p = [plain[i] for i in range(n)]
    b0, b1 = collate(p), collate([off[i] for i in range(n)])
    assert all(torch.equal(b0[k], b1[k]) for k in ('images', 'widths', 'idx', 'targets'))
    x = [on[i]['image'] for i in range(n)]
    same = [torch.equal(p[i]['image'], x[i]) for i in range(n)]
    # about half are scanned; the rest are exactly the scan=0 images (the scan stream is its own)
    assert 0.2 * n <= same.count(False) <= 0.8 * n
    assert all(t.shape[1] == 64 and t.shape[2] <= 1024 and t.dtype == torch.float32 for t in x)
    k = same.index(False)
    assert torch.equal(x[k], on[k]['image'])  # the same (seed, epoch, row): the same scan
    on.set_epoch(1)
    plain.set_epoch(1)
    assert [torch.equal(plain[i]['image'], on[i]['image']) for i in range(n)] != same  # new draws each epoch
    with pytest.raises(ValueError, match='preset'):
        data.OMRDataset(tiny_corpus, 'train', tok, scan=0.5, scan_preset='ultra', **kw)


def test_degraded_test_split_is_paired(tiny_corpus, tmp_path):
    import shutil
    corpus = str(tmp_path / 'corpus')  # a copy: the session's corpus keeps its three splits
    shutil.copytree(tiny_corpus, corpus, ignore=shutil.ignore_patterns('cache'))
    name = degrade.degrade_split(corpus, 'test', 'medium', seed=0)
    assert name == 'test_scan'
    clean, scan = data.load_split(corpus, 'test'), data.load_split(corpus, 'test_scan')
    assert list(clean['transcription']) == list(scan['transcription']) and list(clean['tune_id']) == list(scan['tune_id'])
    a, b = np.asarray(clean[0]['image'].convert('L')), np.asarray(scan[0]['image'].convert('L'))
    expect = np.asarray(degrade.scan_image(clean[0]['image'], [0, 0], 'medium'))
    assert np.array_equal(b, expect) and not (a.shape == b.shape and np.array_equal(a, b))
    assert len(data.load_split(corpus, 'train')) == len(data.load_split(tiny_corpus, 'train'))  # the rest intact
    assert degrade.degrade_split(corpus, 'test', 'medium', seed=0) == 'test_scan'  # again: replaced, listed once
    import json
    assert json.load(open(os.path.join(corpus, 'dataset_dict.json')))['splits'].count('test_scan') == 1


def test_staff_check_takes_degraded_lines_and_rejects_no_music(tmp_path):
    import sample
    for k, preset in ((3, 'medium'), (7, 'heavy')):  # as sample.py gets them: a file, both page modes
        path = str(tmp_path / f'scan_{k}.png')
        degrade.scan_image(Image.open(os.path.join(SAMPLES, f'test_{k}.png')), k, preset).save(path)
        for mode in ('auto', 'no'):
            old, sample.page = sample.page, mode
            try:
                assert sample.load_input(path, 64, 1024)['kind'] == 'line'
            finally:
                sample.page = old
    for k in range(12):
        with Image.open(os.path.join(SAMPLES, f'test_{k}.png')) as im:
            for preset, seed in (('medium', k), ('heavy', 100 + k)):
                d = degrade.scan_image(im, seed, preset)
                assert staves.looks_like_line(d), (k, preset)
    rng = np.random.default_rng(0)
    blank = Image.new('L', (900, 120), 255)
    gray = Image.new('L', (900, 120), 128)
    noise = Image.fromarray((rng.random((120, 900)) * 255).astype(np.uint8))
    photo = Image.fromarray((rng.random((12, 16)) * 255).astype(np.uint8)).resize((900, 300))
    paper = degrade.scan_image(blank, 0, 'heavy')  # scanned empty paper is still no music
    for im in (blank, gray, noise, photo, paper):
        assert not staves.looks_like_line(im)
