"""
data.py: the runtime half of nanoOMR's data engine.

A prepared dataset (see data/m21/prepare.py) is a directory holding a Hugging Face DatasetDict
(splits train/val/test, columns image, transcription, source, tune_id, font) and a sentencepiece
tokenizer. This file turns it into training batches (the scores are metrics.py's job):

    train_tokenizer / Tokenizer   sentencepiece BPE with an exact round trip on ABC text
    load_split                    the on-disk split, or a one-line error naming the prepare command
    OMRDataset                    PNG -> (3, H, W) float image with fixed height, plus token ids
    Collate / collate             right-pad images with white, add BOS/EOS, pad targets with -1
    epoch_batches / train_loader  the training order, a pure function of (seed, epoch, iteration),
                                  width-bucketed and DDP-aware; eval_batches, the fixed eval batches

Run `python data.py --export=3 --split=test` to write the first test images with their labels
(`python -m bench.loader` measures loader and metric speed; `python -m core.degrade --data_dir=...`
adds a test_scan split, the test images printed and scanned with a fixed seed).
"""

import argparse
import glob
import io
import json
import multiprocessing as mp
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np
import sentencepiece as spm
import torch
from PIL import Image

from core import clutter, degrade, images
from core.metrics import source_group
from core.files import atomic_path, atomic_write

# -----------------------------------------------------------------------------
# Tokenizer
#
# ABC is whitespace-sensitive: a space between two notes breaks a beam, a newline is a line break (and
# separates header fields from the body). sentencepiece's defaults (NFKC normalization, a dummy "▁"
# prefix, collapsing runs of spaces) would silently rewrite the label, so we switch all of that off and
# check decode(encode(t)) == t in the tests on every transcription of every split.

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3


def train_tokenizer(texts, out_prefix, vocab_size=4096, model_type="bpe"):
    """Train a sentencepiece model on `texts` and write `<out_prefix>.model` (+ `.vocab`) atomically.
    model_type "bpe" (Sennrich et al. 2016) or "char" (one piece per character; vocab_size is then
    ignored). Returns the path of the .model file. If the corpus is too small for `vocab_size`,
    sentencepiece may stop early (hard_vocab_limit=False) and we print the size it actually reached."""
    texts = [t for t in texts if t]
    if not texts:
        raise ValueError("train_tokenizer: no non-empty training texts")
    if model_type not in ("bpe", "char"):
        raise ValueError(f"tokenizer model_type must be 'bpe' or 'char', got {model_type!r}")
    # every character gets a piece, and so do the 4 specials, "\n" and the 256 byte-fallback pieces:
    # a "char" model is exactly that, and a BPE model adds vocab_size minus that many merges
    floor = len({c for t in texts for c in t} - {"\n"}) + 5 + 256
    if model_type == "char":
        vocab_size = floor
    elif vocab_size < floor:
        raise ValueError(f"vocab_size={vocab_size} is below the {floor} pieces every character and byte needs; "
                         f"use at least {floor}, or model_type='char'")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),          # in memory: no temp corpus file, no line splitting
        model_writer=model,
        model_type=model_type,
        vocab_size=vocab_size,
        hard_vocab_limit=False,                 # tiny corpora: shrink the vocab instead of failing
        character_coverage=1.0,                 # every character seen in training gets its own piece
        byte_fallback=True,                     # unseen characters (val/test, model output) -> UTF-8 bytes
        normalization_rule_name="identity",     # no NFKC: the label is exactly what we wrote
        add_dummy_prefix=False,                 # no leading "▁" that decode would have to strip again
        remove_extra_whitespaces=False,         # double spaces and leading/trailing spaces survive
        split_by_whitespace=True,               # pieces never straddle a space, i.e. a beam break
        split_by_number=False,                  # allow pieces like "A2" or "d2B": durations stick to notes
        user_defined_symbols=["\n"],            # a line break is always exactly one token
        pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
        max_sentence_length=max(4192, max(len(t.encode("utf-8")) for t in texts) + 1),  # never drop a long tune
        num_threads=os.cpu_count() or 1,
        minloglevel=2,                          # sentencepiece is chatty on stderr; we print the summary
    )
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    n = sp.get_piece_size()
    if n < vocab_size and model_type == "bpe":
        print(f"train_tokenizer: corpus too small for vocab_size={vocab_size}, using {n}")
    out_prefix = str(out_prefix)
    os.makedirs(os.path.dirname(os.path.abspath(out_prefix)), exist_ok=True)
    vocab = "".join(f"{sp.id_to_piece(i)}\t{sp.get_score(i)}\n" for i in range(n))
    atomic_write(out_prefix + ".vocab", vocab.encode("utf-8"))
    atomic_write(out_prefix + ".model", model.getvalue())  # last: a .model is always complete
    return out_prefix + ".model"


class Tokenizer:
    """Thin wrapper around a sentencepiece model: ids in, ids out, special ids as attributes."""

    def __init__(self, path):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"tokenizer model not found: {path}; create it with: "
                                    f"{prepare_command(os.path.dirname(str(path)) or '.')}")
        self.path = str(path)
        try:
            self.sp = spm.SentencePieceProcessor(model_file=self.path)
        except Exception as e:  # sentencepiece raises RuntimeError / OSError on a truncated or foreign file
            why = 'empty' if os.path.getsize(path) == 0 else str(e).splitlines()[0] if str(e) else type(e).__name__
            d = os.path.dirname(self.path) or '.'
            fix = (f"copy tokenizer.model from the run's data_dir into {d}" if os.path.isdir(os.path.join(d, 'ckpt_last'))
                   or os.path.isdir(os.path.join(d, 'ckpt_best')) else f"rebuild it with: {prepare_command(d)}")
            raise ValueError(f"{path} is not a readable tokenizer ({why}); {fix}") from None
        self.vocab_size = self.sp.get_piece_size()
        self.pad_id, self.bos_id, self.eos_id = self.sp.pad_id(), self.sp.bos_id(), self.sp.eos_id()
        # ids that never carry text. The model may also emit ids >= vocab_size if its output layer is
        # rounded up (nanoGPT pads 50257 -> 50304); those are dropped too instead of crashing decode.
        self._special = {self.pad_id, self.bos_id, self.eos_id, self.sp.unk_id()}

    def encode(self, text):
        return self.sp.encode(text)

    def decode(self, ids):
        ids = [int(i) for i in ids]
        return self.sp.decode([i for i in ids if 0 <= i < self.vocab_size and i not in self._special])

    def __reduce__(self):
        # DataLoader workers started with spawn/forkserver pickle the dataset; rebuild from the path
        return (Tokenizer, (self.path,))


# -----------------------------------------------------------------------------
# On-disk splits


def prepare_command(data_dir):
    """The command that creates `data_dir`, for error messages."""
    data_dir = str(data_dir)
    if "pdmx" in data_dir.lower():
        return f"python data/pdmx_synth/prepare.py --out_dir={data_dir}"
    if os.path.basename(os.path.normpath(data_dir)) == "quick":
        return f"python data/m21/prepare.py --out_dir={data_dir} --max_tunes=1000"
    return f"python data/m21/prepare.py --out_dir={data_dir}"


def prepare_missing(data_dir, prepare_args):
    """Build a missing data_dir with data/m21/prepare.py and these arguments ('--max_tunes=1000');
    RuntimeError with one line if that fails."""
    cmd = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data', 'm21', 'prepare.py'),
           f'--out_dir={data_dir}'] + shlex.split(prepare_args)
    print(f"{data_dir} is missing, preparing it: {' '.join(cmd)}", flush=True)
    if subprocess.run(cmd).returncode != 0:
        raise RuntimeError(f"preparing {data_dir} failed (command: {' '.join(cmd)})")


def load_split(data_dir, split):
    """One split of a prepared dataset as a datasets.Dataset (memory-mapped Arrow, cheap to open).
    A broken file (bad JSON, a truncated Arrow shard) -> ValueError, one line naming it."""
    import datasets
    data_dir = str(data_dir)
    dd_json = os.path.join(data_dir, "dataset_dict.json")
    if not os.path.isfile(dd_json):
        raise FileNotFoundError(f"no prepared dataset at {data_dir}; create it with: {prepare_command(data_dir)}")
    fix = f"; rebuild it with: {prepare_command(data_dir)}"
    bad = _broken_file(data_dir)  # the small JSON files first: datasets' own errors name no file
    try:
        dd = None if bad else datasets.load_from_disk(data_dir)
    except Exception:  # a truncated or foreign Arrow shard, a missing split folder
        bad = _broken_file(data_dir, arrow=True) or (data_dir, 'not a saved DatasetDict')
    if bad:
        raise ValueError(f"{bad[0]} is unreadable ({bad[1]}){fix}")
    if split not in dd:
        raise ValueError(f"split '{split}' not in {data_dir} (has: {', '.join(dd.keys())})")
    return dd[split]


def holdout_error(data_dir, font):
    """A corpus whose train glyphs were mixed across fonts (data/m21/prepare.py --glyph_mix/--glyph_jitter)
    left out one font as a donor; holding out any other font there would train on its glyphs.
    -> a one-line reason, or None when the held-out-font experiment is sound."""
    try:
        with open(os.path.join(str(data_dir), "meta.json")) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None  # corpora without a meta.json mix nothing
    if font and (meta.get("glyph_mix") or meta.get("glyph_jitter")) and font != meta.get("holdout_font"):
        return (f"{data_dir} mixes glyphs of every font but {meta.get('holdout_font')} into its train images; "
                f"hold out {meta.get('holdout_font')} there, or prepare a corpus without --glyph_mix/--glyph_jitter")
    return None


def run_splits(data_dirs, tokenizer, img_height, max_width, max_len, cache=False, augment=False, shape=False, seed=0,
               holdout_font=None, scan=0.0, scan_preset='medium', clutter=0.0):
    """train.py's three datasets over the prepared dirs data_dirs: (train, val, test). Labels whose
    [bos] + ids do not fit max_len decoder positions are left out. holdout_font: train and val never
    see it (a font, an engraver or a source group); test keeps them all (final_eval scores each one). scan: the share of train images printed
    and scanned per step (core/degrade.py); clutter: the share given page text first. Problems raise ValueError."""
    for err in filter(None, (holdout_error(d, holdout_font) for d in data_dirs)):
        raise ValueError(err)
    kw = dict(tokenizer=tokenizer, img_height=img_height, max_width=max_width, max_len=max_len, cache=cache)
    no_font = (holdout_font,) if holdout_font else ()
    return (OMRDataset(data_dirs, 'train', augment=augment, shape=shape, seed=seed, exclude_fonts=no_font, scan=scan,
                       scan_preset=scan_preset, clutter=clutter, **kw),
            OMRDataset(data_dirs, 'val', exclude_fonts=no_font, **kw), OMRDataset(data_dirs, 'test', **kw))


def _broken_file(data_dir, arrow=False):
    """(path, why) of the first file of a saved DatasetDict that does not read: a JSON file that does not
    parse or lacks what datasets needs, or (arrow=True) an Arrow shard that is not whole. Else None."""
    import pyarrow as pa
    need = {'dataset_dict.json': ('splits', list), 'state.json': ('_data_files', list), 'dataset_info.json': ('features', dict)}
    for path in [os.path.join(data_dir, "dataset_dict.json")] + sorted(glob.glob(os.path.join(data_dir, "*", "*.json"))):
        try:
            with open(path, 'rb') as f:
                obj = json.loads(f.read().decode('utf-8'))
        except (OSError, ValueError) as e:
            return path, 'empty' if os.path.getsize(path) == 0 else str(e)
        key, kind = need.get(os.path.basename(path), (None, None))
        if key and not (isinstance(obj, dict) and isinstance(obj.get(key), kind)):
            return path, f"no '{key}' {kind.__name__} in it"
    for path in sorted(glob.glob(os.path.join(data_dir, "*", "*.arrow"))) if arrow else []:
        try:
            with pa.memory_map(path) as src:
                pa.ipc.open_stream(src).read_all()
        except Exception as e:
            return path, 'empty' if os.path.getsize(path) == 0 else str(e).splitlines()[0]
    return None


# -----------------------------------------------------------------------------
# Dataset


class OMRDataset(torch.utils.data.Dataset):
    """(image, token ids) pairs from one split of a prepared dataset.

    item = dict(image=(3, H, W) float32 in [0, 1], ids=list[int] (no BOS/EOS), text=str, index=int)
    with H = img_height and W <= max_width. `index` is the row in the on-disk split (stable even when
    max_len filters rows out), which is what error messages and eval dumps refer to.
    The 3 channels are one gray channel expanded (a view, no copy): pretrained backbones want RGB,
    but there is no reason to move 3x the bytes around before collate stacks the batch."""

    def __init__(self, data_dir, split, tokenizer, img_height=224, max_width=2048, max_len=None,
                 augment=False, shape=False, seed=0, cache=False, exclude_fonts=(), scan=0.0, scan_preset='medium', clutter=0.0):
        import datasets
        # a list of prepared dirs = one mixed corpus (train.py's data_mix): their splits end to end
        dirs = [data_dir] if isinstance(data_dir, (str, os.PathLike)) else list(data_dir)
        self.data_dir, self.split, self.tokenizer = str(dirs[0]), split, tokenizer  # the cache lives in the first
        self.img_height, self.max_width, self.augment, self.seed = img_height, max_width, augment, seed
        self.shape = shape  # with augment: images.shape_augment too (glyph shapes, for unseen fonts)
        # these shares of items get a page's text around the staff (clutter.add), then are printed and scanned (degrade.scan)
        self.scan, self.scan_preset, self.clutter = scan, scan_preset, clutter
        if not 0.0 <= scan <= 1.0 or (scan and scan_preset not in degrade.PRESETS) or not 0.0 <= clutter <= 1.0:
            raise ValueError(f"augment_scan and augment_clutter must be shares in [0, 1] and augment_scan_preset one "
                             f"of {', '.join(degrade.PRESETS)}; got {scan!r}, {clutter!r}, {scan_preset!r}")
        self.epoch = 0
        self._pixels = None  # the decoded-image cache (see cache_images), a memory-mapped uint8 array
        ds = load_split(dirs[0], split)
        if len(dirs) > 1:  # only the columns every corpus has (the polyphonic one has kind, n_staves, ...)
            parts = [ds] + [load_split(d, split) for d in dirs[1:]]
            if any("kind" in p.column_names for p in parts):  # one-line excerpts are kind 'line'
                parts = [p if "kind" in p.column_names else p.add_column("kind", ["line"] * len(p)) for p in parts]
            cols = [c for c in ("image", "transcription", "font", "kind") if all(c in p.column_names for p in parts)]
            ds = datasets.concatenate_datasets([p.select_columns(cols) for p in parts])
        # decode=False: we get the raw PNG bytes and decode them ourselves (datasets' own decoding of a
        # row costs far more than reading its bytes). Only the image column is read per item; the
        # transcriptions (small strings) are read once into a list (datasets 5 returns a lazy Column).
        self.ds = ds.cast_column("image", datasets.Image(decode=False)).select_columns(["image"])
        self.texts = list(ds["transcription"])
        self.fonts = list(ds["font"]) if "font" in ds.column_names else [None] * len(ds)
        self.kinds = list(ds["kind"]) if "kind" in ds.column_names else [None] * len(ds)  # the polyphonic corpus
        self.groups = [source_group(x) for x in ds["source"]] if "source" in ds.column_names else [None] * len(ds)
        self._fingerprint = ds._fingerprint  # names the image cache: a rebuilt corpus never reads a stale one
        self.rows = np.arange(len(ds))
        if max_len is not None:
            # Drop (rather than truncate) labels that do not fit: a truncated label would teach the
            # model to stop in the middle of a system. +1 for the BOS/EOS each sequence gets in collate.
            lens = np.array([len(ids) + 1 for ids in tokenizer.sp.encode(self.texts)])
            self.rows = np.nonzero(lens <= max_len)[0]
            if len(self.rows) < len(ds):
                print(f"OMRDataset[{split}]: dropped {len(ds) - len(self.rows)} of {len(ds)} samples "
                      f"longer than max_len={max_len} tokens")
        if exclude_fonts:
            # a held-out font, engraver or source group: its images never enter this split (the held-out studies)
            n, out = len(self.rows), set(exclude_fonts)
            self.rows = np.array([r for r in self.rows if not {self.fonts[r], self.groups[r]} & out], dtype=np.int64)
            print(f"OMRDataset[{split}]: left out {n - len(self.rows)} images of {', '.join(exclude_fonts)}")
        self._widths = None
        # how many images will be shrunk to fit max_width (see resize_to_height); PNG headers only
        full = self._natural_widths()
        wide = full > max_width
        if wide.any():
            print(f"OMRDataset[{split}]: {wide.mean():.0%} of images are wider than max_width={max_width} at "
                  f"img_height={img_height} and are scaled down to fit (up to {full.max() / max_width:.1f}x)")
        if cache:
            self.cache_images()

    def cache_images(self, num_workers=None):
        """Decode and resize every image of the split once, into <data_dir>/cache/ (one flat uint8
        array plus offsets, written atomically), and serve items from a memory map of it. At a small
        img_height a whole split fits in memory; decoding PNGs is then off the training path, so on a
        CPU both cores can compute instead of one of them inflating PNGs. The file name carries
        the split's fingerprint, img_height and max_width, so it is rebuilt whenever one changes."""
        d = os.path.join(self.data_dir, "cache")
        stem = os.path.join(d, f"{self.split}-h{self.img_height}-w{self.max_width}-{self._fingerprint}")
        if not (os.path.isfile(stem + ".offsets.npy") and os.path.isfile(stem + ".u8.npy")):
            os.makedirs(d, exist_ok=True)
            n, t0 = len(self.texts), time.time()
            workers = num_workers or os.cpu_count() or 1
            arrays = None
            if workers > 1 and n > 256:
                # an executor, not mp.Pool: a worker that dies (seen once on a big-image corpus) raises
                # BrokenProcessPool here instead of hanging map() forever; then decode in this process
                try:
                    with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as ex:
                        arrays = list(ex.map(self.load_image, range(n), chunksize=64))
                except BrokenProcessPool:
                    print(f"OMRDataset[{self.split}]: a cache worker died; decoding in this process instead")
            if arrays is None:
                arrays = [self.load_image(r) for r in range(n)]
            offsets = np.zeros(n + 1, dtype=np.int64)
            offsets[1:] = np.cumsum([a.size for a in arrays])
            flat = np.concatenate([a.ravel() for a in arrays]) if arrays else np.zeros(0, np.uint8)
            for suffix, arr in ((".u8.npy", flat), (".offsets.npy", offsets)):  # offsets last: the "done" mark
                with atomic_path(stem + suffix) as tmp:
                    np.save(tmp, arr)
            print(f"OMRDataset[{self.split}]: cached {n} images at img_height={self.img_height} "
                  f"({flat.nbytes / 2**20:.0f} MiB, {time.time() - t0:.0f}s) in {d}")
        self._offsets = np.load(stem + ".offsets.npy")
        self._pixels = np.load(stem + ".u8.npy", mmap_mode="r")
        if len(self._offsets) != len(self.texts) + 1 or self._offsets[-1] != self._pixels.size:
            raise ValueError(f"image cache {stem}.*.npy does not match split '{self.split}' of {self.data_dir}; "
                             f"delete {d} and run again")

    def __len__(self):
        return len(self.rows)

    def set_epoch(self, epoch):
        """New augmentation draws per epoch. Call before creating the DataLoader iterator (with the default
        persistent_workers=False, workers get a fresh copy of the dataset every epoch)."""
        self.epoch = epoch

    def load_image(self, row):
        """Decode row `row` of the split into an (img_height, W) uint8 array; any failure names the row."""
        img = self.ds[int(row)]["image"]
        try:
            src = io.BytesIO(img["bytes"]) if img.get("bytes") is not None else img["path"]
            with Image.open(src) as im:
                return images.preprocess(im, self.img_height, self.max_width)
        except Exception as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ValueError(f"corrupt image at index {int(row)} of split '{self.split}' in {self.data_dir}: "
                             f"{msg}") from None

    def __getitem__(self, i):
        row = int(self.rows[i])
        if self._pixels is not None:
            a, b = self._offsets[row], self._offsets[row + 1]
            arr = np.array(self._pixels[a:b]).reshape(self.img_height, -1)  # (H, W) uint8, a copy
        else:
            arr = self.load_image(row)
        arr = self.scan_image(arr, row) if self.clutter > 0 or self.scan > 0 else arr
        text = self.texts[row]
        x = torch.from_numpy(arr).unsqueeze(0).float().div_(255.0)  # (1, H, W)
        if self.augment:
            g = torch.Generator().manual_seed(hash((self.seed, self.epoch, row)) & 0x7FFF_FFFF_FFFF_FFFF)
            x = images.augment_image(x, g, shape=self.shape, max_width=self.max_width)
        return dict(image=x.expand(3, -1, -1), ids=self.tokenizer.encode(text), text=text, index=row)

    def scan_image(self, arr, row):
        """With probability self.clutter page text around the staff (core/clutter.py), then with probability self.scan
        printed and scanned (core/degrade.py); each drawn per step from (seed, epoch, row) and a stream of its own
        (25, 24) like augment_image: a fresh look every epoch, the same for any number of workers."""
        key = [self.seed & 0xFFFF_FFFF, self.epoch, row]
        if self.clutter > 0 and (g := np.random.default_rng(key + [25])).random() < self.clutter:
            arr = clutter.add(arr, g, self.img_height, self.max_width)
        rng = np.random.default_rng(key + [24])
        return degrade.scan_line(arr, rng, self.scan_preset, self.img_height, self.max_width) if rng.random() < self.scan else arr

    def widths(self):
        """Width of every sample after resizing (np.int64, aligned with this dataset's positions), read
        from the PNG headers without decoding any pixels. Used by epoch_batches's width bucketing."""
        return np.minimum(self._natural_widths(), self.max_width)

    def _natural_widths(self):
        """Width at img_height before the max_width cap, for every position (cached)."""
        if self._widths is None:
            sizes = images.header_sizes(self.ds)  # (W, H) from the PNG headers: no image is decoded
            ws = np.array([max(1, round(w * self.img_height / h)) if w and h else 1 for w, h in sizes],
                          dtype=np.int64)
            self._widths = ws[self.rows]
        return self._widths


# -----------------------------------------------------------------------------
# Batching


def collate(batch, pad_id, bos_id=BOS_ID, eos_id=EOS_ID):
    """List of OMRDataset items -> one batch dict (see Collate). The default BOS/EOS ids are the ones
    train_tokenizer always assigns."""
    B = len(batch)
    H = batch[0]["image"].shape[1]
    if any(b["image"].shape[1] != H for b in batch):
        raise ValueError("collate: all images in a batch must have the same height")
    widths = torch.tensor([b["image"].shape[2] for b in batch], dtype=torch.int64)  # (B,)
    # White padding (1.0), not black: padding that looks like paper is what the encoder sees at the
    # right end of short systems anyway; `widths` lets the model mask these columns out of attention.
    # The three channels are identical (grayscale), so we fill ONE channel and return a stride-0 expand
    # of it: (B, 3, H, Wmax) as the backbones expect, but a DataLoader worker ships 3x fewer bytes through
    # shared memory. Treat it as read-only (out-of-place ops); to move it to a GPU cheaply, send
    # images[:, :1] and expand there: images[:, :1].to(device).expand(-1, 3, -1, -1).
    Wmax = int(widths.max())
    if torch.utils.data.get_worker_info() is not None:
        # In a DataLoader worker, build the batch directly in shared memory (as default_collate does):
        # otherwise sending it to the main process costs one more full copy of the batch.
        storage = torch.UntypedStorage._new_shared(B * H * Wmax * 4)
        gray = torch.empty(0).set_(storage).view(B, 1, H, Wmax).fill_(1.0)  # (B, 1, H, Wmax)
    else:
        gray = torch.ones(B, 1, H, Wmax)  # (B, 1, H, Wmax)
    for k, b in enumerate(batch):
        gray[k, :, :, : b["image"].shape[2]] = b["image"][:1]
    images = gray.expand(-1, 3, -1, -1)  # (B, 3, H, Wmax), a view
    # Teacher forcing: input idx = [bos] + ids, target = ids + [eos], shifted by one position.
    # Targets are padded with -1 so cross_entropy(ignore_index=-1) skips them; idx is padded with pad_id
    # (a real embedding row, but its positions never produce a counted loss).
    T = max(len(b["ids"]) for b in batch) + 1
    idx = torch.full((B, T), pad_id, dtype=torch.int64)      # (B, T)
    targets = torch.full((B, T), -1, dtype=torch.int64)      # (B, T)
    for k, b in enumerate(batch):
        ids = torch.tensor(b["ids"], dtype=torch.int64)
        n = len(ids)
        idx[k, 0] = bos_id
        idx[k, 1 : n + 1] = ids
        targets[k, :n] = ids
        targets[k, n] = eos_id
    return dict(images=images, widths=widths, idx=idx, targets=targets,
                text=[b["text"] for b in batch],
                index=torch.tensor([b["index"] for b in batch], dtype=torch.int64))


def to_device(batch, device):
    """A collated batch -> (images (B,3,H,W), idx (B,T), targets (B,T), widths (B,)) on `device`."""
    return tuple(batch[k].to(device, non_blocking=True) for k in ('images', 'idx', 'targets', 'widths'))


class Collate:
    """Picklable collate_fn for DataLoader: `DataLoader(ds, collate_fn=Collate(tok.pad_id, tok.bos_id, tok.eos_id))`.
    Returns dict(images (B,3,H,Wmax) float32 white-padded, widths (B,) int64, idx (B,T) int64,
    targets (B,T) int64 padded with -1, text list[str], index (B,) int64)."""

    def __init__(self, pad_id, bos_id=BOS_ID, eos_id=EOS_ID):
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id

    def __call__(self, batch):
        return collate(batch, self.pad_id, self.bos_id, self.eos_id)


# -----------------------------------------------------------------------------
# Data order: pure functions of (seed, epoch, iteration), so that a resumed run sees exactly the
# batches an uninterrupted one would (tests/test_train.py pins this)


def epoch_batches(n, epoch, start_iter, batch_size, accum, world_size=1, rank=0, seed=0, widths=None):
    """This process's micro-batches (lists of indices into n training images) for `epoch`, from
    optimizer step `start_iter` of that epoch on. The epoch's order is drawn from seed + epoch alone.
    Each optimizer step takes one global batch of batch_size * accum * world_size images (an epoch
    drops its incomplete last one), and process `rank` takes its consecutive share of its micro-batches,
    so N processes see the very same images per step as one process does (a DDP run equals a
    single-process run with the same global batch). With `widths` (one per image), windows of 50
    global batches are sorted by width and the order of the global batches is shuffled: a batch
    then holds images of similar width, so little compute goes into white padding."""
    per_iter = batch_size * accum * world_size
    iters = n // per_iter
    g = torch.Generator().manual_seed(seed + epoch)
    order = torch.randperm(n, generator=g).tolist()[:iters * per_iter]
    steps = list(range(iters))
    if widths is not None:
        window = 50 * per_iter
        order = [i for s in range(0, len(order), window) for i in sorted(order[s:s + window], key=widths.__getitem__)]
        steps = torch.randperm(iters, generator=g).tolist()
    batches = []
    for it in range(start_iter, iters):
        for micro_step in range(accum):
            k = steps[it] * per_iter + (rank * accum + micro_step) * batch_size
            batches.append(order[k:k + batch_size])
    return batches


def eval_batches(n, batch_size, n_loss_batches, n_decode, seed=0):
    """The fixed eval batches of a split of n images: (the first n_loss_batches batches, for the loss;
    the batches of the first n_decode images, for decoding), 'first' in a permutation fixed by seed,
    so that every eval scores the same images."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    loss = [order[i:i + batch_size] for i in range(0, min(n, n_loss_batches * batch_size), batch_size)]
    decode = [order[i:i + batch_size] for i in range(0, min(n, n_decode), batch_size)]
    return loss, decode


def train_loader(ds, collate_fn, start_iter, batch_size, accum, world_size=1, rank=0, seed=0, widths=None,
                 num_workers=0, pin_memory=False):
    """Yield this process's training micro-batches forever, from global iteration `start_iter` on."""
    iters = len(ds) // (batch_size * accum * world_size)
    epoch, it = divmod(start_iter, iters)
    while True:
        ds.set_epoch(epoch)  # augmentation draws depend on (seed, epoch, image) only, not on workers
        g = torch.Generator().manual_seed(seed + epoch)  # DataLoader would otherwise draw its seed from the global RNG
        sampler = epoch_batches(len(ds), epoch, it, batch_size, accum, world_size, rank, seed, widths)
        yield from torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=collate_fn,
                                               num_workers=num_workers, pin_memory=pin_memory, generator=g)
        epoch, it = epoch + 1, 0


# -----------------------------------------------------------------------------
# Export: python data.py --export=3 --split=test


def export(data_dir, split, n, out):
    """Write the first n images of a split as <out>/<split>_<i>.png with the true label beside it
    (<split>_<i>.abc): real inputs for sample.py, and the answers to compare its output with."""
    ds = load_split(data_dir, split)
    os.makedirs(out, exist_ok=True)
    for i in range(min(n, len(ds))):
        row = ds[i]
        stem = os.path.join(out, f"{split}_{i}")
        row["image"].save(stem + ".png")
        with open(stem + ".abc", "w") as f:
            f.write(row["transcription"] + "\n")
        print(f"{stem}.png  ({row['source']}, {row['font']})")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description="nanoOMR data runtime: sample export (the loader benchmark is python -m bench.loader)")
    p.add_argument("--export", type=int, default=0, metavar="N", help="write N images of --split (+ labels) to --out")
    p.add_argument("--out", default="samples")
    p.add_argument("--data_dir", default="data/m21/quick")
    p.add_argument("--split", default="train")
    args = p.parse_args()
    if not args.export:
        p.print_help()
        sys.exit(0)
    try:
        export(args.data_dir, args.split, args.export, args.out)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        sys.exit(f"error: {e}")
