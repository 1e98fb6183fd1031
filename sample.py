"""
sample.py: transcribe images of engraved music to ABC with a trained MusicTrOCR checkpoint.

    $ python sample.py --image=line.png                                # the reader shipped in reader/
    $ python sample.py --out_dir=out-quick --image=page.png            # a page: one tune, ABC on stdout
    $ python sample.py --out_dir=out-quick --image=score.pdf --save_dir=preds --attention=attn
    $ python sample.py --out_dir=out-quick --image=scans/ --beam_size=4 --save_dir=preds

--image is one image file, a PDF, a multi-page TIFF (GIF, WebP), or a folder (every
*.png/.jpg/.jpeg/.bmp/.gif/.tif/.tiff/.webp/.pdf file in it, sorted by name; other files are ignored). For one input stdout is exactly its ABC, so it
can be piped into a file; for several, each transcription is preceded by an ABC comment line
`% <file name>`.

Pages (pages.py, staves.py): with --page=auto (the default) an image that is one cropped line of
music goes to the model as it is, exactly as before; any other image, and every PDF (rendered a page
at a time with pypdfium2) or image of several frames (a scanner's multi-page TIFF), is a page: its
staves are found, cut out like training images, transcribed in batches and joined into ONE tune
(header once, one ABC line per staff, inline [K:..]/[M:..] where they change). A file of several pages
is one tune of all of them; a page with no staff (a title or blank page) is skipped with a note, and
from PROGRESS_PAGES pages on each page is reported on stderr. White ink on black reads as black on
white (images.to_gray). --page=yes forces page mode, --page=no line mode. A staff the model cannot
read is reported on stderr and left out; the rest still comes out.
--page=systems (a multi-voice model, issue 12) is page mode by systems: staves joined by a brace, a
bracket or a bar line through the gap between them are one system (systems.py), each system's crop
is one transcription (multi-voice ABC: '%%score', 'V:n' lines, one '[V:n]' line per voice), and the
systems of a page join voice by voice (inference/tune.py join_lines: each voice's bars appended to its line). A
page of single staves gives one system per staff, so it reads as with --page=yes.

With --save_dir, each input also gets <stem>.abc, <stem>.png (the prediction re-engraved with
verovio, to compare with the input by eye), <stem>.mid (verovio's MIDI), <stem>.musicxml (abc2xml
after musicxml.py's bar repair; MuseScore opens it) and, for pages, <stem>.staves.png (the page with
every staff found boxed and numbered, with --page=systems every system of several staves boxed in
green; <stem>.p<N>.staves.png per page of a multi-page PDF).
--attention=DIR writes, per line, a picture of where the decoder looked for every token it wrote
(attention.py; <stem>.attn.png for a line image, <stem>.staff<K>.attn.png for the staves of a page,
<stem>.system<K>.attn.png for its systems with --page=systems).

The checkpoint is <out_dir>/ckpt_best, else <out_dir>/ckpt_last, else out_dir itself (the layout
of reader/, the CPU-trained reader that ships with the repo and is the default); the tokenizer is
<out_dir>/tokenizer.model (train.py copies it there), else the one in the run's data_dir.
--decode=ctc reads a joint CTC/attention model's CTC head instead (one pass, no decoding loop);
'auto' uses the checkpoint's config.json 'decode': the decoding that scored better on val when train.py saved it.
Images go through data.py's own preprocessing (gray, resize to the model's height), so the model
sees exactly what it saw in training.

Errors: a missing/empty/corrupt/non-image file, a broken or encrypted PDF, an image or page with no
staff (blank, uniform, a photo: 'no staff found', never invented ABC), or an absurdly large image
prints one line on stderr.
A single bad image is fatal (exit 1). In a folder the good images are still transcribed, each bad
one, or one that fails in any way (an unexpected exception in the staff finder or the model included),
is reported on one line and skipped, and the exit status is 1 if any image failed (so scripts notice).
A prediction that verovio cannot engrave still gets its .abc; a warning goes to stderr (exit 0).
"""

import contextlib
import os
import subprocess
import sys

import torch

from core.files import atomic_path, atomic_write
from inference import attention as A
from inference import musicxml, pages, staves, systems, tune
from inference.pages import is_pdf, read_image, read_pdf, to_tensor
from training import checkpoint

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
page = 'auto'            # 'auto': pages and PDFs are split into staves, a cropped line is read as is; 'yes', 'no';
                         # 'systems': a page, read one system (staves joined by a brace/bracket/bar line) at a time
respace = True           # a page's staves spread wider than a training line are read again squeezed (pages.Reader.respace)
attention = None         # a folder: per line, a picture of the cross-attention for every generated token
attention_layer = 'last' # 'last' (mean of the last layer's heads) or 'all' (mean over layers and heads)
# -----------------------------------------------------------------------------
config_keys = [k for k, v in globals().items() if not k.startswith('_')
               and isinstance(v, (int, float, bool, str, type(None)))]

PROGRESS_PAGES = 4       # a file of this many pages or more reports each page on stderr as it is read
IMAGE_EXTS = ('.png', '.jpg', '.jpeg', '.bmp', '.gif', '.tif', '.tiff', '.webp', '.pdf')


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
    return to_tensor(read_image(path, max_pixels), img_height, max_width)


def write_outputs(save_dir, src_path, abc, timeout=120):
    """<stem>.abc always; <stem>.png and <stem>.mid if verovio can engrave the ABC. Returns None, or
    the one-line reason engraving failed.
    Engraving runs in a child process: verovio can crash (segfault) or hang on malformed ABC, which
    is exactly what an untrained or confused model writes, and that must not take sample.py down.
    The child writes temp files that we rename into place only if it succeeded (atomic writes)."""
    stem = os.path.splitext(os.path.basename(src_path))[0]
    os.makedirs(save_dir, exist_ok=True)
    abc_path, png_path, mid_path = (os.path.join(save_dir, stem + ext) for ext in ('.abc', '.png', '.mid'))
    atomic_write(abc_path, abc)
    # `python -m inference.render` from this file's folder (the repository), hence absolute paths
    paths = [os.path.abspath(p) for p in (abc_path, png_path + '.tmp', mid_path + '.tmp')]
    try:
        r = subprocess.run([sys.executable, '-m', 'inference.render', *paths], cwd=os.path.dirname(os.path.abspath(__file__)),
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


def load_input(path, img_height, max_width):
    """One input file -> dict(kind='line'|'page', xs=[(3, H, W) tensor per line], pages=[staves.Page]).
    'line': the image goes to the model as it is (today's behaviour for a cropped line of music).
    'page': the staves are found and each crop is one line. --page=auto decides per image (first
    staves.is_plain_line, a quick look that accepts a plainly cropped line, else as follows): one staff
    in an image at most ~one staff tall (staves.is_single_line) is a line; an image where no staff
    is found but that is shaped like a line (at least twice as wide as high) and has staff-like dark
    rows on paper (staves.looks_like_line: a low-resolution line) is one too; a blank, uniform or
    photo-like image is 'no staff found', in every mode; everything else is a page. PDFs, and images
    of several frames (a multi-page TIFF, an animated GIF or WebP), are always pages: all of them, one
    tune, a page without a staff skipped with a note. Problems -> ValueError, one line."""
    n_pages = pages.pdf_pages(path) if is_pdf(path) else pages.count_frames(path)
    if is_pdf(path) or n_pages > 1:  # a PDF, a multi-page TIFF (a scanner's), GIF or WebP: one tune of all pages
        if page == 'no':
            raise ValueError(f"{path}: it holds pages ({n_pages}); --page=no reads only cropped line images")
        found = []
        frames = read_pdf(path, max_pixels) if is_pdf(path) else pages.read_frames(path, max_pixels)
        for n, im in frames:
            if n_pages >= PROGRESS_PAGES:
                print(f"{path}: page {n} of {n_pages}", file=sys.stderr, flush=True)
            try:
                found.append(staves.find_staves(im))
            except ValueError as e:
                print(f"note: {path}: page {n} of {n_pages}: {e} (a title or blank page?); skipped", file=sys.stderr)
        if not found:
            raise ValueError(f"{path}: no staff found on any of its {n_pages} pages")
        return _page_input(found, img_height, max_width)
    im = read_image(path, max_pixels)
    # most inputs are plainly one cropped line: a quick look (staves.is_plain_line) says so, and the
    # full staff finder, ~10x slower, is skipped; it says True only where the checks below would agree
    if page in ('auto', 'no') and staves.is_plain_line(im):
        return dict(kind='line', pages=None, xs=[to_tensor(im, img_height, max_width)])
    if page == 'no' and not staves.looks_like_line(im):
        raise ValueError(f"{path}: no staff found (no music in it: blank, uniform or a photo)")
    if page == 'no':
        return dict(kind='line', pages=None, xs=[to_tensor(im, img_height, max_width)])
    try:
        pg = staves.find_staves(im)
    except ValueError as e:
        # a low-resolution line: find_staves cannot measure its staff, looks_like_line still sees one
        if page == 'auto' and im.size[0] >= 2 * im.size[1] and staves.looks_like_line(im):
            return dict(kind='line', pages=None, xs=[to_tensor(im, img_height, max_width)])
        raise ValueError(f"{path}: {e}") from None
    if page == 'auto' and staves.is_single_line(pg):
        return dict(kind='line', pages=None, xs=[to_tensor(im, img_height, max_width)])
    return _page_input([pg], img_height, max_width)


def _page_input(found, img_height, max_width):
    """staves.Page list -> load_input's dict for a page: one line per staff, or with --page=systems one
    per system (systems.py: staves joined by a brace, bracket or bar line), in 'systems' (per page)."""
    if page != 'systems':
        return dict(kind='page', pages=found, systems=None,
                    xs=[to_tensor(st.crop, img_height, max_width) for pg in found for st in pg.staves])
    sys_ = [systems.find_systems(pg) for pg in found]
    return dict(kind='page', pages=found, systems=sys_,
                xs=[to_tensor(sy.crop, img_height, max_width) for ss in sys_ for sy in ss])


def _save_png(im, path):
    with atomic_path(path) as tmp:
        im.save(tmp)


def main():
    if image is None:
        raise ValueError("nothing to transcribe: give --image=<file or folder>")
    if beam_size < 1 or batch_size < 1:
        raise ValueError("beam_size and batch_size must be >= 1")
    if decode not in ('auto', 'attention', 'ctc'):
        raise ValueError(f"decode must be 'auto', 'attention' or 'ctc', got {decode!r}")
    if page not in ('auto', 'yes', 'no', 'systems'):
        raise ValueError(f"page must be 'auto', 'yes' or 'no' (or 'systems': a page read by systems), got {page!r}")
    if attention_layer not in ('last', 'all'):
        raise ValueError(f"attention_layer must be 'last' or 'all', got {attention_layer!r}")
    paths = list_images(str(image))  # before importing torch and loading the model: a typo fails fast
    ckpt = checkpoint.find_checkpoint(out_dir)
    meta = checkpoint.read_meta(ckpt)  # cheap: config.json only, enough to preprocess the images
    img_height = meta['model_args'].get('img_height', 224)
    max_width = (meta.get('train_config') or {}).get('max_width', 2048)

    # load every input first: bad ones are reported and skipped, good ones decoded in batches
    folder = os.path.isdir(str(image))
    jobs, failed = [], 0
    for p in paths:
        try:
            jobs.append(dict(load_input(p, img_height, max_width), path=p))
        except Exception as e:  # any failure, a bug in the finder included, costs only this file
            if not folder:
                raise ValueError(_why(p, e)) from None  # one image asked for, and it is bad: the one error line
            print(f"error: {_why(p, e)}", file=sys.stderr)
            failed += 1

    if not jobs:
        sys.exit(f"error: none of the {len(paths)} image(s) could be read")
    reader = pages.Reader(out_dir, device, batch_size, beam_size, temperature, top_k, max_new_tokens, decode)
    torch.manual_seed(seed)
    # every line of every input in one stream of batches (a folder of line images batches as before);
    # if the model fails on that, file by file, so that a failing file is reported and the rest still read
    try:
        ids = reader.decode([x for j in jobs for x in j['xs']])
        k = 0
        for j in jobs:
            j['ids'], k = ids[k:k + len(j['xs'])], k + len(j['xs'])
    except Exception:
        for j in jobs:
            try:
                j['ids'] = reader.decode(j['xs'])
            except Exception as e:
                if not folder:
                    raise ValueError(_why(j['path'], e)) from None
                print(f"error: {_why(j['path'], e)}", file=sys.stderr)
                j['ids'] = None
                failed += 1
    # a page's first staff read again where the staves below it outvote its clef and key (Reader.settle),
    # then every staff sparser than a training line read again squeezed to its spacing (Reader.respace); refinements:
    # should one fail, the pages keep the readings they had
    staffed = [j for j in jobs if j['ids'] is not None and j['kind'] == 'page' and not j.get('systems')]
    refinements = [('first staves', reader.settle)] + ([('staves, squeezed,', reader.respace)] if respace else [])
    for name, refine in refinements:
        try:
            for j, ids in zip(staffed, refine([(j['xs'], j['ids']) for j in staffed]) if staffed else []):
                j['ids'] = ids
        except Exception as e:
            print(f"warning: the pages' {name} were not read again ({type(e).__name__}: {e})", file=sys.stderr)
    many = len(paths) > 1
    for j in jobs:
        if j['ids'] is None:
            continue
        try:
            failed += _write_job(j, reader, many)
        except Exception as e:
            if not folder:
                raise ValueError(_why(j['path'], e)) from None
            print(f"error: {_why(j['path'], e)}", file=sys.stderr)
            failed += 1
    if failed:
        sys.exit(f"error: {failed} of {len(paths)} image(s) could not be read")


def _why(path, e):
    """An exception while reading one file -> one line naming the file. A ValueError/OSError is the
    expected kind (its message names the file already); anything else is a bug, named as such."""
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    if isinstance(e, (ValueError, OSError)):
        return msg if str(path) in msg else f"{path}: {msg}"
    return f"{path}: unexpected {type(e).__name__}: {msg} (a bug: please report it with this file)"


def _write_job(j, reader, many):
    """Print (and with --save_dir write) one file's transcription. -> 1 if it failed, else 0."""
    p, n, jids = j['path'], len(j['xs']), j['ids']
    abcs = [reader.tok.decode(s) for s in jids]
    if j['kind'] == 'line':
        abc = abcs[0]
    else:
        # staves: the meter settled by the bars among the model's likely readings (Reader.join); systems as joined
        abc, skipped = tune.join_lines(abcs) if j.get('systems') else reader.join(j['xs'], jids)
        what = 'system' if j.get('systems') else 'staff'
        for i in skipped:
            print(f"warning: {p}: {what} {i + 1} of {n}: the model's transcription is not ABC "
                  f"(no K: field or no music, or not the page's voices); left out", file=sys.stderr)
        if not abc:
            print(f"error: {p}: none of its {n} {'systems' if what == 'system' else 'staves'} could be transcribed",
                  file=sys.stderr)
            return 1
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
        stem = os.path.join(save_dir, os.path.splitext(os.path.basename(p))[0])
        try:
            musicxml.write_musicxml(abc, stem + '.musicxml')
        except ValueError as e:
            print(f"warning: {p}: no MusicXML ({e})", file=sys.stderr)
        if j['kind'] == 'page':
            for i, pg in enumerate(j['pages']):
                name = '.staves.png' if len(j['pages']) == 1 else f'.p{i + 1}.staves.png'
                _save_png(systems.draw_systems(pg, j['systems'][i]) if j['systems'] else staves.draw_staves(pg),
                          stem + name)
    if attention is not None:
        os.makedirs(attention, exist_ok=True)
        stem = os.path.join(attention, os.path.splitext(os.path.basename(p))[0])
        for i, (x, s) in enumerate(zip(j['xs'], jids)):
            name = ('.attn.png' if j['kind'] == 'line' else
                    f".{'system' if j.get('systems') else 'staff'}{i + 1}.attn.png")
            _save_png(A.attention_picture(reader.model, x, s, reader.tok, layer=attention_layer), stem + name)
    return 0


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
