"""
sample.py: transcribe images of engraved music to ABC with a trained MusicTrOCR checkpoint.

    $ python sample.py --image=line.png                                # the reader shipped in reader/
    $ python sample.py --out_dir=out-quick --image=page.png            # your own run; ABC on stdout
    $ python sample.py --out_dir=out-quick --image=scans/ --beam_size=4 --save_dir=preds

--image is one image file or a folder (every *.png/.jpg/.jpeg/.bmp/.gif/.tif/.tiff/.webp file in it,
sorted by name; other files are ignored). For one image stdout is exactly its ABC, so it can be piped
into a file; for several, each transcription is preceded by an ABC comment line `% <file name>`.
With --save_dir, each image also gets <stem>.abc, <stem>.png (the prediction re-engraved with
verovio, to compare with the input by eye) and <stem>.mid (verovio's MIDI of the prediction).

The checkpoint is <out_dir>/ckpt_best, else <out_dir>/ckpt_last, else out_dir itself (the layout
of reader/, the CPU-trained reader that ships with the repo and is the default); the tokenizer is
<out_dir>/tokenizer.model (train.py copies it there), else the one in the run's data_dir.
--decode=ctc reads a joint CTC/attention model's CTC head instead (one pass, no decoding loop);
'auto' uses what the checkpoint's config.json recommends ('decode'), else the attention decoder.
Images go through data.py's own preprocessing (gray, resize to the model's height), so the model
sees exactly what it saw in training.

Errors: a missing/empty/corrupt/non-image file or an absurdly large image prints one line on stderr.
A single bad image is fatal (exit 1). In a folder the good images are still transcribed, each bad
one is reported and skipped, and the exit status is 1 if any image failed (so scripts notice).
A prediction that verovio cannot engrave still gets its .abc; a warning goes to stderr (exit 0).
"""

import base64
import contextlib
import io
import os
import sys
import warnings

# -----------------------------------------------------------------------------
# config: override on the command line as --key=value (nanoGPT's configurator)
out_dir = 'reader'       # a train.py out_dir, or a checkpoint folder (reader/: the shipped CPU reader)
image = None             # an image file or a folder of images
decode = 'auto'          # 'attention' (the decoder, greedy or beam), 'ctc' (best path), 'auto' (the checkpoint's choice)
beam_size = 1            # 1 = greedy
temperature = 0.0        # > 0 samples instead (beam_size must then be 1)
top_k = None
max_new_tokens = None    # None = up to the model's max_seq_len
batch_size = 8           # images decoded together (padded with white, masked in cross-attention)
device = 'cpu'           # 'cpu', 'cuda', 'cuda:1', 'mps'
save_dir = None          # write <stem>.abc/.png/.mid here
seed = 1337              # only matters with temperature > 0
max_pixels = 50_000_000  # refuse bigger images (a decompression bomb would eat all memory)
# -----------------------------------------------------------------------------
config_keys = [k for k, v in globals().items() if not k.startswith('_')
               and isinstance(v, (int, float, bool, str, type(None)))]

IMAGE_EXTS = ('.png', '.jpg', '.jpeg', '.bmp', '.gif', '.tif', '.tiff', '.webp')


def find_checkpoint(out_dir):
    for d in (os.path.join(out_dir, 'ckpt_best'), os.path.join(out_dir, 'ckpt_last'), out_dir):
        if os.path.isfile(os.path.join(d, 'config.json')):
            return d
    raise FileNotFoundError(f"no checkpoint in {out_dir} (looked for ckpt_best/, ckpt_last/ and a config.json); "
                            f"train one with: python train.py --out_dir={out_dir}")


def find_tokenizer(out_dir, meta):
    candidates = [os.path.join(out_dir, 'tokenizer.model')]
    data_dir = (meta.get('train_config') or {}).get('data_dir')
    if data_dir:
        candidates.append(os.path.join(data_dir, 'tokenizer.model'))
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"no tokenizer: looked for {' and '.join(candidates)}")


def list_images(path):
    """[path] for a file, the image files of a folder (sorted), FileNotFoundError if neither."""
    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path)
                       if f.lower().endswith(IMAGE_EXTS) and os.path.isfile(os.path.join(path, f)))
        if not files:
            raise FileNotFoundError(f"no image files ({', '.join(IMAGE_EXTS)}) in folder {path}")
        return files
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file or folder: {path}")
    return [path]


def load_image(path, img_height, max_width, max_pixels):
    """An image file -> (3, img_height, W) float32 in [0, 1], preprocessed exactly like data.py's
    OMRDataset (gray with transparency as white paper, resize to the height keeping the aspect).
    Any problem -> ValueError with one line naming the file."""
    import torch
    from PIL import Image
    import data
    if os.path.getsize(path) == 0:
        raise ValueError(f"{path}: empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('error', Image.DecompressionBombWarning)
            with Image.open(path) as im:  # lazy: only the header is read here
                w, h = im.size
                if w * h > max_pixels:
                    raise ValueError(f"image too large ({w}x{h} = {w * h:,} pixels > max_pixels={max_pixels:,})")
                arr = data.preprocess(im, img_height, max_width)  # exactly what training saw
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    except Exception as e:  # PIL: UnidentifiedImageError, truncated files, bombs, OSError ...
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"{path}: not a readable image ({msg})") from None
    x = torch.from_numpy(arr).unsqueeze(0).float().div_(255.0)  # (1, H, W), paper = 1.0
    return x.expand(3, -1, -1)  # (3, H, W), as OMRDataset returns it


def engrave(abc):
    """ABC -> (grayscale PIL image of the engraving, MIDI bytes) with verovio; ValueError if it fails.
    The transcriptions carry no 'X:' line (the data engine engraves them with 'X:1' prepended), so we
    add it the same way."""
    import numpy as np
    import resvg_py
    import verovio
    from PIL import Image
    verovio.enableLog(verovio.LOG_OFF)
    tk = verovio.toolkit()  # a fresh toolkit per tune: verovio's ABC reader keeps state between loads
    tk.setOptions({'breaks': 'none', 'pageWidth': 60000, 'adjustPageWidth': True, 'adjustPageHeight': True,
                   'header': 'none', 'footer': 'none', 'scale': 50})
    text = abc if abc.lstrip().startswith('X:') else 'X:1\n' + abc + '\n'
    if not abc.strip() or not tk.loadData(text) or tk.getPageCount() < 1:
        raise ValueError("verovio could not read the ABC")
    svg = tk.renderToSVG(1)
    # drawn onto white paper, as data/m21/prepare.py rasterizes (resvg's default is transparent -> black)
    png = resvg_py.svg_to_bytes(svg_string=svg, background='#ffffff')
    gray = Image.open(io.BytesIO(bytes(png))).convert('L')
    if np.asarray(gray).min() == 255:
        raise ValueError("verovio drew nothing")
    midi = base64.b64decode(tk.renderToMIDI())
    return gray, midi


def engrave_to_files(abc_path, png_path, mid_path):
    """Child-process entry point: engrave the ABC in abc_path, write the PNG and MIDI."""
    with open(abc_path, encoding='utf-8') as f:
        img, midi = engrave(f.read())
    img.save(png_path, format='PNG')
    with open(mid_path, 'wb') as f:
        f.write(midi)


def write_outputs(save_dir, src_path, abc, timeout=120):
    """<stem>.abc always; <stem>.png and <stem>.mid if verovio can engrave the ABC. Returns None, or
    the one-line reason engraving failed.
    Engraving runs in a child process: verovio can crash (segfault) or hang on malformed ABC, which
    is exactly what an untrained or confused model writes, and that must not take sample.py down.
    The child writes temp files that we rename into place only if it succeeded (atomic writes)."""
    import subprocess
    stem = os.path.splitext(os.path.basename(src_path))[0]
    os.makedirs(save_dir, exist_ok=True)
    abc_path, png_path, mid_path = (os.path.join(save_dir, stem + ext) for ext in ('.abc', '.png', '.mid'))
    with open(abc_path + '.tmp', 'w', encoding='utf-8') as f:
        f.write(abc)
    os.replace(abc_path + '.tmp', abc_path)
    here = os.path.dirname(os.path.abspath(__file__))
    code = 'import sys; sys.path.insert(0, sys.argv[1]); import sample; sample.engrave_to_files(*sys.argv[2:])'
    try:
        r = subprocess.run([sys.executable, '-c', code, here, abc_path, png_path + '.tmp', mid_path + '.tmp'],
                           capture_output=True, text=True, timeout=timeout)
        if r.returncode == 0:
            os.replace(png_path + '.tmp', png_path)
            os.replace(mid_path + '.tmp', mid_path)
            return None
        lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
        why = (lines[-1].split(': ', 1)[-1] if lines and r.returncode > 0
               else f"verovio crashed (exit status {r.returncode})")
    except subprocess.TimeoutExpired:
        why = f"verovio took more than {timeout} s"
    finally:
        for tmp in (png_path + '.tmp', mid_path + '.tmp'):
            if os.path.exists(tmp):
                os.remove(tmp)
    # no stale engraving of an earlier prediction may sit next to this .abc
    for stale in (png_path, mid_path):
        if os.path.exists(stale):
            os.remove(stale)
    return why


def main():
    if image is None:
        raise ValueError("nothing to transcribe: give --image=<file or folder>")
    if beam_size < 1 or batch_size < 1:
        raise ValueError("beam_size and batch_size must be >= 1")
    if decode not in ('auto', 'attention', 'ctc'):
        raise ValueError(f"decode must be 'auto', 'attention' or 'ctc', got {decode!r}")
    paths = list_images(str(image))  # before importing torch and loading the model: a typo fails fast
    import torch
    import torch.nn.functional as F
    import data
    from model import load_model, read_meta
    ckpt = find_checkpoint(out_dir)
    meta = read_meta(ckpt)  # cheap: config.json only, enough to preprocess the images
    img_height = meta['model_args'].get('img_height', 224)
    max_width = (meta.get('train_config') or {}).get('max_width', 2048)

    # load every image first: bad ones are reported and skipped, good ones decoded in batches
    good, failed = [], 0
    for p in paths:
        try:
            good.append((p, load_image(p, img_height, max_width, max_pixels)))
        except (ValueError, OSError) as e:
            if not os.path.isdir(str(image)):
                raise  # one image asked for, and it is bad: that is the one error line
            print(f"error: {e}", file=sys.stderr)
            failed += 1

    if not good:
        sys.exit(f"error: none of the {len(paths)} image(s) could be read")
    model, meta = load_model(ckpt, device)
    model.eval()
    tok = data.Tokenizer(find_tokenizer(out_dir, meta))
    cfg = model.config
    if tok.vocab_size > cfg.vocab_size:
        raise ValueError(f"tokenizer has {tok.vocab_size} pieces but the checkpoint was trained "
                         f"with vocab_size={cfg.vocab_size}")
    n_new = max_new_tokens or cfg.max_seq_len
    how = meta.get('decode', 'attention') if decode == 'auto' else decode
    if how == 'ctc' and cfg.ctc_weight <= 0:
        raise ValueError(f"--decode=ctc: the checkpoint in {ckpt} has no CTC head (trained with ctc_weight=0)")
    torch.manual_seed(seed)
    many = len(paths) > 1
    for i in range(0, len(good), batch_size):
        chunk = good[i:i + batch_size]
        wmax = max(x.shape[-1] for _, x in chunk)
        # right-pad with white like data.collate; widths make the model ignore the padding
        images = torch.stack([F.pad(x, (0, wmax - x.shape[-1]), value=1.0) for _, x in chunk]).to(device)
        widths = torch.tensor([x.shape[-1] for _, x in chunk], device=device)
        with torch.inference_mode():
            if how == 'ctc':
                ids = model.ctc_decode(images, widths)
            else:
                ids = model.generate(images, n_new, temperature=temperature, top_k=top_k,
                                     beam_size=beam_size, widths=widths)
        for (p, _), seq in zip(chunk, ids):
            abc = tok.decode(seq)
            if many:
                print(f"% {os.path.basename(p)}")
            print(abc, flush=True)
            if many:
                print()
            if save_dir is not None:
                why = write_outputs(save_dir, p, abc)
                if why is not None:
                    print(f"warning: {p}: prediction could not be engraved ({why}); wrote only the .abc",
                          file=sys.stderr)
    if failed:
        sys.exit(f"error: {failed} of {len(paths)} image(s) could not be read")


if __name__ == '__main__':
    # the configurator reports overrides on stdout; send that to stderr so stdout is only ABC
    with contextlib.redirect_stdout(sys.stderr):
        exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configurator.py')).read())
    try:
        main()
    except (ValueError, FileNotFoundError, RuntimeError, OSError) as e:
        sys.exit(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    except KeyboardInterrupt:
        sys.exit("error: interrupted")
