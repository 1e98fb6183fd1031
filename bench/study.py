"""
bench/study.py: the backbone study. Train every encoder with one recipe on the same number of samples,
evaluate each on the test split, and gather the results into one table, plots and examples.

    # 1. the sweep: one train.py run per backbone, as a subprocess, so train.py's loop is the only loop
    python -m bench.study run --backbones=resnet50,efficientnet_b0,convnext_tiny,vit_small,deit_small,swin_tiny,mobilevit_small \\
        --max_samples=200000 --minutes_per_backbone=10 --out_root=out-study --data_dir=data/m21/full
    # 2. the gathering: every number is read back from the runs' own files, never typed in
    python -m bench.study report --runs='out-study/*' --results_dir=results

`run` passes any other `--key=value` straight to train.py for every backbone (e.g. --img_height=224,
--compile=True), after config/<backbone>.py, so all runs share the recipe and differ only in the
encoder. Every run gets --max_samples (train.py makes it max_iters = ceil(max_samples / images per
step)); --minutes_per_backbone is a safety cap (train.py's max_time_minutes): a run that hits it saw
fewer samples than the others, and the report says so next to its row.

`report` reads, per run directory (train.py's out_dir):
  log.jsonl          one JSON object per eval: val loss/SER curves, samples/s, MFU, peak memory, time
  final_eval.json    train.py's evaluation of the best checkpoint on the test split, with the run's
                     parameter count, mean samples/s, MFU, peak memory and training time
  ckpt_best/         config.json (backbone, recipe) and the weights, for the example predictions
and writes backbone_study.md / .json, backbone_study_val_loss.png, backbone_study_ser_params.png,
backbone_study_throughput.png and backbone_study_examples.png (6 test images from the best model with
the truth, the prediction and the symbol errors marked).
"""

import argparse
import difflib
import itertools
import json
import math
import os
import subprocess
import sys
import time

import torch

from backbones import STUDY_BACKBONES
from core.files import atomic_path, atomic_write
from core.metrics import abc_symbols, score
from data import OMRDataset, Tokenizer, collate
from training.checkpoint import find_tokenizer, load_model
from training.runlog import expand, read_run

# what each family tests (see backbones.py for the long version)
FAMILY = {
    'resnet50': 'CNN (residual)',
    'efficientnet_b0': 'CNN (mobile: depthwise + SE)',
    'convnext_tiny': 'CNN (modernized)',
    'vit_small': 'ViT (plain, global attention)',
    'deit_small': 'ViT (same net, DeiT weights)',
    'swin_tiny': 'hierarchical ViT (shifted windows)',
    'mobilevit_small': 'hybrid CNN + ViT',
    'cnn_tiny': 'CNN (tiny, tests only)',
}

# -----------------------------------------------------------------------------
# `run`: the sweep


def parse_overrides(extra):
    """['--img_height=64', '--device=cpu'] -> {'img_height': '64', 'device': 'cpu'}: the raw text, passed
    to train.py unchanged (its configurator does the typing)."""
    out = {}
    for a in extra:
        if not a.startswith('--') or '=' not in a:
            raise ValueError(f"cannot pass {a!r} to train.py: use --key=value")
        k, v = a[2:].split('=', 1)
        out[k] = v
    return out


def train_command(backbone, out_dir, max_samples, minutes, configs, overrides):
    """The train.py command (argv) of one study run. Config files: config/<backbone>.py (the recipe)
    when it exists, then `configs` (e.g. a mode such as config/lora_r8.py, or config/tiny_test.py in
    the tests), then the per-run and shared overrides. --max_samples gives every run the same number
    of training images whatever its batch size."""
    own = os.path.join('config', f'{backbone}.py')
    files = ([own] if os.path.isfile(own) else []) + list(configs)
    per_run = dict(backbone=backbone, out_dir=out_dir, max_samples=max_samples)
    if minutes:
        per_run['max_time_minutes'] = minutes
    return [sys.executable, 'train.py'] + files + [f'--{k}={v}' for k, v in list(per_run.items()) + list(overrides.items())]


def cmd_run(args, extra):
    if not os.path.isfile('train.py'):
        raise FileNotFoundError("train.py is not in the current directory: run study.py from the repository root")
    overrides = parse_overrides(extra)
    for k in ('out_dir', 'max_iters', 'max_samples', 'backbone', 'max_time_minutes'):
        if k in overrides:
            raise ValueError(f"--{k} is set by study.py per run; leave it out")
    backbones = [b for b in args.backbones.split(',') if b]
    configs = [c for c in args.configs.split(',') if c]
    for c in configs:
        if not os.path.isfile(c):
            raise FileNotFoundError(f"config file {c} not found")
    os.makedirs(args.out_root, exist_ok=True)
    # study.json: what each run was asked to do. Kept across invocations, so a sweep can be split over
    # several commands (e.g. several calls to a GPU machine) and a finished run is not redone
    record_path = os.path.join(args.out_root, 'study.json')
    record = dict(runs={})
    if os.path.isfile(record_path):
        with open(record_path) as f:
            record = json.load(f)
    failed = []
    for bb in backbones:
        out_dir = os.path.join(args.out_root, bb)
        cmd = train_command(bb, out_dir, args.max_samples, args.minutes_per_backbone, configs, overrides)
        command = ' '.join(['python'] + cmd[1:])
        done = record['runs'].get(bb, {})
        if done.get('command') == command and done.get('returncode') == 0 and \
                os.path.isfile(os.path.join(out_dir, 'final_eval.json')):
            print(f"[study] {bb}: already done with this command ({out_dir}/final_eval.json), skipped", flush=True)
            continue
        print(f"[study] {bb}: {command}", flush=True)
        t0 = time.time()
        rc = subprocess.call(cmd)
        record['runs'][bb] = dict(command=command, max_samples=args.max_samples, minutes_cap=args.minutes_per_backbone,
                                  returncode=rc, seconds=round(time.time() - t0, 1))
        if rc != 0:
            failed.append(bb)
        atomic_write(record_path, json.dumps(record, indent=1))
    if failed:
        raise RuntimeError(f"train.py failed for {', '.join(failed)} (see its output above); "
                           f"the other runs are in {args.out_root}")
    if args.report:
        args.runs = os.path.join(args.out_root, '*')
        cmd_report(args)

# -----------------------------------------------------------------------------
# `report`: the table


def gather(run_dirs):
    """One row per run, best (lowest SER) first."""
    rows = [read_run(d) for d in run_dirs]
    for r in rows:
        r['family'] = FAMILY.get(r['backbone'], '?')
    return sorted(rows, key=lambda r: math.inf if r['ser'] is None else r['ser'])  # no test images: last


def study_table(rows, planned):
    head = ['backbone', 'family', 'init', 'params (M)', f"{rows[0]['split']} SER", 'CER', 'seq-acc', 'best val loss',
            'samples/s', 'MFU', 'peak mem (MiB)', 'wall (min)', 'samples seen']
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    cell = lambda v, show: '-' if v is None else show(v)  # a run may lack a number (no test images, CPU MFU)
    for r in rows:
        seen = cell(r['samples_seen'], '{:,}'.format)
        if planned.get(r['name']) and r['samples_seen'] is not None and r['samples_seen'] < planned[r['name']]:
            seen += f" (time cap; planned {planned[r['name']]:,})"
        lines.append('| ' + ' | '.join([
            r['backbone'], r['family'], r['init'], cell(r['params'], lambda v: f'{v / 1e6:.2f}'),
            cell(r['ser'], lambda v: f'{100 * v:.2f}%'), cell(r['cer'], lambda v: f'{100 * v:.2f}%'),
            cell(r['seq_acc'], lambda v: f'{100 * v:.1f}%'), cell(r['best_val_loss'], '{:.4f}'.format),
            cell(r['samples_per_sec'], '{:.1f}'.format), cell(r['mfu'], lambda v: f'{100 * v:.1f}%'),
            cell(r['peak_mem_mb'], '{:,.0f}'.format), cell(r['wall_s'], lambda v: f'{v / 60:.1f}'),
            seen]) + ' |')
    return '\n'.join(lines)

# -----------------------------------------------------------------------------
# plots


def _plt():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def savefig(fig, path):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches='tight')
    _plt().close(fig)


def plot_curves(rows, path):
    """Val loss of every run against training samples seen, on one figure."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        ax.plot([e['iter'] * r['samples_per_iter'] for e in r['log']], [e['val_loss'] for e in r['log']],
                marker='.', label=r['backbone'])
    ax.set_xlabel('training samples')
    ax.set_ylabel('val loss')
    ax.set_yscale('log')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    savefig(fig, path)


def plot_ser_params(rows, path):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for r in [r for r in rows if r['params'] and r['ser'] is not None]:
        ax.scatter(r['params'] / 1e6, 100 * r['ser'])
        ax.annotate(r['backbone'], (r['params'] / 1e6, 100 * r['ser']), fontsize=8, xytext=(3, 3),
                    textcoords='offset points')
    ax.set_xscale('log')
    ax.set_xlabel('parameters (M, log)')
    ax.set_ylabel(f"{rows[0]['split']} SER (%)")
    ax.grid(alpha=0.3)
    savefig(fig, path)


def plot_throughput(rows, path):
    plt = _plt()
    rows = [r for r in rows if r['samples_per_sec'] is not None]
    rows = sorted(rows, key=lambda r: -r['samples_per_sec'])
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar([r['backbone'] for r in rows], [r['samples_per_sec'] for r in rows], color='#4c72b0')
    ax.set_ylabel('training samples/s (mean over evals, final_eval.json)')
    ax.tick_params(axis='x', rotation=30)
    ax.grid(alpha=0.3, axis='y')
    savefig(fig, path)

# -----------------------------------------------------------------------------
# example predictions with their errors marked


def align_symbols(ref, hyp):
    """Align two ABC symbol lists -> (ref_line, hyp_line, marks, n_sub, n_del, n_ins).
    Columns are padded to the wider symbol; marks: '^' substituted, '-' missing from the prediction,
    '+' inserted by it. difflib's alignment (Ratcliff/Obershelp) is close to but not always a minimal
    edit script, so the counts can exceed the Levenshtein distance that SER uses."""
    r_line, h_line, marks, n = [], [], [], dict(sub=0, dele=0, ins=0)
    sm = difflib.SequenceMatcher(a=ref, b=hyp, autojunk=False)
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        for a, b in itertools.zip_longest(ref[i1:i2], hyp[j1:j2]):
            a = (a or '').replace('\n', '⏎')
            b = (b or '').replace('\n', '⏎')
            w = max(len(a), len(b))
            if tag == 'equal':
                m = ' '
            elif a and b:
                m, n['sub'] = '^', n['sub'] + 1
            elif a:
                m, n['dele'] = '-', n['dele'] + 1
            else:
                m, n['ins'] = '+', n['ins'] + 1
            r_line.append(a.ljust(w))
            h_line.append(b.ljust(w))
            marks.append(m * w)
    return ' '.join(r_line), ' '.join(h_line), ' '.join(marks), n['sub'], n['dele'], n['ins']


def wrap_columns(lines, width):
    """Cut aligned lines into chunks of `width` characters, all at the same offsets."""
    chunks = []
    for s in range(0, max(len(l) for l in lines) or 1, width):
        chunks += [l[s:s + width] for l in lines]
    return chunks


def predict_examples(ckpt_dir, n=6, device='cpu', max_new_tokens=None):
    """Greedy predictions of the first n test images of the run's own data_dir, with per-example scores."""
    model, meta = load_model(ckpt_dir, device=device)
    model.eval()
    tc = meta.get('train_config') or {}
    data_dir = tc['data_dir']
    tok = Tokenizer(find_tokenizer(os.path.dirname(os.path.abspath(ckpt_dir)), meta))  # train.py keeps a copy
    ds = OMRDataset(data_dir, 'test', tok, img_height=tc.get('img_height', model.config.img_height),
                    max_width=tc.get('max_width', 2048))
    items = [ds[i] for i in range(min(n, len(ds)))]
    batch = collate(items, tok.pad_id)
    limit = max_new_tokens or model.config.max_seq_len - 1
    with torch.no_grad():
        out = model.generate(batch['images'].to(device), limit, widths=batch['widths'].to(device))
    examples = []
    for item, ids in zip(items, out):
        pred = tok.decode(ids)
        s = score([pred], [item['text']])
        ref_l, hyp_l, marks, n_sub, n_del, n_ins = align_symbols(abc_symbols(item['text']), abc_symbols(pred))
        examples.append(dict(index=int(item['index']), truth=item['text'], prediction=pred, ser=s['ser'],
                             cer=s['cer'], aligned=[ref_l, hyp_l, marks], sub=n_sub, dele=n_del, ins=n_ins,
                             image=item['image']))
    return examples


def plot_examples(examples, title, path, width=110):
    plt = _plt()
    n_text = [len(wrap_columns(e['aligned'], width)) + 1 for e in examples]
    fig = plt.figure(figsize=(12, sum(1.3 + 0.16 * t for t in n_text)))
    gs = fig.add_gridspec(2 * len(examples), 1, height_ratios=[x for t in n_text for x in (1.1, 0.16 * t)])
    for k, (e, t) in enumerate(zip(examples, n_text)):
        ax = fig.add_subplot(gs[2 * k])
        ax.imshow(e['image'].permute(1, 2, 0).numpy(), cmap='gray', aspect='equal')
        ax.set_axis_off()
        ax.set_title(f"test #{e['index']}: SER {100 * e['ser']:.1f}%  ({e['sub']} substituted ^, "
                     f"{e['dele']} missing -, {e['ins']} inserted +)", fontsize=8, loc='left')
        tx = fig.add_subplot(gs[2 * k + 1])
        tx.set_axis_off()
        chunks = wrap_columns(e['aligned'], width)
        labels = itertools.cycle(['truth ', 'pred  ', '      '])
        text = '\n'.join(next(labels) + c for c in chunks)
        tx.text(0, 1, text, family='monospace', fontsize=6.5, va='top', ha='left', parse_math=False,
                transform=tx.transAxes)
    fig.suptitle(title, fontsize=10)
    savefig(fig, path)

# -----------------------------------------------------------------------------


def cmd_report(args):
    rows = gather(expand(args.runs))
    planned = {}
    for d in {os.path.dirname(os.path.normpath(r['run_dir'])) for r in rows}:
        p = os.path.join(d, 'study.json')
        if os.path.isfile(p):
            with open(p) as f:
                for bb, rec in json.load(f)['runs'].items():
                    planned[bb] = rec['max_samples']
    os.makedirs(args.results_dir, exist_ok=True)
    out = lambda name: os.path.join(args.results_dir, name)
    files = dict(table=out('backbone_study.md'), json=out('backbone_study.json'),
                 val_loss_png=out('backbone_study_val_loss.png'), ser_params_png=out('backbone_study_ser_params.png'),
                 throughput_png=out('backbone_study_throughput.png'))
    plot_curves(rows, files['val_loss_png'])
    plot_ser_params(rows, files['ser_params_png'])
    plot_throughput(rows, files['throughput_png'])
    best, examples = rows[0], []
    if args.examples > 0:  # needs the best run's weights and data_dir (0: logs alone, e.g. copied off a GPU box)
        files['examples_png'] = out('backbone_study_examples.png')
        examples = predict_examples(best['ckpt_dir'], n=args.examples, device=args.examples_device,
                                    max_new_tokens=args.max_new_tokens)
        plot_examples(examples, f"{best['backbone']} ({best['ckpt_dir']}): greedy predictions on the test split",
                      files['examples_png'])
    table = study_table(rows, planned)
    if all(r['split'] == 'test' for r in rows):
        split_note = "SER/CER/seq-acc: the test split, from each run's final_eval.json."
    else:
        split_note = 'SER/CER/seq-acc: **no final_eval.json in some runs: their best logged val values shown**.'
    if {'vit_small', 'deit_small'} <= {r['backbone'] for r in rows if r['init'] == 'scratch'}:
        split_note += (' vit_small and deit_small are one architecture that differs only in pretrained '
                       'weights: trained from scratch, their gap is run-to-run noise.')
    devices = sorted({str(r['device']) for r in rows})
    if 'cpu' in devices:
        split_note += ' Peak memory on CPU is train.py\'s peak resident set size, not GPU memory.'
    md = [f"# Backbone study", '', f"Runs: `{args.runs}` (report: `python -m bench.study report --runs='{args.runs}'`)  ",
          f"Device (from the runs' final_eval.json): {', '.join(devices)}", '',
          split_note + ' All other columns are final_eval.json\'s too (samples/s: mean over the evals of '
          'log.jsonl; MFU: the running estimate at the end; peak memory: max allocated, MiB; wall: training '
          'time; params: n_params, tied embedding counted once). Samples seen: iters x batch_size x '
          'gradient_accumulation_steps of the run\'s config.', '',
          table, '']
    if examples:
        md += [f"Example predictions: {os.path.basename(files['examples_png'])} (best run: {best['name']})", '']
    atomic_write(files['table'], '\n'.join(md))
    keep = [k for k in rows[0] if k not in ('log',)]
    report = dict(runs=args.runs, rows=[{k: r[k] for k in keep} for r in rows], files=files,
                  examples=[{k: v for k, v in e.items() if k != 'image'} for e in examples])
    atomic_write(files['json'], json.dumps(report, indent=1))
    print(table)
    print(json.dumps(dict(files=files)))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    sub = p.add_subparsers(dest='command', required=True)
    r = sub.add_parser('run', help='train every backbone with one recipe (other --key=value go to train.py)')
    r.add_argument('--backbones', default=','.join(STUDY_BACKBONES))
    r.add_argument('--max_samples', type=int, required=True, help='training samples per backbone')
    r.add_argument('--minutes_per_backbone', type=float, default=None, help="safety cap (train.py's max_time_minutes)")
    r.add_argument('--out_root', default='out-study')
    r.add_argument('--configs', default='', help='config files applied after config/<backbone>.py to every '
                   'run, comma-separated (e.g. config/lora_r8.py for a LoRA study)')
    r.add_argument('--report', action='store_true', help='run `report` on the results afterwards')
    for q in (r, sub.add_parser('report', help='gather finished runs into results/')):
        q.add_argument('--results_dir', default='results')
        q.add_argument('--examples', type=int, default=6, help='example predictions of the best run (0: none)')
        q.add_argument('--max_new_tokens', type=int, default=None, help='decoding cap for the examples')
        # not --device: on `run` that name belongs to train.py (passed through)
        q.add_argument('--examples_device', default='cpu', help='device for the example predictions')
    sub.choices['report'].add_argument('--runs', required=True, help="run dirs: 'out-study/*' or 'a,b'")
    args, extra = p.parse_known_args(argv)
    if args.command == 'run':
        cmd_run(args, extra)
    else:
        if extra:
            p.error(f"unrecognized arguments: {' '.join(extra)}")
        cmd_report(args)


if __name__ == '__main__':
    try:
        main()
    except (ValueError, FileNotFoundError, RuntimeError, KeyError, ImportError) as e:
        sys.exit(f"error: {e}")
