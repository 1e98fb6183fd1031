"""
bench/poly_report.py: results/poly.md and results/poly/curve.png from a finished polyphonic run
(out_dir/log.jsonl + final_eval.json) and the corpus checks in results/poly/ (stats.json,
label_check.json, the prepare log). Every number is read from those files.
    python -m bench.poly_report --out_dir=out-poly
"""
import argparse
import json
import os
import shutil
import sys

HERE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'results', 'poly')  # where the files go


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--out_dir', default='out-poly')
    ap.add_argument('--md', default=os.path.join(os.path.dirname(HERE), 'poly.md'))
    a = ap.parse_args()
    missing = [f for f in ('log.jsonl', 'final_eval.json') if not os.path.isfile(os.path.join(a.out_dir, f))]
    if missing:
        sys.exit(f"error: {a.out_dir} has no {' or '.join(missing)}: give a finished run of config/poly.py")
    rows = [json.loads(x) for x in open(os.path.join(a.out_dir, 'log.jsonl'))]
    final = json.load(open(os.path.join(a.out_dir, 'final_eval.json')))
    cfg = json.load(open(os.path.join(a.out_dir, 'ckpt_last', 'config.json')))['train_config'] if os.path.isfile(
        os.path.join(a.out_dir, 'ckpt_last', 'config.json')) else {}
    shutil.copy(os.path.join(a.out_dir, 'log.jsonl'), os.path.join(HERE, 'log.jsonl'))
    shutil.copy(os.path.join(a.out_dir, 'final_eval.json'), os.path.join(HERE, 'final_eval.json'))
    evals = [r for r in rows if r.get('val_ser') is not None]

    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.8))
    x = [r['samples_seen'] / 1000 for r in evals]
    ax[0].plot(x, [100 * r['val_ser'] for r in evals], 'o-')
    ax[0].set(xlabel='training images seen (thousands)', ylabel='val SER (%)', title='val SER (greedy, 48 images)')
    ax[0].set_ylim(0, min(160, max(100 * r['val_ser'] for r in evals) + 5))
    ax[1].plot(x, [r['val_loss'] for r in evals], 'o-', label='val')
    ax[1].plot(x[1:], [r['train_loss'] for r in evals[1:]], 's--', label='train')
    ax[1].set(xlabel='training images seen (thousands)', ylabel='cross-entropy', title='loss')
    ax[1].legend()
    fig.tight_layout()
    fig.savefig(os.path.join(HERE, 'curve.png'), dpi=90)

    pct = lambda v: '-' if v is None else f'{100 * v:.1f}%'
    L = ['# The polyphonic corpus and its first CPU run (issue 12)', '',
         'Written by `python -m bench.poly_report --out_dir=out-poly` from the run\'s log.jsonl and',
         'final_eval.json (copied here) and the corpus checks in results/poly/. Machine: the 2-core CPU, no GPU.', '']
    lc_path = os.path.join(HERE, 'label_check.json')
    if os.path.isfile(lc_path):
        lc = json.load(open(lc_path))
        L += ['## Label check', '',
              f"`python data/m21_poly/prepare.py --label_check=500`: {lc['equal']} of {lc['checked']} random "
              f"{lc['split']} labels, read by abc2xml and music21, equal music21's reading of the source score "
              f"note by note ({pct(lc['share_equal'])}; per staff: bar, offset, MIDI pitch, duration of every note "
              f"and chord note, grace notes excepted).", '',
              '| kind | checked | equal |', '| --- | ---: | ---: |']
        L += [f"| {k} | {v['checked']} | {v['equal']} |" for k, v in lc['by_kind'].items()]
        if lc['differences']:
            L += ['', 'First differences: ' + '; '.join(f"{d['tune_id']} bars {d['bars']}" for d in lc['differences'])]
        v1 = os.path.join(HERE, 'label_check_v1.json')
        if os.path.isfile(v1):
            o = json.load(open(v1))
            L += ['', f"The corpus's first build (label_check_v1.json): {o['equal']} of {o['checked']}; kind a "
                  f"{o['by_kind']['a']['equal']} of {o['by_kind']['a']['checked']}: a treble-8 tenor moved onto the "
                  "grand staff's bass staff kept its written pitch, an octave high. Fixed (voices.octave_down, "
                  "test_grand_staff_brings_a_treble8_tenor_down_an_octave) and rebuilt; the CPU run below trained on "
                  "the first build (its images were engraved from those labels, so image and label agreed)."]
        L += ['']
    L += ['## The CPU run', '',
          f"`python train.py config/poly.py`: {final.get('backbone')} at {final.get('img_height')} px, "
          f"{final['n_params'] / 1e6:.2f}M parameters, {final['iters']} iterations "
          f"({rows[-1]['samples_seen'] if rows else 0:,} images) in {final['train_time_s'] / 60:.1f} min, "
          f"{final['samples_per_sec']:.1f} samples/s mean; test decoding (greedy) {final['test_decode_s'] / 60:.1f} min.",
          '', '![curve](poly/curve.png)', '',
          '| iter | images | train loss | val loss | val SER | val CER |', '| ---: | ---: | ---: | ---: | ---: | ---: |']
    for r in evals:
        tl = '-' if r.get('train_loss') is None else f"{r['train_loss']:.3f}"
        L.append(f"| {r['iter']} | {r['samples_seen']:,} | {tl} | {r['val_loss']:.3f} | {pct(r['val_ser'])} | {pct(r['val_cer'])} |")
    L += ['', f"**Test** ({final['n_samples']} images, {final['weights']} @ iter {final['weights_iter']}): "
          f"SER {pct(final['ser'])}, CER {pct(final['cer'])}, exact {pct(final['seq_acc'])}.", '',
          '| kind | test images | SER | CER | exact |', '| --- | ---: | ---: | ---: | ---: |']
    for k, v in sorted((final.get('by_kind') or {}).items()):
        L.append(f"| {k} | {v.get('n', '-')} | {pct(v.get('ser'))} | {pct(v.get('cer'))} | {pct(v.get('seq_acc'))} |")
    L += ['', 'By font: ' + ', '.join(f"{f} {pct(v.get('ser'))}" for f, v in sorted((final.get('by_font') or {}).items())), '']
    if cfg:
        L += [f"Config: {', '.join(f'{k}={cfg[k]}' for k in ('batch_size', 'learning_rate', 'max_iters', 'n_layer', 'd_model', 'tokenizer_vocab', 'max_seq_len') if k in cfg)}.", '']
    demo = os.path.join(HERE, 'bwv253_page.abc')
    if os.path.isfile(demo):  # sample.py on a whole page: bench/pages.py engrave_page(bench/systems.py musicxml_of('bach/bwv253'), 'Bravura'), a test-split chorale
        L += ['## A whole page', '', '`python sample.py --out_dir=out-poly --image=bwv253_page.png --page=systems '
              '--save_dir=preds` on an A4 page of bwv253 (test split) engraved by verovio with its lyrics and part '
              'names: systems.py finds its 3 systems of 4 staves (boxes: poly/bwv253_page_systems.png); the model '
              'writes the multi-voice ABC below (a system whose voices differ from the first is left out, with a warning).',
              '', '```', open(demo).read().strip(), '```', '']
    with open(a.md, 'w') as f:
        f.write('\n'.join(L))
    print(f'wrote {a.md} and {HERE}/curve.png')


if __name__ == '__main__':
    main()
