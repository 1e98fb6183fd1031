"""
bench/ptq.py: the post-training quantization report of a trained run. Every PTQ mode of quant.py (fp16,
bf16, int8 weight-only, int8 dynamic, nf4) against fp32 on the same val images: size on disk, val
SER, CPU milliseconds per image.

    python -m bench.ptq --out_dir=out-quickstart --mode=all        # or e.g. --mode=fp16,int8

prints the table and writes it to <out_dir>/quant.md, the numbers to <out_dir>/quant.json.
"""

import argparse
import json
import os
import sys
import tempfile
import time

import torch
from safetensors.torch import save_file

import data
import lora
import quant
from core import metrics
from core.files import atomic_write
from training.checkpoint import find_checkpoint, find_tokenizer, load_model, read_meta

# -----------------------------------------------------------------------------
# measuring storage: serialize the state dict as it would be shipped, then read the file size

def plain_state_dict(model):
    """state_dict -> {name: plain tensor} that safetensors can write: quantized tensors (torch.qint8, from
    quantize_dynamic) become their int8 values + scale + zero point, packed (weight, bias) tuples are
    split, and tensors sharing storage (tied embedding / lm_head) are written once."""
    out, seen = {}, set()

    def add(k, v):
        if isinstance(v, (tuple, list)):
            for i, x in enumerate(v):
                add(f"{k}.{i}", x)
        elif torch.is_tensor(v):
            if v.is_quantized:
                add(f"{k}.int_repr", v.int_repr())
                if v.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
                    add(f"{k}.scale", torch.tensor(v.q_scale(), dtype=torch.float32))
                    add(f"{k}.zero_point", torch.tensor(v.q_zero_point(), dtype=torch.int32))
                else:
                    add(f"{k}.scale", v.q_per_channel_scales().float())
                    add(f"{k}.zero_point", v.q_per_channel_zero_points().int())
                return
            key = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape), v.dtype) if v.numel() else None
            if key is not None and key in seen:
                return
            seen.add(key)
            out[k] = v.detach().contiguous().cpu()
        # other entries (e.g. a torch.dtype) carry no data

    for k, v in model.state_dict().items():
        add(k, v)
    return out


def serialized_size(model, path=None):
    """Bytes on disk of the model's weights saved as safetensors (to `path` if given, else a temp file)."""
    sd = plain_state_dict(model)
    if path is not None:
        save_file(sd, path)
        return os.path.getsize(path)
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "model.safetensors")
        save_file(sd, p)
        return os.path.getsize(p)


# -----------------------------------------------------------------------------
# the report: python -m bench.ptq --out_dir=<run> --mode=fp32|fp16|bf16|int8|int8_dynamic|nf4|all

MODES = ("fp32", "fp16", "bf16", "int8", "int8_dynamic", "nf4")


def prepare_for_inference(model, mode):
    """A loaded model -> the model to run for `mode` (may be a new object) and the input dtype.
    LoRA adapters are merged first (an NF4 backbone is dequantized for that), so every mode starts
    from the same plain fp32 network. nf4 here is PTQ of every Linear/Conv2d >= 4096 weights."""
    if lora.lora_modules(model):
        quant.dequantize_model_nf4(model)
        lora.merge_and_unload(model)
    elif any(isinstance(m, quant._NF4Mixin) for m in model.modules()):
        quant.dequantize_model_nf4(model)
    dtype = torch.float32
    if mode == "fp16":
        model, dtype = model.half(), torch.float16
    elif mode == "bf16":
        model, dtype = model.to(torch.bfloat16), torch.bfloat16
    elif mode == "int8":
        quant.quantize_model_int8(model)
    elif mode == "int8_dynamic":
        model = quant.quantize_model_int8_dynamic(model)
    elif mode == "nf4":
        quant.quantize_model_nf4(model)
    return model.eval(), dtype


def decode_pass(model, dtype, batches, max_new_tokens):
    """Greedy-decode every batch once -> (seconds per batch, predicted ids per image)."""
    times, outs = [], []
    with torch.inference_mode():
        for images, widths, _ in batches:
            t0 = time.perf_counter()
            outs += model.generate(images.to(dtype), max_new_tokens=max_new_tokens, widths=widths)
            times.append(time.perf_counter() - t0)
    return times, outs


def evaluate_modes(ckpt_dir, modes, batches, tokenizer, max_new_tokens, repeats=1):
    """Every mode: load + quantize (size on disk), decode the batches (val SER), and time them.
    The timing passes are interleaved (mode 1, mode 2, ..., then again) and each batch keeps its
    fastest time, so a burst of load from other processes cannot favour one mode over another."""
    rows, models = {}, {}
    for mode in modes:
        try:
            model, dtype = prepare_for_inference(load_model(ckpt_dir, device="cpu")[0], mode)
            decode_pass(model, dtype, batches[:1], max_new_tokens)  # warm-up, untimed; fails early if unsupported
        except (RuntimeError, NotImplementedError) as e:  # e.g. a dtype/op this CPU build lacks
            rows[mode] = dict(mode=mode, error=str(e).strip().splitlines()[0][:120])
            continue
        models[mode] = (model, dtype)
        rows[mode] = dict(mode=mode, size_bytes=serialized_size(model))
    best = {mode: [float("inf")] * len(batches) for mode in models}
    refs = [t for _, _, texts in batches for t in texts]
    for rep in range(repeats):
        for mode, (model, dtype) in models.items():
            times, outs = decode_pass(model, dtype, batches, max_new_tokens)
            best[mode] = [min(a, b) for a, b in zip(best[mode], times)]
            if rep == 0:  # greedy decoding is deterministic: score the first pass
                preds = [tokenizer.decode(o) for o in outs]
                s = metrics.score(preds, refs)
                rows[mode].update(ser=s["ser"], cer=s["cer"], seq_acc=s["seq_acc"], n_images=len(refs),
                                  mean_pred_tokens=sum(len(o) for o in outs) / len(refs))
    for mode in models:
        rows[mode]["ms_per_image"] = 1000 * sum(best[mode]) / len(refs)
    return [rows[m] for m in modes]


def markdown_table(rows, base, header):
    lines = [header, "",
             "| mode | size on disk | vs fp32 | val SER | ΔSER vs fp32 | CPU ms/image | speed-up | tokens/image |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['mode']} | failed: {r['error']} | | | | | | |")
            continue
        rel = lambda k: f"{base[k] / r[k]:.2f}x" if base else "n/a"
        dser = f"{100 * (r['ser'] - base['ser']):+.2f} pts" if base else "n/a"
        lines.append(f"| {r['mode']} | {r['size_bytes'] / 1e6:.2f} MB | {rel('size_bytes')} smaller "
                     f"| {100 * r['ser']:.2f}% | {dser} | {r['ms_per_image']:.1f} | {rel('ms_per_image')} "
                     f"| {r['mean_pred_tokens']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv):

    class Parser(argparse.ArgumentParser):
        def error(self, message):  # one line, no usage dump
            sys.exit(f"error: {message}")

    p = Parser(description="post-training quantization report for a trained nanoOMR run")
    p.add_argument("--out_dir", required=True, help="the training run's directory (holds ckpt_best/ or ckpt_last/)")
    p.add_argument("--mode", default="all", help=f"'all' or a comma-separated list of {', '.join(MODES)}")
    p.add_argument("--ckpt", default="best", choices=("best", "last"))
    p.add_argument("--data_dir", default=None, help="default: the run's own data_dir")
    p.add_argument("--n_samples", type=int, default=100, help="val images to decode")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--max_new_tokens", type=int, default=0, help="0 = the model's max_seq_len - 1")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch default)")
    p.add_argument("--repeats", type=int, default=1, help="time each batch this many times, keep the fastest")
    a = p.parse_args(argv)

    bad = [m for m in a.mode.split(",") if m not in MODES] if a.mode != "all" else []
    if bad:
        raise ValueError(f"unknown --mode {bad[0]!r}: use 'all' or a comma-separated list of {', '.join(MODES)}")
    if not os.path.isdir(a.out_dir):
        raise FileNotFoundError(f"run directory {a.out_dir} does not exist (train one with python train.py ...)")
    ckpt_dir = find_checkpoint(a.out_dir, ("ckpt_best", "ckpt_last") if a.ckpt == "best" else ("ckpt_last",))
    meta = read_meta(ckpt_dir)
    tc, margs = meta.get("train_config") or {}, meta["model_args"]
    data_dir = a.data_dir or tc.get("data_dir")
    if not data_dir:
        raise ValueError(f"{ckpt_dir}/config.json names no data_dir: pass --data_dir")
    tokenizer = data.Tokenizer(find_tokenizer(a.out_dir, meta, data_dir))
    if tokenizer.vocab_size != margs["vocab_size"]:
        raise ValueError(f"tokenizer of {data_dir} has {tokenizer.vocab_size} tokens, the model {margs['vocab_size']}")
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    ds = data.OMRDataset(data_dir, "val", tokenizer, img_height=margs.get("img_height", 224),
                         max_width=tc.get("max_width", 2048), max_len=margs.get("max_seq_len"))
    n = min(a.n_samples, len(ds))
    if n == 0:
        raise ValueError(f"the val split of {data_dir} is empty")
    collate = data.Collate(tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id)
    batches = []
    for i in range(0, n, a.batch_size):  # the first n val images, prepared once and shared by all modes
        b = collate([ds[j] for j in range(i, min(n, i + a.batch_size))])
        batches.append((b["images"], b["widths"], b["text"]))
    max_new = a.max_new_tokens or margs["max_seq_len"] - 1

    load = os.getloadavg()[0]  # other processes on the machine skew the CPU timings: say how busy it was
    modes = MODES if a.mode == "all" else tuple(dict.fromkeys(["fp32"] + a.mode.split(",")))  # fp32: the reference
    rows = evaluate_modes(ckpt_dir, modes, batches, tokenizer, max_new, max(1, a.repeats))
    for r in rows:
        print(f"{r['mode']:>12}: " + (f"error: {r['error']}" if "error" in r else
              f"{r['size_bytes'] / 1e6:8.2f} MB  SER {100 * r['ser']:6.2f}%  {r['ms_per_image']:8.1f} ms/image"))
    base = next((r for r in rows if r["mode"] == "fp32" and "error" not in r), None)
    header = (f"Post-training quantization of `{ckpt_dir}` (backbone {margs.get('backbone')}, iter {meta.get('iter_num')}): "
              f"{n} val images of `{data_dir}`, greedy decoding, batch {a.batch_size}, CPU with "
              f"{torch.get_num_threads()} threads, fastest of {max(1, a.repeats)} interleaved passes (load average before: {load:.2f}). Size = the weights as safetensors. "
              "int8 (weight-only) and nf4 are storage formats, dequantized on the fly, so they save memory, "
              "not CPU time; int8_dynamic runs int8 GEMMs (nn.Linear only, convolutions stay fp32).")
    table = markdown_table(rows, base, header)
    print("\n" + table)
    atomic_write(os.path.join(a.out_dir, "quant.md"), table)
    atomic_write(os.path.join(a.out_dir, "quant.json"),
                 json.dumps(dict(ckpt_dir=ckpt_dir, data_dir=data_dir, n_images=n, batch_size=a.batch_size,
                                  threads=torch.get_num_threads(), load_avg=load, rows=rows), indent=2))
    print(f"wrote {a.out_dir}/quant.md and quant.json")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
