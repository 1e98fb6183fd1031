"""
bench/loader.py: how fast the data path is on this machine. Loader samples/s (CPU cost per sample, then
through a DataLoader with random and with width-bucketed batches) at each img_height, and the time
metrics.score() takes on 800 samples.

    python -m bench.loader --data_dir=data/m21/quick
"""
import argparse
import os
import random
import sys
import time

import torch

import data
from core import metrics


def bench(data_dir, split="train", batch_size=32, num_workers=2, n_samples=2000, heights=(128, 224),
          max_width=2048):
    """Print loader speed (CPU cost per sample, then samples/s through a DataLoader with random and with
    width-bucketed batches) at each img_height, and the time score() takes on 800 samples."""
    tok = data.Tokenizer(os.path.join(data_dir, "tokenizer.model"))
    # wall-clock rates depend on what else runs on the machine: print the load next to them
    print(f"bench on {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    collate_fn = data.Collate(tok.pad_id, tok.bos_id, tok.eos_id)
    for h in heights:
        ds = data.OMRDataset(data_dir, split, tok, img_height=h, max_width=max_width)
        # n_samples draws (the split repeated as needed), the same ones for random and bucketed batches
        rows = [i % len(ds) for i in range(n_samples)]
        sub = torch.utils.data.Subset(ds, rows)
        # CPU time per sample in this process (decode + resize + tokenize + collate), single-threaded as in
        # a worker: unlike wall-clock rates it barely moves when other jobs share the cores.
        torch_threads = torch.get_num_threads()
        torch.set_num_threads(1)
        c0 = time.process_time()
        for k in range(0, 256, batch_size):
            collate_fn([ds[rows[(k + j) % n_samples]] for j in range(batch_size)])
        cpu_ms = (time.process_time() - c0) / 256 * 1e3
        torch.set_num_threads(torch_threads)
        print(f"loader img_height={h} cpu cost: {cpu_ms:.2f} ms CPU per sample -> at most "
              f"{1e3 / cpu_ms:.0f} samples/s per worker core")
        for mode in ("random", "bucketed"):
            if mode == "random":
                kw = dict(batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(0))
            else:  # train.py's order: windows of 50 batches sorted by width
                kw = dict(batch_sampler=data.epoch_batches(len(rows), 0, 0, batch_size, 1, widths=ds.widths()[rows].tolist()))
            loader = torch.utils.data.DataLoader(sub, num_workers=num_workers, collate_fn=collate_fn, **kw)
            t0 = time.perf_counter()
            it = iter(loader)
            next(it)  # worker start-up and the first batch are excluded from the steady-state rate
            t1 = time.perf_counter()
            n, px, nb = 0, 0, 0
            for b in it:
                n += len(b["text"])
                px += b["images"].shape[-1]
                nb += 1
            t2 = time.perf_counter()
            print(f"loader img_height={h} {mode:8s}: {n / (t2 - t1):6.0f} samples/s ({num_workers} workers, "
                  f"batch {batch_size}, {n} samples after a first batch that took {t1 - t0:.2f}s with worker "
                  f"start-up; mean padded width {px / max(1, nb):.0f} px)")
    # metrics: 800 reference transcriptions against fake predictions with ~5% of their notes edited
    pool = []
    for s in ("val", "test", "train"):
        pool += list(data.load_split(data_dir, s)["transcription"])
    # real excerpts, and "long" ones (4 excerpts joined by line breaks, ~4x the symbols) for headroom
    for name, k in (("real", 1), ("long", 4)):
        refs = ["\n".join(pool[(i * k + j) % len(pool)] for j in range(k)) for i in range(800)]
        rng = random.Random(0)
        preds = [metrics.corrupt(r, 0.05, rng) for r in refs]
        t0, c0 = time.perf_counter(), time.process_time()
        m = metrics.score(preds, refs, tok)
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        nsym = sum(len(metrics.abc_symbols(r)) for r in refs) / len(refs)
        nch = sum(len(r) for r in refs) / len(refs)
        print(f"metrics {name}: score() on {len(refs)} samples (mean {nsym:.0f} symbols, {nch:.0f} chars, 5% "
              f"note noise) took {dt:.3f}s wall, {cpu:.3f}s CPU -> ser {m['ser']:.4f} cer {m['cer']:.4f} "
              f"bpe_ser {m['bpe_ser']:.4f} seq_acc {m['seq_acc']:.4f}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--data_dir", default="data/m21/quick")
    p.add_argument("--split", default="train")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--num_workers", type=int, default=2)
    p.add_argument("--n_samples", type=int, default=2000)
    p.add_argument("--max_width", type=int, default=2048)
    args = p.parse_args()
    try:
        bench(args.data_dir, args.split, args.batch_size, args.num_workers, args.n_samples, max_width=args.max_width)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        sys.exit(f"error: {e}")
