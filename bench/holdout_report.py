"""
bench/holdout_report.py: the held-out-font runs side by side, as a markdown table. Every number is
read back from each run's final_eval.json (train.py with holdout_font=...); nothing is typed in.
The ratio's 95% interval (evaluation.holdout_scores: excerpts resampled 1,000 times) follows it.

    python -m bench.holdout_report out-hold-light out-hold-shape > results/holdout.md
"""
import json
import os
import sys


def pct(x):
    return f'{100 * x:.1f}%'


def rows(run):
    with open(os.path.join(run, 'final_eval.json')) as f:
        ev = json.load(f)
    with open(os.path.join(run, 'log.jsonl')) as f:
        samples = [json.loads(line) for line in f if line.strip()][-1]['samples_seen']
    h = ev['holdout']
    font = ev['holdout_font']
    for dec, pick, key in (('attention', lambda d: d, 'ratio'), ('CTC', lambda d: d['ctc'], 'ratio_ctc')):
        seen, unseen = pick(h['seen_fonts']), pick(h['holdout_font'])
        ratio = f"**{unseen['ser'] / seen['ser']:.2f}×**" if seen['ser'] > 0 else '–'
        if key in h:  # runs since the bootstrap: its 95% interval over resampled excerpts
            ratio += ' ({:.2f}–{:.2f})'.format(*h[key]['ci95'])
        yield (f"| {os.path.basename(run.rstrip('/'))} | {dec} | {ev['iters']} | {samples:,} | "
               f"{pct(seen['ser'])} (n={seen['n']}) | {pct(unseen['ser'])} (n={unseen['n']}, {font}) | "
               f"{ratio} | {pct(seen['seq_acc'])} | {pct(unseen['seq_acc'])} |")


if __name__ == '__main__':
    runs = sys.argv[1:]
    if not runs:
        sys.exit('usage: python -m bench.holdout_report RUN_DIR [RUN_DIR ...]')
    print('| run | decoding | steps | samples | SER, seen fonts | SER, unseen font | unseen / seen | exact, seen | exact, unseen |')
    print('|---|---|---:|---:|---:|---:|---:|---:|---:|')
    for run in runs:
        try:
            for line in rows(run):
                print(line)
        except (OSError, KeyError, ValueError) as e:
            sys.exit(f'report.py: {run}: no held-out-font final_eval.json ({type(e).__name__}: {e})')
