"""
bench/cpu_recipe_report.py: gather the CPU-recipe ablation (bench/cpu_recipe.sh) into
results/cpu_recipe.md and results/cpu_recipe/val_ser.png. Every number is read back from the runs'
own files (log.jsonl, final_eval.json, ckpt_*/config.json); nothing is typed in.

    python -m bench.cpu_recipe_report --runs='out-recipe/*' --out=results/cpu_recipe.md
"""
import argparse
import glob
import json
import os
import re
import sys

from training.checkpoint import read_meta

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_run(d):
    with open(os.path.join(d, 'log.jsonl')) as f:
        log = [json.loads(line) for line in f if line.strip()]
    with open(os.path.join(d, 'final_eval.json')) as f:
        final = json.load(f)
    ckpt = next(os.path.join(d, c) for c in ('ckpt_last', 'ckpt_best') if os.path.isdir(os.path.join(d, c)))
    meta = read_meta(ckpt)
    # the median samples/s of single steps, from the run's printed lines (run.sh writes them to <run>.log):
    # unlike the mean over eval windows it does not move when the run is paused or shares the cores for a while
    steps = []
    if os.path.isfile(d.rstrip('/') + '.log'):
        with open(d.rstrip('/') + '.log') as f:
            steps = sorted(float(m.group(1)) for m in re.finditer(r'^iter \d+: .*?([\d.]+) samples/s', f.read(), re.M))
    median = steps[len(steps) // 2] if steps else None
    return dict(name=os.path.basename(d.rstrip('/')), log=log, final=final, cfg=meta['train_config'], median_sps=median)


def pct(x):
    return '–' if x is None else f'{100 * x:.1f}%'


def main():
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument('--runs', default='out-recipe/*')
    ap.add_argument('--out', default='results/cpu_recipe.md')
    ap.add_argument('--title', default='CPU recipe ablation')
    ap.add_argument('--notes', default=None, help='a markdown file appended below the table')
    ap.add_argument('--base', default='b_reader_recipe', help='the run the others are compared with (listed first)')
    a = ap.parse_args()
    runs = [read_run(d) for d in sorted(glob.glob(a.runs)) if os.path.isfile(os.path.join(d, 'final_eval.json'))]
    if not runs:
        sys.exit(f'error: no finished runs (with final_eval.json) match {a.runs}')
    runs.sort(key=lambda r: r['name'] != a.base)  # the base run first, the others in name order
    keys = ('backbone', 'img_height', 'max_width', 'collapse_height', 'ctc_weight', 'tokenizer_vocab',
            'tokenizer_type', 'label_smoothing', 'batch_size', 'learning_rate', 'decay_lr', 'n_layer', 'd_model',
            'augment', 'channels_last', 'cpu_threads')
    base = runs[0]['cfg']
    lines = [f'# {a.title}', '',
             f'Runs: `{a.runs}`, gathered by `python -m bench.cpu_recipe_report --runs=\'{a.runs}\'`. '
             f'Data: `{base["data_dir"]}`. Test SER/CER/exact: the first `eval_test_samples` test images, ckpt_best, greedy; '
             'CTC columns: best-path decoding of the same checkpoint. samples/s: training only, the median of single '
             'steps (printed lines), and the mean over eval windows (pauses and shared cores included).',
             '',
             '| run | what differs from the first row | params | samples/s (median step) | samples/s (mean) | samples seen | train min | '
             'val SER (attn) | test SER (attn) | test CER | exact | test SER (CTC) | exact (CTC) |',
             '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
    for r in runs:
        f, log, cfg = r['final'], r['log'], r['cfg']
        diff = ', '.join(f'{k}={cfg.get(k)}' for k in keys if cfg.get(k) != base.get(k)) or '(base)'
        ctc = f.get('ctc') or {}
        seen = log[-1].get('samples_seen') or log[-1]['iter'] * cfg['batch_size'] * cfg['gradient_accumulation_steps']
        lines.append(f"| {r['name']} | {diff} | {f['n_params'] / 1e6:.2f}M | {r['median_sps'] or 0:.1f} | {f['samples_per_sec'] or 0:.1f} | "
                     f"{seen:,} | {f['train_time_s'] / 60:.1f} | {pct(log[-1].get('val_ser'))} | {pct(f['ser'])} | "
                     f"{pct(f['cer'])} | {pct(f['seq_acc'])} | {pct(ctc.get('ser'))} | {pct(ctc.get('seq_acc'))} |")
    base_cfg = ', '.join(f'{k}={base.get(k)}' for k in keys)
    lines += ['', f'First row\'s settings: {base_cfg}.', '']
    if a.notes and os.path.isfile(a.notes):
        lines += [open(a.notes).read().rstrip(), '']

    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(9, 5))
    for r in runs:
        # from the first eval after step 0 on: an untrained model's SER (hundreds of %) says nothing
        pts = [(e.get('samples_seen') or e['iter'] * r['cfg']['batch_size'], e) for e in r['log'] if e['iter'] > 0]
        line, = ax.plot([s for s, e in pts if e.get('val_ser') is not None],
                        [100 * e['val_ser'] for s, e in pts if e.get('val_ser') is not None], marker='o', ms=3,
                        label=f"{r['name']} (attention)")
        ctc = [(s, 100 * e['val_ser_ctc']) for s, e in pts if e.get('val_ser_ctc') is not None]
        if ctc:
            ax.plot(*zip(*ctc), ls='--', color=line.get_color(), label=f"{r['name']} (CTC)")
    ax.set_yscale('log')
    ax.set_xlabel('training samples seen')
    ax.set_ylabel('val SER (%), greedy')
    ax.set_title(a.title)
    ax.grid(alpha=0.3, which='both')
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    png = os.path.splitext(a.out)[0] + '_val_ser.png'
    fig.savefig(png + '.tmp.png', dpi=110)
    os.replace(png + '.tmp.png', png)
    lines.insert(2, f'![val SER against samples seen]({os.path.basename(png)})\n')
    tmp = a.out + '.tmp'
    with open(tmp, 'w') as fh:
        fh.write('\n'.join(lines) + '\n')
    os.replace(tmp, a.out)
    print(f'wrote {a.out} and {png} ({len(runs)} runs)')


if __name__ == '__main__':
    main()
