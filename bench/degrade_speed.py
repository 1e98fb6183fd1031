"""
bench/degrade_speed.py: milliseconds per image of the scan degradations at the training size
(64 px high, as config/reader.py's cache holds them, widths as the corpus has them, up to 1024), for
degrade.py (numpy + PIL) and, where installed, the same effects from albumentations (OpenCV) and augraphy.
One thread for every library (OpenCV's own pool off): in training the loader shares the 2 cores with torch.

    python -m bench.degrade_speed --data_dir=data/m21/q200 [--n=64] [--native]
    python -m bench.degrade_speed --data_dir=data/m21/quick --loader   # the loader, per sample
    (albumentations / augraphy: run it with a python that has them, e.g. a venv with --system-site-packages)
"""
import argparse
import os
import time

import numpy as np

import data
from core import degrade
from core import images
import cv2
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timeit(fn, arrs, reps=2):
    """(ms wall, ms CPU) per image, the best of `reps` passes over arrs."""
    best = (1e9, 1e9)
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        for a in arrs:
            fn(a)
        t = ((time.perf_counter() - t0) / len(arrs) * 1e3, (time.process_time() - c0) / len(arrs) * 1e3)
        best = min(best, t)
    return best


def ours(arrs):
    rng = np.random.default_rng(0)
    one = {
        'ink_bleed': lambda a: degrade.ink_bleed(a, 0.5),
        'fade': lambda a: degrade.fade(a, rng, 0.3),
        'paper': lambda a: degrade.paper(a, rng, 0.1, 0.1),
        'light': lambda a: degrade.light(a, rng, 0.2),
        'rotate': lambda a: degrade.rotate(a, 1.5),
        'perspective': lambda a: degrade.perspective(a, rng, 0.02),
        'blur': lambda a: degrade.blur(a, 0.8),
        'noise': lambda a: degrade.noise(a, rng, 0.05, 0.002),
        'binarize (global)': lambda a: degrade.binarize(a),
        'binarize (local, Sauvola)': lambda a: degrade.binarize(a, local=True),
        'jpeg': lambda a: degrade.jpeg(a, 50),
    }
    rows = [(k, *timeit(f, arrs)) for k, f in one.items()]
    for p in degrade.PRESETS:
        rows.append((f'scan {p} (the pipeline)', *timeit(lambda a: degrade.scan(a, rng, p), arrs)))
    return rows


def albu(arrs):
    import albumentations as A
    cv2.setNumThreads(1)
    rng = np.random.default_rng(0)
    one = {
        'blur': A.GaussianBlur(sigma_limit=(0.8, 0.8), blur_limit=0, p=1),
        'noise': A.GaussNoise(std_range=(0.05, 0.05), p=1),
        'rotate': A.SafeRotate(limit=(1.5, 1.5), border_mode=cv2.BORDER_CONSTANT, fill=255, p=1),
        'perspective': A.Perspective(scale=(0.02, 0.02), fit_output=True, fill=255, p=1),
        'jpeg': A.ImageCompression(quality_range=(50, 50), p=1),
        'light (brightness/contrast)': A.RandomBrightnessContrast(p=1),
        'light (illumination)': A.Illumination(p=1),
        'ink_bleed (morphological)': A.Morphological(scale=(3, 3), operation='erosion', p=1),
    }
    pipe = A.Compose([A.Morphological(scale=(3, 3), operation='erosion', p=0.3),
                      A.Illumination(p=0.5), A.SafeRotate(limit=1.5, border_mode=cv2.BORDER_CONSTANT, fill=255, p=0.7),
                      A.Perspective(scale=(0, 0.025), fit_output=True, fill=255, p=0.4),
                      A.GaussianBlur(sigma_limit=(0.3, 0.8), blur_limit=0, p=0.7),
                      A.GaussNoise(std_range=(0.01, 0.06), p=0.7), A.ImageCompression(quality_range=(35, 85), p=0.6)],
                     seed=0)
    rows = []
    for k, t in one.items():
        try:
            rows.append((k, *timeit(lambda a: t(image=a)['image'], arrs)))
        except Exception as e:  # noqa: BLE001  a transform this version lacks
            rows.append((f'{k} (failed: {type(e).__name__})', float('nan'), float('nan')))
    rows.append(('Compose like scan medium (no paper/fade/binarize)', *timeit(lambda a: pipe(image=a)['image'], arrs)))
    return rows


def augr(arrs):
    cv2.setNumThreads(1)
    import augraphy as G
    one = {
        'ink_bleed (InkBleed)': G.InkBleed(p=1),
        'fade (LowInkRandomLines)': G.LowInkRandomLines(p=1),
        'paper (NoiseTexturize)': G.NoiseTexturize(p=1),
        'paper (SubtleNoise)': G.SubtleNoise(p=1),
        'light (LightingGradient)': G.LightingGradient(p=1),
        'rotate (Geometric)': G.Geometric(rotate_range=(1, 2), p=1),
        'jpeg (Jpeg)': G.Jpeg(p=1),
        'binarize (BadPhotoCopy)': G.BadPhotoCopy(p=1),
    }
    rows = []
    for k, t in one.items():
        try:
            rows.append((k, *timeit(lambda a: t(a), arrs, reps=1)))
        except Exception as e:  # noqa: BLE001
            rows.append((f'{k} (failed: {type(e).__name__}: {str(e)[:60]})', float('nan'), float('nan')))
    try:
        pipe = G.default_augraphy_pipeline()
        rows.append(('default_augraphy_pipeline', *timeit(lambda a: pipe(a), arrs[:16], reps=1)))
    except Exception as e:  # noqa: BLE001
        rows.append((f'default pipeline (failed: {type(e).__name__})', float('nan'), float('nan')))
    return rows


def loader(data_dir, n=512, shares=(0.0, 0.5, 1.0), preset='medium'):
    """CPU ms per training sample through the training path of config/reader.py (the 64 px cache,
    light augmentation, collate) with augment_scan = each share: process time, so other jobs on the
    machine barely move it. Alternating passes, the best of 3 per share."""
    torch.set_num_threads(1)
    tok = data.Tokenizer(os.path.join(data_dir, 'tokenizer.model'))
    collate = data.Collate(tok.pad_id, tok.bos_id, tok.eos_id)
    dss = {s: data.OMRDataset(data_dir, 'train', tok, img_height=64, max_width=1024, augment=True, cache=True,
                              scan=s, scan_preset=preset) for s in shares}
    best = {s: 1e9 for s in shares}
    for _ in range(3):
        for s, ds in dss.items():
            c0 = time.process_time()
            for k in range(0, n, 32):
                collate([ds[(k + j) % len(ds)] for j in range(32)])
            best[s] = min(best[s], (time.process_time() - c0) / n * 1e3)
    for s in shares:
        print(f'loader augment_scan={s} ({preset}): {best[s]:.2f} ms CPU per sample '
              f'(+{best[s] - best[shares[0]]:.2f} ms over augment_scan={shares[0]})')


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--data_dir', default='data/m21/q200')
    ap.add_argument('--n', type=int, default=64)
    ap.add_argument('--libs', default='ours,albumentations,augraphy')
    ap.add_argument('--native', action='store_true', help='at the corpus resolution instead of 64 px high')
    ap.add_argument('--loader', action='store_true', help='CPU cost per sample of the training loader, augment_scan 0/0.5/1')
    args = ap.parse_args()
    if args.loader:
        return loader(args.data_dir)
    ds = data.OMRDataset(args.data_dir, 'train', data.Tokenizer(os.path.join(args.data_dir, 'tokenizer.model')),
                         img_height=64, max_width=1024)
    arrs = [ds.load_image(r) if not args.native else
            np.asarray(images.to_gray(data.load_split(args.data_dir, 'train')[r]['image'])) for r in range(args.n)]
    w = np.mean([a.shape[1] for a in arrs])
    print(f'{len(arrs)} images, {arrs[0].shape[0]} px high, mean width {w:.0f} px; {os.cpu_count()} cores, '
          f'load average {os.getloadavg()[0]:.1f}')
    for lib, fn in (('ours', ours), ('albumentations', albu), ('augraphy', augr)):
        if lib not in args.libs.split(','):
            continue
        try:
            rows = fn(arrs)
        except ImportError as e:
            print(f'{lib}: not installed ({e})')
            continue
        for k, ms, cpu in rows:
            print(f'{lib:15s} {k:52s} {ms:8.2f} ms wall {cpu:8.2f} ms CPU per image')


if __name__ == '__main__':
    main()
