"""
inference/pages.py: read whole pages. Files in (images and PDFs), staves found and cut (staves.py), every
staff transcribed by the model in batches (Reader), and the lines joined into one tune (tune.py).

    path --read_image / read_frames / read_pdf--> page images (the frames of a multi-page TIFF, GIF or
      WebP one at a time; PDF pages rendered one at a time with pypdfium2, at the DPI that gives a
      staff space of ~20 px, the middle of the training range 18-27 px)
    page --staves.find_staves--> crops --Reader.read_page--> one tune: every staff read (decode), the first
      staff's clef and key settled by the next two (settle), sparse staves read again at a training line's
      spacing (respace), the lines joined (tune.join_lines) and the meter settled by the bars (join)

A staff whose transcription is not ABC (no K: field, or no music) is left out and reported, and the
rest of the page still comes out.
"""

import os
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import data
from core import decoding, images, metrics
from inference import staves, tune
from training.checkpoint import find_checkpoint, find_tokenizer, load_model

PDF_DPI = 150            # first render; then re-rendered so the staff space is TARGET_SPACE
TARGET_SPACE = 20.0      # px; training images have 18-27 px (prepare.py, verovio scale 100-150)
MAX_DPI = 400
DECODE_ROWS = 64       # lines decoded together (Reader.decode); their images are still encoded batch_size at a time
# An engraver justifies a page's systems to the page width, so their notes can stand further apart than on
# any training line (each drawn at its natural width): read at 64 px high, abcm2ps and LilyPond val pages
# have a median 45 and 48 px per note or rest, their training lines 34. Reader.respace reads such a staff again
# squeezed to SPACING image heights per ABC symbol (20 px at 64), by at most MIN_SQUEEZE, its header
# (clef, key, meter: read at full width) forced. Both chosen on val pages (docs/pages.md).
SPACING = 20 / 64
MIN_SQUEEZE = 0.7


# -----------------------------------------------------------------------------
# files -> grayscale PIL images

def read_image(path, max_pixels):
    """An image file -> a loaded grayscale ('L', transparency as white paper) PIL image.
    Any problem -> ValueError with one line naming the file."""
    if os.path.getsize(path) == 0:
        raise ValueError(f"{path}: empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('error', Image.DecompressionBombWarning)
            with Image.open(path) as im:  # lazy: only the header is read here
                w, h = im.size
                if w * h > max_pixels:
                    raise ValueError(f"image too large ({w}x{h} = {w * h:,} pixels > max_pixels={max_pixels:,})")
                gray = images.to_gray(im)
                gray.load()
                return gray
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    except Exception as e:  # PIL: UnidentifiedImageError, truncated files, bombs, OSError ...
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"{path}: not a readable image ({msg})") from None


def count_frames(path):
    """Pages (frames) in an image file: a multi-page TIFF (a document scanner's usual output), an
    animated GIF or WebP; 1 for any other image. Unreadable -> ValueError, one line."""
    if os.path.getsize(path) == 0:
        raise ValueError(f"{path}: empty file")
    try:
        with Image.open(path) as im:
            return int(getattr(im, 'n_frames', 1) or 1)
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"{path}: not a readable image ({msg})") from None


def read_frames(path, max_pixels):
    """Yield (page number from 1, grayscale PIL image) for every frame of an image file, one frame
    in memory at a time, as read_image reads one (size limit, transparency as paper, white ink on
    black inverted). Errors -> ValueError, one line naming the file and page."""
    n = count_frames(path)
    for i in range(n):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter('error', Image.DecompressionBombWarning)
                with Image.open(path) as im:
                    im.seek(i)
                    w, h = im.size
                    if w * h > max_pixels:
                        raise ValueError(f"page {i + 1} too large ({w}x{h} = {w * h:,} pixels > max_pixels={max_pixels:,})")
                    gray = images.to_gray(im)
                    gray.load()
                    gray = gray.copy() if gray is im else gray  # outlives the file
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        except Exception as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ValueError(f"{path}: page {i + 1} is not a readable image ({msg})") from None
        yield i + 1, gray


def pdf_pages(path):
    """The number of pages of a PDF (ValueError, one line, if it cannot be opened)."""
    import pypdfium2 as pdfium
    if os.path.getsize(path) == 0:
        raise ValueError(f"{path}: empty file")
    try:
        pdf = pdfium.PdfDocument(path)
    except Exception as e:
        raise _pdf_error(path, e) from None
    try:
        return len(pdf)
    finally:
        pdf.close()


def _pdf_error(path, e):
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    if 'password' in msg.lower() or 'security' in msg.lower():
        return ValueError(f"{path}: the PDF is encrypted (password protected); decrypt it first")
    return ValueError(f"{path}: not a readable PDF ({msg})")


def read_pdf(path, max_pixels, dpi=None):
    """Yield (page number from 1, grayscale PIL image) for each page of a PDF, one page in memory at
    a time. With dpi=None a page is rendered at PDF_DPI, its staff space measured, and re-rendered at
    the DPI that makes it TARGET_SPACE px (at most MAX_DPI), so the model sees staves at the size it
    was trained on whatever the engraving's rastral size. Errors -> ValueError, one line."""
    import pypdfium2 as pdfium
    if os.path.getsize(path) == 0:
        raise ValueError(f"{path}: empty file")
    try:
        pdf = pdfium.PdfDocument(path)
    except Exception as e:  # PdfiumError: not a PDF, damaged, encrypted
        raise _pdf_error(path, e) from None
    try:
        n = len(pdf)
        if n == 0:
            raise ValueError(f"{path}: the PDF has no pages")
        for i in range(n):
            try:
                page = pdf[i]
                w_pt, h_pt = page.get_size()  # points, 1/72 inch

                def render(d):
                    if (w_pt * d / 72) * (h_pt * d / 72) > max_pixels:
                        raise ValueError(f"{path}: page {i + 1} at {d:.0f} dpi is larger than max_pixels={max_pixels:,}")
                    return page.render(scale=d / 72, grayscale=True).to_pil().convert('L')

                im = render(dpi or PDF_DPI)
                if dpi is None:
                    _, sp = staves.line_metrics(staves.ink_mask(np.asarray(im)))
                    if sp >= 4:
                        d = min(MAX_DPI, PDF_DPI * TARGET_SPACE / sp)
                        if abs(d / PDF_DPI - 1) > 0.15:
                            im = render(d)
            except ValueError:
                raise
            except Exception as e:
                raise _pdf_error(path, e) from None
            yield i + 1, im
    finally:
        pdf.close()


def is_pdf(path):
    return path.lower().endswith('.pdf')


# -----------------------------------------------------------------------------
# the model

def to_tensor(im, img_height, max_width):
    """grayscale PIL image -> (3, img_height, W) float32 in [0, 1], exactly as data.OMRDataset does."""
    arr = images.preprocess(im, img_height, max_width)
    x = torch.from_numpy(arr).unsqueeze(0).float().div_(255.0)  # (1, H, W), paper = 1.0
    return x.expand(3, -1, -1)  # (3, H, W)


class Reader:
    """A checkpoint and its tokenizer, ready to transcribe batches of line images."""

    def __init__(self, out_dir, device='cpu', batch_size=8, beam_size=1, temperature=0.0, top_k=None,
                 max_new_tokens=None, decode='auto'):
        ckpt = find_checkpoint(out_dir)
        self.model, self.meta = load_model(ckpt, device)
        self.model.eval()
        self.tok = data.Tokenizer(find_tokenizer(out_dir, self.meta))
        cfg = self.model.config
        if self.tok.vocab_size > cfg.vocab_size:
            raise ValueError(f"tokenizer has {self.tok.vocab_size} pieces but the checkpoint was trained "
                             f"with vocab_size={cfg.vocab_size}")
        self.how = self.meta.get('decode', 'attention') if decode == 'auto' else decode
        if self.how == 'ctc' and cfg.ctc_weight <= 0:
            raise ValueError(f"--decode=ctc: the checkpoint in {ckpt} has no CTC head (trained with ctc_weight=0)")
        self.img_height = self.meta['model_args'].get('img_height', 224)
        self.max_width = (self.meta.get('train_config') or {}).get('max_width', 2048)
        self.device, self.batch_size, self.beam_size = device, batch_size, beam_size
        self.temperature, self.top_k = temperature, top_k
        self.n_new = max_new_tokens or cfg.max_seq_len
        self.settled = [0, 0]  # settle(): first staves read again, new readings kept

    @property
    def greedy(self):
        """greedy attention decoding: the one mode a forced prefix, settle and respace work in."""
        return self.how != 'ctc' and self.beam_size == 1 and self.temperature == 0

    def decode(self, xs, prefixes=None):
        """list of (3, H, W) tensors -> list of token-id lists, returned in the input's order (prefixes:
        greedy decoding only, token ids each line writes first, see core/decoding.generate). The images
        are encoded batch_size at a time in order of width (similar widths pad little), exactly the
        batches they always had, since a CNN's last real columns see the batch's white padding. Greedy
        decoding then runs DECODE_ROWS lines at a time, their memories padded (masked) to the longest:
        rows leave the batch when they end (core/decoding.py), so a big batch costs the tokens it writes,
        and its per-step overhead is paid once for many lines."""
        order = sorted(range(len(xs)), key=lambda i: xs[i].shape[-1])
        out, mems = [], []
        for i in range(0, len(xs), self.batch_size):
            chunk = [xs[k] for k in order[i:i + self.batch_size]]
            wmax = max(x.shape[-1] for x in chunk)
            # right-pad with white like data.collate; widths make the model ignore the padding
            images = torch.stack([F.pad(x, (0, wmax - x.shape[-1]), value=1.0) for x in chunk]).to(self.device)
            widths = torch.tensor([x.shape[-1] for x in chunk], device=self.device)
            with torch.inference_mode():
                if self.how == 'ctc':
                    out += self.model.ctc_decode(images, widths)
                elif self.greedy:
                    mems.append(self.model.encode(images, widths))  # (b, S, D), (b, S)
                else:
                    out += self.model.generate(images, self.n_new, temperature=self.temperature, top_k=self.top_k,
                                               beam_size=self.beam_size, widths=widths)
        per = max(1, DECODE_ROWS // self.batch_size)  # encoded batches decoded together
        for i in range(0, len(mems), per):
            group = mems[i:i + per]
            S = max(m.size(1) for m, _ in group)
            memory = torch.cat([F.pad(m, (0, 0, 0, S - m.size(1))) for m, _ in group])  # (n, S, D), zeros
            mask = torch.cat([F.pad(k, (0, S - k.size(1)), value=False) for _, k in group])  # (n, S), padding masked
            pre = None if prefixes is None else [prefixes[k] for k in order[len(out):len(out) + len(memory)]]
            with torch.inference_mode():
                out += decoding.generate(self.model, None, self.n_new, 0.0, None, 1, True, None, False,
                                         encoded=(memory, mask), prefix=pre)
        back = [None] * len(xs)
        for k, ids in zip(order, out):
            back[k] = ids
        return back

    def forced(self, x, seqs):
        """A (3, H, W) tensor and token-id lists -> per list, the log-probability of each of its tokens and of
        the eos after it, the model reading this image: teacher forcing, the lists as one padded batch."""
        cfg, T = self.model.config, max(len(q) for q in seqs) + 1
        seq = torch.full((len(seqs), T + 1), cfg.pad_id, dtype=torch.long, device=self.device)  # (n, 1 + T)
        seq[:, 0] = cfg.bos_id
        for i, q in enumerate(seqs):
            seq[i, 1:len(q) + 2] = torch.tensor(list(q) + [cfg.eos_id])
        with torch.inference_mode():
            memory, mask = self.model.encode(x[None].to(self.device), torch.tensor([x.shape[-1]], device=self.device))
            mask = None if mask is None else mask.expand(len(seqs), -1)
            h = self.model.decode(seq[:, :-1], memory.expand(len(seqs), -1, -1), mask)  # (n, T, D)
            logp = F.log_softmax(self.model.lm_head(h).float(), -1).gather(-1, seq[:, 1:, None])[..., 0]  # (n, T)
        return [logp[i, :len(q) + 1].tolist() for i, q in enumerate(seqs)]

    def logprob(self, xs, ids):
        """(3, H, W) tensors and a token-id list for each -> the mean log-probability per token the model
        gives each list (eos included) reading its image."""
        n = self.model.config.max_seq_len - 1
        return [float(np.mean(self.forced(x, [list(s)[:n]])[0])) for x, s in zip(xs, ids)]

    def settle(self, pages):
        """[(xs, ids)] of pages (their staves' tensors and token ids, as decoded) -> the ids, each page's first
        staff read again under the clef and key its next two staves agree on where it read another
        (tune.first_staff_header), and the new reading kept only if the model gives it a mean log-probability
        per token at least that of its own: a degraded first staff read under a bass clef is outvoted,
        a key that truly changes at the second staff is not. Greedy attention decoding only (else unchanged).
        self.settled counts [staves read again, readings kept]."""
        out = [list(ids) for _, ids in pages]
        if not self.greedy:
            return out
        jobs = []  # (page, staff, forced header ids)
        for p, (xs, ids) in enumerate(pages):
            k, head = tune.first_staff_header([self.tok.decode(s) for s in ids])
            if k is not None:
                jobs.append((p, k, self.tok.encode(head)))
        if not jobs:
            return out
        xs = [pages[p][0][k] for p, k, _ in jobs]
        new = self.decode(xs, prefixes=[h for *_, h in jobs])
        old = self.logprob(xs, [out[p][k] for p, k, _ in jobs])
        for (p, k, _), n, a, b in zip(jobs, new, old, self.logprob(xs, new)):
            self.settled[0] += 1
            if b >= a:
                out[p][k] = n
                self.settled[1] += 1
        return out

    def respace(self, pages):
        """[(xs, ids)] of pages (their staves' tensors and token ids) -> the ids, each staff whose reading has
        fewer ABC symbols (core.metrics.abc_symbols) than its width holds at SPACING read again from its image
        squeezed to that spacing (never below MIN_SQUEEZE of its width), the header of its first reading (up
        to its K: line, read at full width, where digits and accidentals keep their shape) forced as a prefix.
        A dense staff, and one without a header (not ABC: tune.join_lines leaves it out), keep their reading.
        Greedy attention decoding only (else unchanged)."""
        out = [list(ids) for _, ids in pages]
        if not self.greedy:
            return out
        jobs = []  # (page, staff, squeezed tensor, header ids)
        for p, (xs, ids) in enumerate(pages):
            for k, (x, s) in enumerate(zip(xs, ids)):
                head, _, body = self.tok.decode(s).rpartition('\n')
                H, W = x.shape[-2:]
                squeeze = max(MIN_SQUEEZE, SPACING * H * len(metrics.abc_symbols(body)) / W)
                if 'K:' in head and body.strip() and squeeze < 1:
                    thin = F.interpolate(x[None], size=(H, round(W * squeeze)), mode='bilinear', antialias=True,
                                         align_corners=False)[0]  # (3, H, W * squeeze)
                    jobs.append((p, k, thin, self.tok.encode(head + '\n')))
        if jobs:
            for (p, k, _, _), n in zip(jobs, self.decode([j[2] for j in jobs], prefixes=[j[3] for j in jobs])):
                out[p][k] = n
        return out

    def meter_scores(self, x, abc):
        """A staff's (3, H, W) tensor and its transcription -> {meter: the model's log-probability of the header
        'M:<meter>', its own L: and K:, reading this staff} for each of tune.METERS (tune.settle_meter's
        candidates), or None without a K:. One teacher-forced batch of the 13 headers."""
        fields, _ = tune.split_abc(abc or '')
        if 'K' not in fields:
            return None
        heads = [self.tok.encode(f"M:{m}\nL:{fields.get('L', '1/8')}\nK:{fields['K']}\n") for m in tune.METERS]
        return {m: float(sum(lp[:-1])) for m, lp in zip(tune.METERS, self.forced(x, heads))}  # the header, not its eos

    def join(self, xs, ids):
        """A page's staves (tensors; token ids, settled) -> (its tune, staves left out) as tune.join_lines, the
        meter then settled (tune.settle_meter) with the first readable staff's meter_scores."""
        abcs = [self.tok.decode(s) for s in ids]
        joined, skipped = tune.join_lines(abcs)
        first = next((i for i in range(len(abcs)) if i not in skipped), None)
        if first is None or self.how == 'ctc':
            return joined, skipped
        return tune.settle_meter(joined, self.meter_scores(xs[first], abcs[first])), skipped

    def read_staves(self, xs, respace=True):
        """A page's staves as (3, H, W) tensors, top to bottom -> (the page's tune, ABC per staff): read, the
        first staff settled (settle), sparse staves read again squeezed (respace, unless respace=False),
        joined, its meter settled (join)."""
        ids = self.settle([(xs, self.decode(xs))])[0] if xs else []
        if respace and xs:
            ids = self.respace([(xs, ids)])[0]
        return self.join(xs, ids)[0], [self.tok.decode(s) for s in ids]

    def read_page(self, crops, respace=True):
        """PIL crops of one page's staves, top to bottom -> read_staves of their tensors."""
        return self.read_staves([to_tensor(im, self.img_height, self.max_width) for im in crops], respace)

    def read(self, images):
        """PIL line images -> (ABC per image, token ids per image)."""
        ids = self.decode([to_tensor(im, self.img_height, self.max_width) for im in images]) if images else []
        return [self.tok.decode(s) for s in ids], ids
