"""
tests/test_sample.py: sample.py end to end on CPU. A tiny model is overfitted for a few seconds on
two engraved tunes and saved with checkpoint.save_checkpoint, so the command line must print exactly
those two tunes back; then the bad-input paths (missing, empty, corrupt, non-image, huge image,
mismatched checkpoint) must each give one line on stderr, a non-zero exit and no traceback.
"""

import json
import os
import shutil
import struct
import subprocess
import sys
import zlib

import pytest
import torch
import torch.nn.functional as F

import data
import model as M
import sample
from inference import render, staves
from training import checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TUNES = ['M:4/4\nL:1/8\nK:G\nGABc d2 e2 | f2 g2 a4 |]',
         'M:3/4\nL:1/4\nK:F\nA B c | d2 z | F3 |]']
CORPUS = TUNES + ['M:6/8\nL:1/8\nK:D\nd2e fed | A3 A2 z |]', 'M:2/4\nL:1/16\nK:C\nc2d2 e2f2 | g8 |]',
                  'M:4/4\nL:1/8\nK:Bb\nB,2D2 F2B2 | d4 z4 |]'] * 3
IMG_H = 64


pytestmark = pytest.mark.usefixtures('one_thread')  # see tests/conftest.py


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
    """out_dir with ckpt_last (a tiny model that has memorized TUNES) and tokenizer.model, plus a
    folder `imgs` with the two engraved tunes."""
    root = tmp_path_factory.mktemp('sample')
    out, imgs = root / 'out', root / 'imgs'
    out.mkdir()
    imgs.mkdir()
    tok = data.Tokenizer(data.train_tokenizer(CORPUS, str(out / 'tokenizer'), vocab_size=300))
    for i, abc in enumerate(TUNES):
        engraved, _ = render.engrave(abc)
        # cropped to its staff as the page reader crops one (staves.py): tests/test_pages.py pastes these
        # lines on a page and checks that each staff reads back as its tune
        staves.find_staves(engraved.convert('L')).staves[0].crop.save(imgs / f'tune{i}.png')
    # the training batch is built exactly like sample.py builds its batch from the folder
    xs = [sample.load_image(str(imgs / f'tune{i}.png'), IMG_H, 1024, 10**8) for i in range(2)]
    wmax = max(x.shape[-1] for x in xs)
    images = torch.stack([F.pad(x, (0, wmax - x.shape[-1]), value=1.0) for x in xs])
    widths = torch.tensor([x.shape[-1] for x in xs])
    ids = [tok.encode(t) for t in TUNES]
    T = max(map(len, ids)) + 1
    idx = torch.full((2, T), tok.pad_id)
    tgt = torch.full((2, T), -1)
    for b, s in enumerate(ids):
        idx[b, :len(s) + 1] = torch.tensor([tok.bos_id] + s)
        tgt[b, :len(s) + 1] = torch.tensor(s + [tok.eos_id])
    torch.manual_seed(0)
    cfg = M.MusicTrOCRConfig(backbone='cnn_tiny', vocab_size=tok.vocab_size, n_layer=2, n_head=4, d_model=64,
                             d_ff=128, max_seq_len=64, dropout=0.0, img_height=IMG_H, pad_id=tok.pad_id,
                             bos_id=tok.bos_id, eos_id=tok.eos_id)
    m = M.MusicTrOCR(cfg)
    opt = torch.optim.AdamW(m.parameters(), lr=5e-3)
    for step in range(1, 301):  # until it has memorized both tunes (seeded: always the same step)
        m.train()
        _, loss = m(images, idx, tgt, widths)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 20 == 0 and loss.item() < 0.05:
            m.eval()
            if [tok.decode(s) for s in m.generate(images, 60, widths=widths)] == TUNES:
                break
    m.eval()
    assert [tok.decode(s) for s in m.generate(images, 60, widths=widths)] == TUNES, loss.item()
    checkpoint.save_checkpoint(str(out / 'ckpt_last'), m, dict(train_config=dict(data_dir=str(root / 'nowhere'),
                                                                        max_width=1024),
                                                      iter_num=200, best_val_loss=None, lora=None, quant=None))
    return out, imgs


def run(*args):
    env = dict(os.environ, OMP_NUM_THREADS='1')  # see one_thread()
    r = subprocess.run([sys.executable, os.path.join(ROOT, 'sample.py'), *args], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert 'Traceback' not in r.stderr, r.stderr
    return r


def one_error_line(r):
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith('error:')]
    assert r.returncode != 0 and len(lines) == 1, (r.returncode, r.stderr)
    return lines[0]


def test_single_image_prints_exactly_its_abc_and_saves_abc_png_mid(run_dir, tmp_path):
    out, imgs = run_dir
    save = tmp_path / 'pred'
    r = run(f'--out_dir={out}', f'--image={imgs / "tune0.png"}', f'--save_dir={save}', '--max_new_tokens=60')
    assert r.returncode == 0, r.stderr
    assert r.stdout == TUNES[0] + '\n'  # stdout is only the ABC
    assert (save / 'tune0.abc').read_text() == TUNES[0]
    from PIL import Image
    with Image.open(save / 'tune0.png') as im:
        assert im.mode == 'L' and im.size[0] > 100
        lo, hi = im.getextrema()
        assert lo < 64 and hi == 255  # dark ink on white paper (transparency composited onto white)
    assert (save / 'tune0.mid').read_bytes()[:4] == b'MThd'


def test_folder_transcribes_good_images_and_reports_bad_ones(run_dir, tmp_path):
    out, imgs = run_dir
    folder = tmp_path / 'mixed'
    shutil.copytree(imgs, folder)
    (folder / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n this is not really a png')
    (folder / 'notes.txt').write_text('not an image, ignored in folder mode')
    r = run(f'--out_dir={out}', f'--image={folder}', '--beam_size=2', '--max_new_tokens=60')
    assert r.returncode == 1
    assert r.stdout == f'% tune0.png\n{TUNES[0]}\n\n% tune1.png\n{TUNES[1]}\n\n'
    bad = [ln for ln in r.stderr.splitlines() if 'broken.png' in ln]
    assert len(bad) == 1 and bad[0].startswith('error:')
    assert r.stderr.strip().splitlines()[-1] == 'error: 1 of 3 image(s) could not be read'


def png_header(w, h):
    """A valid-looking PNG whose header claims w x h pixels, with almost no pixel data: enough to
    test the size limits without allocating the image."""
    def chunk(tag, payload):
        return struct.pack('>I', len(payload)) + tag + payload + struct.pack('>I', zlib.crc32(tag + payload))
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 0, 0, 0, 0))
            + chunk(b'IDAT', zlib.compress(b'\0' * 16)) + chunk(b'IEND', b''))


def test_bad_images_are_one_line_value_errors(tmp_path):
    cases = {'empty.png': (b'', 'empty file'),
             'corrupt.png': (os.urandom(500), 'not a readable image'),
             'tune.abc': (b'X:1\nK:C\nCDEF|]\n', 'not a readable image'),
             'huge.png': (png_header(9000, 9000), 'image too large'),  # 81 Mpixel > max_pixels
             'bomb.png': (png_header(60000, 60000), 'not a readable image')}  # PIL's own bomb check
    for name, (payload, expect) in cases.items():
        (tmp_path / name).write_bytes(payload)
        with pytest.raises(ValueError) as e:
            sample.load_image(str(tmp_path / name), IMG_H, 1024, 50_000_000)
        msg = str(e.value)
        assert msg.startswith(str(tmp_path / name)) and expect in msg and '\n' not in msg, msg


@pytest.mark.parametrize('kind', ['missing', 'corrupt'])
def test_bad_single_input_exits_with_one_line(run_dir, tmp_path, kind):
    out, _ = run_dir
    path = tmp_path / 'page.png'
    if kind == 'corrupt':
        path.write_bytes(os.urandom(500))
    line = one_error_line(run(f'--out_dir={out}', f'--image={path}'))
    assert str(path) in line and ('no such file' if kind == 'missing' else 'not a readable image') in line


def test_mismatched_or_missing_checkpoint_is_clear_error(run_dir, tmp_path):
    out, imgs = run_dir
    bad = tmp_path / 'bad_run'
    shutil.copytree(out, bad)
    cfg_path = bad / 'ckpt_last' / 'config.json'
    meta = json.loads(cfg_path.read_text())
    meta['model_args']['d_model'] = 32
    cfg_path.write_text(json.dumps(meta))
    line = one_error_line(run(f'--out_dir={bad}', f'--image={imgs / "tune0.png"}'))
    assert 'does not match this code' in line
    line = one_error_line(run(f'--out_dir={tmp_path / "empty_run"}', f'--image={imgs / "tune0.png"}'))
    assert 'no checkpoint' in line


def test_unengravable_prediction_still_writes_abc(tmp_path):
    # verovio rejects (or even crashes on) junk ABC; that happens in a child process, so we survive
    for i, junk in enumerate(['', 'zz((((']):
        why = sample.write_outputs(str(tmp_path), f'img{i}.png', junk)
        assert why is not None
        assert (tmp_path / f'img{i}.abc').read_text() == junk
        assert not (tmp_path / f'img{i}.png').exists() and not (tmp_path / f'img{i}.mid').exists()


def test_decode_ctc_needs_a_ctc_head(run_dir):
    out, imgs = run_dir
    line = one_error_line(run(f'--out_dir={out}', f'--image={imgs / "tune0.png"}', '--decode=ctc'))
    assert 'has no CTC head' in line
    line = one_error_line(run(f'--out_dir={out}', f'--image={imgs / "tune0.png"}', '--decode=beam'))
    assert "decode must be 'auto', 'attention' or 'ctc'" in line


def test_folder_skips_a_file_the_finder_or_the_model_crashes_on(run_dir, tmp_path, monkeypatch, capsys):
    # any exception (a bug) in the staff finder or the model costs only its file: one line on stderr,
    # the rest still written, exit status 1 at the end. The failures are injected for two marked files.
    out, imgs = run_dir
    from PIL import Image
    folder, save = tmp_path / 'mixed', tmp_path / 'pred'
    shutil.copytree(imgs, folder)
    with Image.open(imgs / 'tune0.png') as im:
        g = im.convert('L')
    g.putpixel((0, 0), 7)  # the finder's bug fires on this file
    g.save(folder / 'a_finder_bug.png')
    wide = Image.new('L', (g.size[0] + 333, g.size[1]), 255)
    wide.paste(g.convert('L'), (0, 0))
    wide.putpixel((0, 0), 255)
    wide.save(folder / 'b_model_bug.png')
    bad_w = sample.load_image(str(folder / 'b_model_bug.png'), IMG_H, 1024, 10**8).shape[-1]
    find, plain, decode = sample.staves.find_staves, sample.staves.is_plain_line, sample.pages.Reader.decode

    def buggy(check):  # the bug fires in the quick line check and in the full finder alike
        def f(im, *a, **k):
            if im.getpixel((0, 0)) == 7:
                raise IndexError('index 100 is out of bounds for axis 0 with size 100')
            return check(im, *a, **k)
        return f

    def buggy_decode(self, xs):
        if any(x.shape[-1] == bad_w for x in xs):
            raise RuntimeError('CUDA error: an illegal memory access was encountered')
        return decode(self, xs)

    monkeypatch.setattr(sample.staves, 'find_staves', buggy(find))
    monkeypatch.setattr(sample.staves, 'is_plain_line', buggy(plain))
    monkeypatch.setattr(sample.pages.Reader, 'decode', buggy_decode)
    for k, v in dict(out_dir=str(out), image=str(folder), save_dir=str(save), max_new_tokens=60, page='auto',
                     beam_size=1, attention=None).items():
        monkeypatch.setattr(sample, k, v)
    with pytest.raises(SystemExit) as e:
        sample.main()
    assert str(e.value) == 'error: 2 of 4 image(s) could not be read'
    cap = capsys.readouterr()
    assert cap.out == f'% tune0.png\n{TUNES[0]}\n\n% tune1.png\n{TUNES[1]}\n\n'
    errs = cap.err.strip().splitlines()
    assert len(errs) == 2 and 'a_finder_bug.png: unexpected IndexError' in errs[0]
    assert 'b_model_bug.png: unexpected RuntimeError' in errs[1]
    assert sorted(p.name for p in save.glob('*.abc')) == ['tune0.abc', 'tune1.abc']
    # one file asked for, and it fails: one line (a ValueError that __main__ prints), no traceback
    monkeypatch.setattr(sample, 'image', str(folder / 'a_finder_bug.png'))
    with pytest.raises(ValueError, match='a_finder_bug.png: unexpected IndexError'):
        sample.main()


def test_plain_line_skips_the_staff_finder_pages_and_blanks_do_not(tmp_path, monkeypatch):
    """load_input's quick path (staves.is_plain_line): a shipped line image is read as a line in both
    --page=auto and --page=no without the full staff finder or looks_like_line being called; a page
    still goes to the finder and is split into its staves; a blank image still gets the one-line
    'no staff found' error in both modes."""
    from PIL import Image
    line = os.path.join(ROOT, 'reader', 'samples', 'clean_verovio_folk.png')
    page = os.path.join(ROOT, 'tests', 'data', 'lily_page1.png')
    Image.new('L', (900, 120), 255).save(tmp_path / 'blank.png')
    calls = []
    find, looks = staves.find_staves, staves.looks_like_line
    monkeypatch.setattr(staves, 'find_staves', lambda im, *a, **k: calls.append('find') or find(im, *a, **k))
    monkeypatch.setattr(staves, 'looks_like_line', lambda im: calls.append('looks') or looks(im))
    for mode in ('auto', 'no'):
        monkeypatch.setattr(sample, 'page', mode)
        j = sample.load_input(line, IMG_H, 1024)
        assert j['kind'] == 'line' and len(j['xs']) == 1 and j['xs'][0].shape[1] == IMG_H and calls == []
        with pytest.raises(ValueError, match=r'blank.png: no staff found') as e:
            sample.load_input(str(tmp_path / 'blank.png'), IMG_H, 1024)
        assert '\n' not in str(e.value) and calls
        calls.clear()
    monkeypatch.setattr(sample, 'page', 'auto')
    j = sample.load_input(page, IMG_H, 1024)
    assert j['kind'] == 'page' and len(j['xs']) == 5 and calls == ['find']
