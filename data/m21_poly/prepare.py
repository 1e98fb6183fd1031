"""
data/m21_poly/prepare.py: build the polyphonic corpus (several voices, several staves) from the
MusicXML and Humdrum scores inside music21's corpus: Bach chorales, string quartets, madrigals,
Palestrina, trecento pieces. Dataset card: README.md beside this file.

Pipeline, one piece at a time (in worker processes, data/builder.py):

    MusicXML (kern: music21 -> MusicXML) --xml2abc--> ABC voices --voices.py--> 2-4 bar LABEL
    LABEL --abc2xml--> MusicXML --verovio--> SVG (the IMAGE) + MEI (what verovio understood)
    agree.check_agreement(MEI, label's MusicXML, label text): per staff and layer, or the excerpt is skipped

Kinds of excerpt (column `kind`):
    a  a chorale on a grand staff: S+A on the treble staff, T+B on the bass staff (two voices per staff)
    b  a chorale or a string quartet on 4 staves, one staff per part
    c  any other piece whose parts all fit (2-6 staves): madrigals, Palestrina, trecento, piano...

Usage:
    python data/m21_poly/prepare.py                                        # -> data/m21_poly/full
    python data/m21_poly/prepare.py --out_dir=data/m21_poly/quick --max_pieces_per_source=20
    python data/m21_poly/prepare.py --stats | --plot=results/m21_poly_examples.png | --label_check=500
"""
import argparse
import glob
import hashlib
import io
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
for _p in (ROOT, os.path.dirname(HERE), HERE):  # the repo (data.py), data/ (engrave.py, builder.py), voices.py
    if _p not in sys.path:
        sys.path.insert(0, _p)
import builder  # noqa: E402
from agree import check_agreement  # noqa: E402
from engrave import engrave, rasterize  # noqa: E402
from voices import label_of, label_to_musicxml, read_musicxml, split_voices, xml_to_abc  # noqa: E402
import report  # noqa: E402  (data/m21_poly/report.py)

# music21 corpus folders -> what they hold. Quartets are 'b' (4 staves); chorales 'a' or 'b'; the rest 'c'.
SOURCES = {'bach': 'chorale', 'beethoven': 'quartet', 'haydn': 'quartet', 'mozart': 'quartet', 'monteverdi': 'other',
           'palestrina': 'other', 'trecento': 'other', 'handel': 'other', 'joplin': 'other', 'schubert': 'other',
           'corelli': 'other', 'cpebach': 'other', 'luca': 'other', 'verdi': 'other', 'weber': 'other',
           'ciconia': 'other', 'lusitano': 'other', 'chopin': 'other', 'schumann_clara': 'other'}
EXTS = ('.mxl', '.xml', '.musicxml', '.krn')
FONTS = ['Leipzig', 'Bravura', 'Gootville', 'Leland', 'Petaluma']
SPLIT_PCT = (90, 5, 5)  # train / val / test, by piece
MAX_STAVES = 6
MAX_CHARS = 600  # a label longer than this loses its last bar (never below 2 bars): ~250 BPE tokens
COLUMNS = [('source', 'string'), ('tune_id', 'string'), ('font', 'string'), ('kind', 'string'), ('n_staves', 'int32'),
           ('n_voices', 'int32'), ('bars', 'string'), ('staff_map', 'string')]


def list_pieces(sources, max_per_source):
    """-> [(source, relpath)] in a deterministic order; at most max_per_source pieces of a folder (by hash)."""
    import music21
    root = os.path.dirname(music21.corpus.__file__)
    out = []
    for src in sources:
        paths = sorted(p for p in glob.glob(os.path.join(root, src, '**', '*'), recursive=True) if p.endswith(EXTS))
        rels = [os.path.relpath(p, root) for p in paths]
        if max_per_source and len(rels) > max_per_source:
            keep = set(sorted(rels, key=piece_hash)[:max_per_source])
            rels = [r for r in rels if r in keep]
        out += [(src, r) for r in rels]
    return out


def piece_hash(rel, salt=''):
    return int(hashlib.sha1(f'{salt}{rel}'.encode()).hexdigest()[:12], 16)


def split_of(rel):
    """train/val/test from a hash of the piece's path: stable whatever else is selected."""
    h = piece_hash(rel) % 100
    return 'train' if h < SPLIT_PCT[0] else 'val' if h < SPLIT_PCT[0] + SPLIT_PCT[1] else 'test'


def sample_layout(rng):
    """per-sample engraving style. Scale 55-85: a 4-staff system comes out ~400-700 px high."""
    return dict(font=FONTS[int(rng.integers(len(FONTS)))], scale=int(rng.integers(55, 86)),
                spacingLinear=round(float(rng.uniform(0.15, 0.3)), 3), spacingNonLinear=round(float(rng.uniform(0.5, 0.7)), 3))


def windows(n_bars, rng, max_excerpts, min_len=2, max_len=4):
    """consecutive non-overlapping windows of 2-4 bars (random lengths), up to max_excerpts of them."""
    out, i = [], 0
    while i + min_len <= n_bars:
        n = int(rng.integers(min_len, max_len + 1))
        out.append((i, min(i + n, n_bars)))
        i += n
    if len(out) > max_excerpts:
        out = [out[k] for k in sorted(rng.choice(len(out), size=max_excerpts, replace=False).tolist())]
    return out


def layout_of(piece, kind):
    """-> (staves of the piece's voices, clef per first voice, brace, staff_map) for an excerpt kind."""
    if kind == 'a':  # the four parts onto a grand staff
        v = [st[0] for st in piece['staves']]
        return [[v[0], v[1]], [v[2], v[3]]], {v[0]: 'treble', v[2]: 'bass'}, True, '1+2,3+4'
    return piece['staves'], piece['clefs'], None, ','.join(str(i + 1) for i in range(len(piece['staves'])))


def process_piece(job):
    """(source, relpath, seed, max_excerpts) -> (samples, skip_counts); expected failures are counted."""
    src, rel, seed, max_excerpts = job
    import music21
    skips, samples = {}, []

    def skip(reason):
        skips[reason] = skips.get(reason, 0) + 1
    rng = np.random.default_rng([seed, piece_hash(rel) & 0xFFFFFFFF])
    try:
        piece = split_voices(xml_to_abc(read_musicxml(os.path.join(os.path.dirname(music21.corpus.__file__), rel))))
    except Exception as e:  # xml2abc and music21 raise many types on odd files
        skip(f'piece: unreadable ({type(e).__name__})')
        return samples, skips
    staves = piece['staves']
    if not 2 <= len(staves) <= MAX_STAVES:
        skip(f'piece: {len(staves)} staves')
        return samples, skips
    if any(piece['clefs'].get(v) == 'perc' for st in staves for v in st):
        skip('piece: percussion or tablature')
        return samples, skips
    chorale = SOURCES[src] == 'chorale' and len(staves) == 4 and all(len(st) == 1 for st in staves)
    n_bars = max(len(b) for b in piece['voices'].values())
    for a, b in windows(n_bars, rng, max_excerpts):
        kind = ('a' if rng.random() < 0.5 else 'b') if chorale else \
            'b' if SOURCES[src] == 'quartet' and len(staves) == 4 else 'c'
        layout, margin = sample_layout(rng), int(rng.integers(6, 20))
        st, clefs, brace, staff_map = layout_of(piece, kind)
        try:
            # a second voice of a staff that only rests in this window is left out (it would draw stray rests)
            st = [[v for j, v in enumerate(s) if j == 0 or any(c in bar['music'] for bar in piece['voices'][v][a:b]
                                                             for c in 'ABCDEFGabcdefg')] for s in st]
            while True:
                label = label_of(piece, a, b, st, clefs, brace, force_clefs=kind == 'a')
                if len(label) <= MAX_CHARS or b - a <= 2:
                    break
                b -= 1
            if len(label) > MAX_CHARS:
                raise ValueError(f'label longer than {MAX_CHARS} characters at 2 bars')
            xml = label_to_musicxml(label)
            svg, mei = engrave(xml, layout['font'], layout)
            renum, i = [], 1
            for s in st:
                renum.append(list(range(i, i + len(s))))
                i += len(s)
            check_agreement(mei, xml, label, renum)
            img = rasterize(svg, margin)
        except ValueError as e:
            msg = str(e)
            skip('excerpt: ' + ('label/image mismatch' if msg.startswith('mismatch') else msg.split(':')[0][:60]))
            continue
        except Exception as e:  # abc2xml's or verovio's own failures on an odd label
            skip(f'excerpt: {type(e).__name__} in engraving')
            continue
        buf = io.BytesIO()
        img.save(buf, format='PNG')
        samples.append(dict(image=buf.getvalue(), transcription=label, source=src, tune_id=rel, font=layout['font'],
                            kind=kind, n_staves=len(st), n_voices=sum(len(s) for s in st), bars=f'{a}-{b}',
                            staff_map=staff_map))
    if not samples and not skips:
        skip('piece: fewer than 2 bars')
    return samples, skips


def run_pool(jobs, num_workers, on_result):
    builder.run_pool(lambda job: process_piece(job), jobs, num_workers, on_result, unit='piece')


def prepare(out_dir='data/m21_poly/full', sources=None, max_pieces_per_source=450, excerpts_per_piece=12, seed=1337,
            num_workers=None, vocab_size=4096, quiet=False, pieces=None):
    """build the corpus into out_dir; returns the meta dict. Resumable like data/m21/prepare.py.
    pieces: an explicit list of corpus paths ('bach/bwv66.6.mxl'), instead of sources (tests, small builds)."""
    sources = list(sources or SOURCES)
    bad = [s for s in sources if s not in SOURCES]
    if bad:
        raise ValueError(f'unknown source(s) {bad}; choose from {list(SOURCES)}')
    options = dict(sources=sources, max_pieces_per_source=max_pieces_per_source, excerpts_per_piece=excerpts_per_piece,
                   seed=seed, version=2)  # bump when the output changes: old partial shards are dropped
    if pieces:
        options = dict(options, pieces=list(pieces), sources=None, max_pieces_per_source=None)
        pieces = [(p.split('/')[0], p) for p in pieces]
        if any(s not in SOURCES for s, _ in pieces):
            raise ValueError(f'pieces must lie in one of {list(SOURCES)}')
    else:
        pieces = list_pieces(sources, max_pieces_per_source)
    if not pieces:
        raise ValueError('no pieces selected')
    return builder.build(out_dir, [(s, r, seed, excerpts_per_piece) for s, r in pieces], [split_of(r) for _, r in pieces],
                         options, run_pool, COLUMNS, vocab_size, num_workers, quiet, unit='pieces', shard_size=16)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--out_dir', default='data/m21_poly/full')
    ap.add_argument('--sources', default=','.join(SOURCES), help='comma-separated music21 corpus folders')
    ap.add_argument('--max_pieces_per_source', type=int, default=450, help='0 = every piece (Palestrina has 1,318)')
    ap.add_argument('--excerpts_per_piece', type=int, default=12)
    ap.add_argument('--seed', type=int, default=1337)
    ap.add_argument('--num_workers', type=int, default=None, help='default: all cores')
    ap.add_argument('--vocab_size', type=int, default=4096)
    ap.add_argument('--stats', action='store_true', help='print statistics of the corpus in out_dir and exit')
    ap.add_argument('--plot', default=None, help='save a PNG with one example of each kind and exit')
    ap.add_argument('--label_check', type=int, default=0, metavar='N',
                    help='compare N labels (abc2xml -> music21) with their source excerpts, print JSON and exit')
    a = ap.parse_args(argv)
    with builder.cli_errors(a.out_dir):
        if a.stats or a.plot or a.label_check:
            if not os.path.isdir(a.out_dir):
                raise FileNotFoundError(f'no prepared corpus in {a.out_dir}; run python data/m21_poly/prepare.py --out_dir={a.out_dir}')
            if a.stats:
                print(json.dumps(report.corpus_stats(a.out_dir), indent=1))
            if a.plot:
                report.plot_kinds(a.out_dir, a.plot)
                print(f'wrote {a.plot}')
            if a.label_check:
                print(json.dumps(report.label_check(a.out_dir, a.label_check), indent=1))
            return
        prepare(a.out_dir, [s for s in a.sources.split(',') if s], a.max_pieces_per_source, a.excerpts_per_piece,
                a.seed, a.num_workers, a.vocab_size)


if __name__ == '__main__':
    main()
