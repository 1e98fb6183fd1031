"""
data/m21/source_examples.py: a picture of the new sources in a prepared m21 corpus: one train image each of
a folk tune, a score part in a C clef, a bass part, a transposed tune in a key of 5+ accidentals, a
synthetic line with chords and ledger lines, and a line without meter, with their labels.

    python data/m21/source_examples.py data/m21/mix results/sources/examples.png
"""
import sys

from features import label_features  # data/m21/features.py (this script's folder is on sys.path)

WANT = [('folk tune', lambda s, f: ':' not in s and s != 'synth'),
        ('score part, C clef', lambda s, f: s.startswith('part:') and (f['clef_alto'] or f['clef_tenor'])),
        ('score part, bass clef', lambda s, f: s.startswith('part:') and f['clef_bass']),
        ('transposed, 5+ accidentals', lambda s, f: s.startswith('transposed:') and f['key5'] and not f['no_meter']),
        ('synthetic: chords, 3 ledger lines', lambda s, f: s == 'synth' and f['chord'] and f['ledger3']),
        ('a later line of a page: no meter', lambda s, f: f['no_meter'])]


def main(data_dir, path):
    import datasets
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    ds = datasets.load_from_disk(data_dir)['train']
    feats = [label_features(t) for t in ds['transcription']]
    picks = []
    for name, ok in WANT:
        i = next((i for i, (s, f) in enumerate(zip(ds['source'], feats)) if ok(s, f)), None)
        if i is not None:
            picks.append((name, i))
    fig, axes = plt.subplots(len(picks), 1, figsize=(12, 2.4 * len(picks)))
    for ax, (name, i) in zip(axes, picks):
        r = ds[int(i)]
        ax.imshow(r['image'], cmap='gray', vmin=0, vmax=255)
        ax.set_title(f"{name} [{r['source']}, {r['font']}]\n" + r['transcription'].replace('\n', '  '), fontsize=8,
                     family='monospace', loc='left')
        ax.axis('off')
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    print(f'wrote {path}')


if __name__ == '__main__':
    if len(sys.argv) != 3:
        sys.exit('usage: python data/m21/source_examples.py <corpus dir> <out.png>')
    main(*sys.argv[1:])
