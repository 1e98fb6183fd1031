"""
data/pdmx_synth/prepare.py: download PDMX-Synth (Hugging Face guangyangmusic/PDMX-Synth, image -> ABC pairs
engraved from the PDMX MusicXML corpus) and write it in nanoOMR's on-disk layout (data/m21/README.md, "On disk"):
a DatasetDict with splits train/val/test and columns image, transcription, source, tune_id, font,
plus tokenizer.model trained on the train transcriptions and meta.json.

Needs internet and, as the dataset is gated, a Hugging Face login (`huggingface-cli login`) that
accepted its terms. Without them this script says so in one line and points to the offline default:
    python data/m21/prepare.py

Usage:
    python data/pdmx_synth/prepare.py                           # -> data/pdmx_synth/full
    python data/pdmx_synth/prepare.py --streaming --max_samples=20000 --out_dir=data/pdmx_synth/small
"""
import argparse
import io
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:  # run as a script: the repo (data.py, core/)
    sys.path.insert(0, ROOT)
from core.files import atomic_dir  # noqa: E402
from core.images import to_gray  # noqa: E402
from data import train_tokenizer  # noqa: E402

REPO_ID = 'guangyangmusic/PDMX-Synth'
OFFLINE_DEFAULT = 'python data/m21/prepare.py'
# PDMX-Synth's split names -> ours (the first that exists wins)
SPLIT_NAMES = {'train': ('train',), 'val': ('validation', 'val', 'valid', 'dev'), 'test': ('test',)}


def _to_png_gray(img):
    """PIL image (any mode, maybe transparent) -> grayscale PNG bytes, ink dark on white paper,
    through images.py's own conversion (transparent pixels would otherwise turn black)."""
    buf = io.BytesIO()
    to_gray(img).save(buf, format='PNG')
    return buf.getvalue()


def load_splits(streaming=False, max_samples=None):
    """-> {our split: iterable of rows}. Raises RuntimeError (one line) when the hub is unreachable."""
    import datasets
    import huggingface_hub
    # without this, every failed HTTP retry prints its own warning line before our one-line error
    huggingface_hub.utils.logging.set_verbosity_error()
    datasets.utils.logging.set_verbosity_error()
    try:
        ds = datasets.load_dataset(REPO_ID, streaming=streaming)
    except Exception as e:  # offline, gated without login, hub down: all end the same way for the user
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise RuntimeError(f'cannot load {REPO_ID} from the Hugging Face hub ({type(e).__name__}: {reason}); '
                           f'offline? build the embedded default corpus instead: {OFFLINE_DEFAULT}') from None
    out = {}
    for ours, names in SPLIT_NAMES.items():
        name = next((n for n in names if n in ds), None)
        if name is None:
            raise RuntimeError(f'{REPO_ID} has no {ours} split (found {sorted(ds)})')
        split = ds[name]
        if max_samples:
            split = split.take(max_samples) if streaming else split.select(range(min(max_samples, len(split))))
        out[ours] = split
    return out


def prepare(out_dir='data/pdmx_synth/full', streaming=False, max_samples=None, vocab_size=4096):
    import datasets
    t0 = time.time()
    splits = load_splits(streaming, max_samples)
    features = datasets.Features({'image': datasets.Image(), 'transcription': datasets.Value('string'),
                                  'source': datasets.Value('string'), 'tune_id': datasets.Value('string'),
                                  'font': datasets.Value('string')})

    def rows(split, name):
        for i, r in enumerate(split):
            if i % 1000 == 0:
                print(f'\r{name}: {i} rows', end='', flush=True)
            yield {'image': {'bytes': _to_png_gray(r['image']), 'path': None}, 'transcription': r['transcription'],
                   'source': 'pdmx_synth', 'tune_id': f'pdmx_synth/{name}/{i}', 'font': ''}

    dd = datasets.DatasetDict({name: datasets.Dataset.from_generator(rows, features=features,
                                                                      gen_kwargs=dict(split=sp, name=name))
                               for name, sp in splits.items()})
    print()
    with atomic_dir(out_dir.rstrip('/')) as tmp:  # out_dir is always complete or absent
        dd.save_to_disk(tmp)
        train_tokenizer(dd['train']['transcription'], os.path.join(tmp, 'tokenizer'), vocab_size)
        meta = dict(source=REPO_ID, streaming=streaming, max_samples=max_samples, vocab_size=vocab_size,
                    excerpts={k: len(v) for k, v in dd.items()}, total_seconds=round(time.time() - t0, 1))
        with open(os.path.join(tmp, 'meta.json'), 'w') as f:
            json.dump(meta, f, indent=2)
    print(f'wrote {out_dir}: ' + ', '.join(f'{k} {n}' for k, n in meta['excerpts'].items()))
    return meta


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--out_dir', default='data/pdmx_synth/full')
    ap.add_argument('--streaming', action='store_true', help='stream from the hub instead of downloading all shards first')
    ap.add_argument('--max_samples', type=int, default=None, help='keep at most this many rows per split')
    ap.add_argument('--vocab_size', type=int, default=4096)
    a = ap.parse_args(argv)
    try:
        prepare(a.out_dir, a.streaming, a.max_samples, a.vocab_size)
    except (RuntimeError, ValueError, OSError) as e:
        sys.exit(f'error: {e}')
    except KeyboardInterrupt:
        sys.exit('interrupted')


if __name__ == '__main__':
    main()
