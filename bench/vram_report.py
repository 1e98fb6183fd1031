"""
bench/vram_report.py: the report half of bench_vram.py. From its measurement record (and the SER of
finished training runs) it writes the tables, the memory-breakdown and Pareto plots and a
recommendation per memory tier into results/bench_vram_{cpu,cuda}.{md,json,png}.
"""

import json
import math
import os

from core.files import atomic_path, atomic_write

GIB = 1024 ** 3
MIB = 1024 ** 2
TIERS_GB = (16, 24, 48)  # consumer / prosumer / datacenter cards; treated as GiB, as vendors sell them


# -----------------------------------------------------------------------------
# SER of real runs, Pareto frontiers, recommendations

def pareto_front(points, maximize_x=False):
    """Indices of the non-dominated points (x, ser): lower SER, and lower x (or higher x)."""
    order = sorted(range(len(points)), key=lambda i: (-points[i][0] if maximize_x else points[i][0],
                                                      points[i][1]))
    front, best = [], math.inf
    for i in order:
        if points[i][1] < best:
            front.append(i)
            best = points[i][1]
    return front


def recommend(rows, runs):
    """Per tier: among configurations whose largest batch was MEASURED to fit, the lowest SER of a
    matching run (same backbone and mode); ties and SER-less candidates ranked by samples/s."""
    ser = {}
    for r in runs:
        if r.get('ser') is not None:
            k = (r['backbone'], r['mode'])
            ser[k] = min(ser.get(k, math.inf), r['ser'])
    recs = {}
    for tier in {t for row in rows for t in row['fit']}:
        cands = [row for row in rows if (row['fit'][tier].get('measured') or 0) >= 1]
        if not cands:
            recs[tier] = dict(note='no GPU measurement of a fitting batch for this tier: no recommendation')
            continue
        best = min(cands, key=lambda r: (ser.get((r['backbone'], r['mode']), math.inf), -r['samples_per_sec']))
        s = ser.get((best['backbone'], best['mode']))
        recs[tier] = dict(backbone=best['backbone'], mode=best['mode'], img_height=best['img_height'],
                          batch_size=best['fit'][tier]['measured'], samples_per_sec=best['samples_per_sec'],
                          expected_ser=s, ser_note=None if s is not None else
                          'no run of this configuration given (--runs): SER unknown, picked by samples/s')
    return dict(sorted(recs.items(), key=lambda kv: int(kv[0])))

# -----------------------------------------------------------------------------
# writers


def fmt_mib(b):
    return '-' if b is None else f'{b / MIB:,.1f}'


def markdown_table(rows, cuda):
    act = 'act+workspace MiB' if cuda else 'activations MiB (estimate)'
    head = ['backbone', 'mode', 'H x W', 'batch', 'trainable params', 'params+buffers MiB', 'grads MiB',
            'AdamW MiB', act, 'peak MiB', 'step ms', 'samples/s', 'tokens/s']
    tiers = sorted({t for r in rows for t in r['fit']}, key=int)
    head += [f'max batch {t} GB' for t in tiers]
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for r in rows:
        cells = [r['backbone'], r['mode'], f"{r['img_height']} x {r['img_width']}", str(r['batch_size']),
                 f"{r['trainable_params']:,}", fmt_mib(r['param_bytes'] + r['buffer_bytes']),
                 fmt_mib(r['grad_bytes']), fmt_mib(r['optimizer_bytes']), fmt_mib(r['activation_bytes']),
                 fmt_mib(r['peak_bytes']), f"{r['step_ms']:.1f}", f"{r['samples_per_sec']:.1f}",
                 f"{r['tokens_per_sec']:,.0f}"]
        for t in tiers:  # measured by trying where the search ran, else '~' + the linear-fit estimate
            f = r['fit'][t]
            if f.get('measured') is not None:
                cells.append(str(f['measured']))
            else:
                cells.append('-' if f.get('predicted') is None else f"~{f['predicted']}")
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def recommendation_table(recs):
    lines = ['| tier | backbone | mode | H | max batch (measured) | samples/s | expected SER |',
             '|---|---|---|---|---|---|---|']
    for tier, r in recs.items():
        if 'backbone' not in r:
            lines.append(f"| {tier} GB | {r['note']} | | | | | |")
            continue
        s = f"{100 * r['expected_ser']:.2f}%" if r['expected_ser'] is not None else 'unknown (no run given)'
        lines.append(f"| {tier} GB | {r['backbone']} | {r['mode']} | {r['img_height']} | {r['batch_size']} "
                     f"| {r['samples_per_sec']:.1f} | {s} |")
    return '\n'.join(lines)


def savefig(fig, path):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches='tight')


def plot_memory(rows, path, title, tiers=TIERS_GB):
    """Stacked bars: params / grads / AdamW / activations per configuration, tier lines on top."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    ref = {}
    for r in rows:  # one bar per (backbone, mode, height): the largest measured batch
        k = (r['backbone'], r['mode'], r['img_height'])
        if k not in ref or r['batch_size'] > ref[k]['batch_size']:
            ref[k] = r
    bars = list(ref.values())
    # a tiny CPU configuration takes megabytes: drawn in GiB next to 16 GB it would be invisible
    top = max(r['static_bytes'] + max(0, r['activation_bytes']) for r in bars)
    unit, uname = (GIB, 'GiB') if top > 0.5 * GIB else (MIB, 'MiB')
    parts = [('parameters + buffers', lambda r: r['param_bytes'] + r['buffer_bytes'], '#4c72b0'),
             ('gradients', lambda r: r['grad_bytes'], '#dd8452'),
             ('AdamW state', lambda r: r['optimizer_bytes'], '#55a868'),
             ('activations + workspace', lambda r: max(0, r['activation_bytes']), '#c44e52')]
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(bars) + 2), 5))
    x = range(len(bars))
    bottom = [0.0] * len(bars)
    for label, get, color in parts:
        h = [get(r) / unit for r in bars]
        ax.bar(x, h, bottom=bottom, label=label, color=color)
        bottom = [a + b for a, b in zip(bottom, h)]
    if unit == GIB:
        for t in tiers:
            ax.axhline(t, color='k', ls='--', lw=0.8)
            ax.text(len(bars) - 0.5, t, f' {t} GB', va='bottom', ha='right', fontsize=8)
    else:
        title += f"\n(MiB scale: the {'/'.join(map(str, tiers))} GB lines lie far above it)"

    ax.set_xticks(list(x))
    ax.set_xticklabels([f"{r['backbone']}\n{r['mode']} b{r['batch_size']}" for r in bars],
                       rotation=60, ha='right', fontsize=7)
    ax.set_ylabel(uname)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc='upper left')
    savefig(fig, path)
    plt.close(fig)


def plot_pareto(runs, path, title):
    """SER vs peak memory and SER vs samples/s of the given runs, frontier drawn as a step line."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, key, xlabel, maximize in ((axes[0], 'peak_mem_mb', 'peak memory (MiB, from the run log)', False),
                                      (axes[1], 'samples_per_sec', 'samples/s (from the run log)', True)):
        pts = [(r[key], 100 * r['ser'], r['name']) for r in runs
               if r.get(key) is not None and r.get('ser') is not None]
        for x, y, name in pts:
            ax.scatter(x, y, color='#4c72b0')
            ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords='offset points')
        if pts:
            front = [pts[i] for i in pareto_front([(p[0], p[1]) for p in pts], maximize_x=maximize)]
            ax.step([p[0] for p in front], [p[1] for p in front], where='post', color='#c44e52', marker='o',
                    mfc='none', ms=11, label='Pareto frontier')
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, f'no run logged {key}', transform=ax.transAxes, ha='center')
        ax.set_xlabel(xlabel)
        ax.set_ylabel('SER (%)')
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    savefig(fig, path)
    plt.close(fig)

def write_report(meas, runs, results_dir):
    """Tables, plots and the JSON of one measurement record (+ the runs' SER) into results_dir."""
    cuda, rows = meas['device'] == 'cuda', meas['rows']
    recs = recommend(rows, runs) if cuda else {str(t): dict(
        note='no GPU was present: nothing measured, no recommendation') for t in meas['tiers']}
    tag = 'cuda' if cuda else 'cpu'
    where = meas['gpu'] or 'CPU (no GPU present; tiny configuration)'
    table = markdown_table(rows, cuda)
    md = [f'# bench_vram: {where}', '', f"Command: `{meas['command']}`  ",
          f"dtype {meas['dtype']}, torch {meas['torch']}, synthetic batch (image H x W, {meas['seq_len']} target "
          f"tokens per sample), one optimizer step per point, median of {meas['iters']}.", '']
    if not cuda:
        md += ['**No GPU was present.** Activations are an estimate (tensors saved for backward); '
               'the max-batch columns are estimates from a linear fit, not measured.', '']
    md += [table, '', 'max batch N: the largest micro-batch that ran within the tier (--search, OOM caught); '
           '~N: an estimate from a linear fit of two measured points, not tried.', '',
           '## Recommendation per memory tier', '',
           'Among configurations measured to fit, the lowest SER of a matching run (--runs: ' +
           (', '.join(r['name'] for r in runs) or 'none given') + ').', '', recommendation_table(recs), '']
    os.makedirs(results_dir, exist_ok=True)
    files = dict(table=os.path.join(results_dir, f'bench_vram_{tag}.md'),
                 json=os.path.join(results_dir, f'bench_vram_{tag}.json'),
                 memory_png=os.path.join(results_dir, f'bench_vram_memory_{tag}.png'))
    plot_memory(rows, files['memory_png'], f'memory breakdown per training step: {where}'
                + ('' if cuda else ' (activations ESTIMATED)'), meas['tiers'])
    if runs:
        files['pareto_png'] = os.path.join(results_dir, f'bench_vram_pareto_{tag}.png')
        plot_pareto(runs, files['pareto_png'], 'SER vs memory and throughput of the given runs')
    atomic_write(files['table'], '\n'.join(md))
    report = dict(meas, runs=[{k: v for k, v in r.items() if k != 'log'} for r in runs],
                  recommendations=recs, files=files)
    atomic_write(files['json'], json.dumps(report, indent=1))
    print(table)
    print()
    print(recommendation_table(recs))
    print(json.dumps(report))
