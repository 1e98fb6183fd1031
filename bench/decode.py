"""
bench/decode.py: decoding speed of MusicTrOCR.generate with and without the KV cache.

    python -m bench.decode                          # --lengths=256,1024 --threads=2

The default decoder (6 layers, d_model 512, 8 heads, d_ff 2048), random weights, one 128 x 1024
image, greedy decoding of exactly n tokens (eos ignored); tokens/s for both paths.
"""

import argparse
import time

import torch

from model import MusicTrOCR, MusicTrOCRConfig


def bench_cache(lengths=(256, 1024), backbone='cnn_tiny', device='cpu'):
    torch.manual_seed(0)
    model = MusicTrOCR(MusicTrOCRConfig(backbone=backbone, img_height=128)).to(device).eval()
    img = torch.rand(1, 3, 128, 1024, device=device)
    print(f"decoder: {model.config.n_layer} layers, d_model {model.config.d_model}, "
          f"{model.get_num_params() / 1e6:.1f}M params total; device {device}, threads {torch.get_num_threads()}")
    for n in lengths:
        res = {}
        for use_cache in (True, False):
            t0 = time.perf_counter()
            out = model.generate(img, n, use_cache=use_cache, ignore_eos=True)
            dt = time.perf_counter() - t0
            assert len(out[0]) == n
            res[use_cache] = n / dt
            print(f"{n:5d} new tokens, cache={str(use_cache):5s}: {n / dt:8.1f} tokens/s ({dt:.2f} s)")
        print(f"{n:5d} new tokens: the cache is {res[True] / res[False]:.1f}x faster")


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument('--backbone', default='cnn_tiny')
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--lengths', default='256,1024', help='comma-separated numbers of new tokens')
    ap.add_argument('--threads', type=int, default=0, help='torch intra-op threads (0 = torch default)')
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    bench_cache(tuple(int(n) for n in a.lengths.split(',')), a.backbone, a.device)
