"""
bench/scan_negatives.py: images with no music must still be turned down by staves.looks_like_line
after its scan changes (issue 24): 20 each of uniform noise, Gaussian noise, smooth photo-like blobs,
scanned blank paper (degrade.scan light/medium/heavy), flat gray, gradients, and blocks of text, at
random sizes (40-400 px high, 200-2000 wide). Prints how many of each it accepts as a line, for the
current staves.py and (with --rev) the staves.py of a git revision.

    python -m bench.scan_negatives --rev=8b7345c
"""
import argparse
import importlib.util
import os
import subprocess
import tempfile

import numpy as np
from PIL import Image, ImageDraw

from core import degrade
from inference import staves

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def negatives(seed=0, n=20):
    rng = np.random.default_rng(seed)
    out = {}
    for k in range(n):
        h, w = int(rng.integers(40, 400)), int(rng.integers(200, 2000))
        gh, gw = int(rng.integers(3, 30)), int(rng.integers(3, 40))
        g = np.linspace(rng.uniform(0, 255), rng.uniform(0, 255), w)[None, :].repeat(h, 0)
        t = Image.new('L', (w, h), 255)
        d = ImageDraw.Draw(t)
        for y in range(5, h - 10, 14):
            d.text((5, y), 'Lorem ipsum dolor sit amet, consectetur adipiscing elit ' * 3, fill=0)
        for kind, im in (
                ('uniform noise', Image.fromarray((rng.random((h, w)) * 255).astype(np.uint8))),
                ('gaussian noise', Image.fromarray(np.clip(rng.normal(rng.uniform(60, 200), rng.uniform(5, 60), (h, w)),
                                                           0, 255).astype(np.uint8))),
                ('photo-like blobs', Image.fromarray((rng.random((gh, gw)) * 255).astype(np.uint8)).resize(
                    (w, h), Image.Resampling.BICUBIC)),
                ('scanned blank paper', degrade.scan_image(Image.new('L', (w, h), 255), k, list(degrade.PRESETS)[k % 3])),
                ('flat gray', Image.new('L', (w, h), int(rng.integers(0, 256)))),
                ('gradient', Image.fromarray(g.astype(np.uint8))),
                ('text', t)):
            out.setdefault(kind, []).append(im)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--rev', default=None, help="also the staves.py of this git revision")
    args = ap.parse_args()
    mods = [('this tree', staves)]
    if args.rev:
        src = subprocess.run(['git', 'show', f'{args.rev}:staves.py'], cwd=ROOT, capture_output=True, text=True, check=True).stdout
        with tempfile.NamedTemporaryFile('w', suffix='.py', delete=False) as f:
            f.write(src)
        spec = importlib.util.spec_from_file_location('staves_rev', f.name)
        old = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(old)
        mods.append((args.rev, old))
    neg = negatives()
    for kind, ims in neg.items():
        print(f'{kind:20s} ' + '  '.join(f'{name}: {sum(m.looks_like_line(im) for im in ims)}/{len(ims)} accepted'
                                          for name, m in mods))


if __name__ == '__main__':
    main()
