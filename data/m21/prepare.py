"""
data/m21/prepare.py: build the embedded default OMR corpus from the real tunes inside music21's corpus.

Pipeline, one tune at a time (in worker processes):

    source ABC tune --music21--> measures of events --our writer--> canonical ABC excerpt (the LABEL)
    canonical ABC --verovio--> SVG (the IMAGE) + MEI (what verovio understood)
    check_agreement(MEI, events): every note/rest/bar verovio drew must equal what the label says

The image is engraved FROM the label text, so anything the label leaves out (titles, lyrics, chord
symbols, slurs, decorations, volta brackets) is also absent from the image: label and image cannot
disagree, and check_agreement proves verovio read the label the way we meant it.

Usage:
    python data/m21/prepare.py                                          # full corpus -> data/m21/full
    python data/m21/prepare.py --out_dir=data/m21/quick --max_tunes=1000 # quick-start corpus
music21 is needed here only; training reads the saved DatasetDict.

The label side (music21 -> measures -> canonical ABC, and what the label says in MEI terms) is in
canonical.py beside this file; the engraving side (verovio, its MEI read back, rasterizing) is in
data/engrave.py, for any corpus builder. Full tunes or pages later: only choose_excerpts is
excerpt-specific. write_excerpt and check_agreement take any run of measures, and engrave would
switch verovio from breaks=none to its automatic breaks.
"""
import argparse
import glob
import io
import json
import os
import re
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
for _p in (ROOT, os.path.dirname(HERE), HERE):  # the repo (data.py, checkpoint.py), data/ (engrave.py), canonical.py
    if _p not in sys.path:
        sys.path.insert(0, _p)
from canonical import check_agreement, mark_ties, parse_abc, score_to_measures, write_excerpt  # noqa: E402
import features  # noqa: E402  (notational features per split and per source)
from excerpts import FONTS, MAX_ASPECT, SPLIT_PCT, choose_excerpts, sample_layout, split_of, tune_hash  # noqa: E402
from engrave import TEXT_DONORS, engrave, mix_glyphs, rasterize  # noqa: E402
import builder  # noqa: E402  (data/builder.py)
import engravers  # noqa: E402  (data/engravers.py: verovio, LilyPond, abcm2ps behind one interface)
import sources as more_sources  # noqa: E402  (data/m21/sources.py; `sources` names prepare's folk folders)
from data import Tokenizer, load_split  # noqa: E402

# the ABC collections shipped with music21 (single-voice tunes). josquin (multi-voice) is left out.
ABC_SOURCES = ['oneills1850', 'ryansMammoth', 'airdsAirs', 'essenFolksong', 'miscFolk', 'nottingham-dataset']
SHARD_SIZE = 32         # tunes per resumable shard

# -----------------------------------------------------------------------------
# enumerate tunes (cheap text split on X: lines; music21 parses one tune at a time in the workers)

def list_tunes(sources, no_essen=False):
    """-> list of (source, relpath, index, abc_text); deterministic order."""
    import music21
    root = os.path.dirname(music21.corpus.__file__)
    tunes = []
    for src in sources:
        if no_essen and src == 'essenFolksong':
            continue
        for path in sorted(glob.glob(os.path.join(root, src, '*.abc'))):
            with open(path, encoding='latin-1') as f:  # several files are not valid utf-8
                text = f.read()
            rel = os.path.relpath(path, root)
            parts = [p for p in re.split(r'(?m)^(?=X:)', text) if p.startswith('X:')]
            for i, p in enumerate(parts):
                tunes.append((src, rel, i, p))
    return tunes

# -----------------------------------------------------------------------------
# one tune -> excerpts (runs inside a worker process)

def process_tune(job):
    """(source, relpath, index, abc_text, seed, max_excerpts[, fonts]) -> (samples, skip_counts).
    fonts (the held-out-font study, see prepare) = dict(test_all_fonts, glyph_mix, glyph_jitter, glyph_text,
    holdout_font).
    Expected failures are counted reasons; only a hard crash of the process escapes (handled by the pool)."""
    src, rel, idx, text, seed, max_excerpts = job[:6]
    fonts = job[6] if len(job) > 6 else {}
    skips, samples = {}, []
    def skip(reason):
        skips[reason] = skips.get(reason, 0) + 1
    rng = np.random.default_rng([seed, tune_hash(rel, idx) & 0xFFFFFFFF])
    # the glyph changes draw from a stream of their own: the excerpts, fonts and layouts stay the ones
    # the same corpus without them has, so a study compares like with like
    mix_rng = np.random.default_rng([seed, tune_hash(rel, idx) & 0xFFFFFFFF, 1])
    split = split_of(rel, idx)
    held, p_mix, jitter = fonts.get('holdout_font'), fonts.get('glyph_mix', 0), fonts.get('glyph_jitter', 0)
    donors = [f for f in FONTS if f != held]
    text_donors = TEXT_DONORS if fonts.get('glyph_text') else ()
    mixing = split == 'train' and (p_mix > 0 or jitter > 0)
    try:
        score = parse_abc(text)
    except Exception as e:  # music21 raises many exception types on malformed ABC
        skip(f'tune: malformed ABC ({type(e).__name__})')
        return samples, skips
    try:
        measures = score_to_measures(score)
    except ValueError as e:  # our own one-line reasons: multi-voice, no measures
        skip(f'tune: {e}')
        return samples, skips
    windows = choose_excerpts(measures, rng, max_excerpts)
    if not windows:
        skip('tune: no supported 2-8 measure excerpt')
    shares, drawn, others = fonts.get('engravers'), [], []  # --engravers / --test_all_engravers (see prepare)
    for k, (a, b) in enumerate(windows):
        layout, margin = sample_layout(rng), int(rng.integers(6, 20))
        if shares:  # the engraver, on a stream of its own per excerpt: the excerpts stay the default's
            eng_rng = np.random.default_rng([seed, tune_hash(rel, idx) & 0xFFFFFFFF, 2, k])
            eng = engravers.pick(shares, eng_rng)
            if eng != 'verovio':
                others.append((k, a, b, eng, engravers.sample_layout(eng, eng_rng)))
                continue
        try:
            while True:  # drop measures from the end while the strip is longer than MAX_ASPECT : 1
                ex = [dict(m, events=[dict(e) for e in m['events']]) for m in measures[a:b]]
                mark_ties(ex)
                abc = write_excerpt(ex)
                svg, mei = engrave(abc, layout['font'], layout)
                check_agreement(mei, ex)
                img = rasterize(svg, margin)
                if img.width <= MAX_ASPECT * img.height:
                    break
                if b - a <= 2:
                    raise ValueError(f'wider than {MAX_ASPECT}:1 even with 2 measures')
                b -= 1
        except ValueError as e:
            skip('excerpt: ' + ('label/image mismatch' if str(e).startswith('mismatch') else str(e)))
            continue
        # rasterized again, mixed: the measures kept are the ones the plain image's width allowed
        if mixing and layout['font'] != held:
            img = rasterize(mix_glyphs(svg, mix_rng, donors, p_mix, jitter, text_donors), margin)
        renders = [(layout['font'], img)]
        if split == 'test' and fonts.get('test_all_fonts'):  # the same excerpt and layout in every other font
            for f in FONTS:
                if f != layout['font']:
                    try:
                        svg_f, mei_f = engrave(abc, f, layout)
                        check_agreement(mei_f, ex)
                        img_f = rasterize(svg_f, margin)
                    except ValueError as e:
                        skip(f'excerpt in a second font: {e}')
                        continue
                    renders.append((f, img_f))
        for f, im in renders:
            buf = io.BytesIO()
            im.save(buf, format='PNG')
            samples.append(dict(image=buf.getvalue(), transcription=abc, source=src,
                                tune_id=f'{rel}#{idx}', font=f, excerpt=k))
            if 'engravers' in fonts or 'test_all_engravers' in fonts:
                samples[-1]['engraver'] = 'verovio'
        drawn.append((k, a, b, 'verovio'))
    if others or (split == 'test' and fonts.get('test_all_engravers')):
        samples = sorted(samples + other_engravers(measures, others, drawn, split == 'test' and fonts.get('test_all_engravers'),
                                                   [seed, tune_hash(rel, idx) & 0xFFFFFFFF], skip,
                                                   dict(source=src, tune_id=f'{rel}#{idx}')), key=lambda r: r['excerpt'])
    return samples, skips

def other_engravers(measures, others, drawn, pair, seed, skip, row):
    """the excerpts --engravers gave to LilyPond or abcm2ps, drawn in one batch per engraver (LilyPond
    starts slowly), each cut from the end while wider than MAX_ASPECT:1 as verovio's are; with pair
    (--test_all_engravers, test split), every excerpt drawn also by each engraver it was not given to,
    same label. others: [(k, a, b, engraver, layout)]; drawn: [(k, a, b, engraver)] verovio drew.
    -> sample dicts; failures go to skip(reason)."""
    def label_of(a, b):
        ex = [dict(m, events=[dict(e) for e in m['events']]) for m in measures[a:b]]
        mark_ties(ex)
        return write_excerpt(ex), ex
    def sample(k, label, img, eng, layout):
        buf = io.BytesIO()
        img.save(buf, format='PNG')
        return dict(row, image=buf.getvalue(), transcription=label, excerpt=k, engraver=eng,
                    font=engravers.FONT_OF.get(eng) or layout['font'])
    out, drawn = [], list(drawn)
    for eng in engravers.ENGRAVERS:
        mine = [o for o in others if o[3] == eng]
        got = engravers.draw_windows(label_of, [(a, b) for _, a, b, _, _ in mine], eng, [o[4] for o in mine], MAX_ASPECT)
        for (k, a, _, _, lay), r in zip(mine, got):
            if isinstance(r, ValueError):
                skip('excerpt: ' + ('label/image mismatch' if str(r).startswith('mismatch') else str(r)) + f' ({eng})')
            else:
                out.append(sample(k, r[1], r[2], eng, lay))
                drawn.append((k, a, r[0], eng))
    for eng in engravers.ENGRAVERS if pair else ():  # the paired test: the same label by every engraver
        mine = [(k, a, b) for k, a, b, e in drawn if e != eng]
        lays = [engravers.sample_layout(eng, np.random.default_rng(seed + [3, k])) for k, _, _ in mine]
        got = engravers.draw_windows(label_of, [(a, b) for _, a, b in mine], eng, lays)
        for (k, _, _), lay, r in zip(mine, lays, got):
            if isinstance(r, ValueError):
                skip(f'excerpt by a second engraver: {r} ({eng})')
            else:
                out.append(sample(k, r[1], r[2], eng, lay))
    return out

# -----------------------------------------------------------------------------
# the shared builder (data/builder.py): crash-proof workers, resumable shards, atomic writes

def run_pool(jobs, num_workers, on_result):
    """process_tune on every job in crash-proof workers (data/builder.py); calls on_result(i, samples, skips).
    process_tune is looked up at call time, so a test can replace it."""
    # the other sources' jobs are dicts (sources.py); a folk tune's is a tuple
    builder.run_pool(lambda job: more_sources.process_job(job) if isinstance(job, dict) else process_tune(job),
                     jobs, num_workers, on_result, unit='tune')

# -----------------------------------------------------------------------------
# the driver: select tunes, run shards (resumable), write the DatasetDict + tokenizer + meta atomically

def select_tunes(tunes, max_tunes, seed):
    """all tunes, or max_tunes of them chosen by a seeded hash, stratified so that small corpora still
    get val and test tunes (each split keeps its share, at least one tune)."""
    if not max_tunes or max_tunes >= len(tunes):
        return tunes
    by_split = {'train': [], 'val': [], 'test': []}
    for t in sorted(tunes, key=lambda t: tune_hash(t[1], t[2], salt=f'select{seed}')):
        by_split[split_of(t[1], t[2])].append(t)
    n_val = max(1, round(max_tunes * SPLIT_PCT[1] / 100))
    n_test = max(1, round(max_tunes * SPLIT_PCT[2] / 100))
    chosen = by_split['val'][:n_val] + by_split['test'][:n_test] + by_split['train'][:max(0, max_tunes - n_val - n_test)]
    keep = {(t[1], t[2]) for t in chosen}
    return [t for t in tunes if (t[1], t[2]) in keep]  # back to corpus order

def prepare(out_dir='data/m21/full', max_tunes=None, excerpts_per_tune=4, seed=1337, no_essen=False,
            num_workers=None, vocab_size=4096, sources=None, quiet=False, test_all_fonts=False, glyph_mix=0.0,
            glyph_jitter=0.0, holdout_font=None, glyph_text=False, parts=0, part_sources=None, excerpts_per_part=2,
            transpose=0.0, synth_share=0.0, no_meter_share=0.0, engraver_shares=None, test_all_engravers=False):
    """build the corpus into out_dir (see module docstring); returns the meta dict. Resumable: finished
    shards are cached in <out_dir>.partial/ and reused when the same options are given again.

    The held-out-font study (train.py holdout_font=...) has four options of its own here:
    test_all_fonts engraves every test excerpt in all five fonts, so the unseen font is scored on the very
    excerpts the seen fonts are (a paired comparison, 5x the test images); glyph_mix and glyph_jitter
    change the glyphs of train images (engrave.mix_glyphs: a chimeric font, reshaped glyphs), with
    holdout_font never a donor, so no train image holds a glyph of the font the study leaves out;
    glyph_text lets time-signature digits and accidentals come from text fonts too (engrave.text_glyph).

    The sources beyond the folk tunes (sources.py; none by default): parts score pieces' single parts
    (-1: every piece of part_sources), excerpts_per_part per 32 measures of a part; transpose, the share of
    tunes drawn once more in random keys and octaves; synth_share, the share of synthetic lines among all
    excerpts; no_meter_share, the share of those sources' excerpts written as a later line of a page (no M:).
    Three engravers (data/engravers.py): engraver_shares ('verovio:0.6,lilypond:0.2,abcm2ps:0.2' or a dict)
    gives each excerpt to one engraver, drawn per excerpt; test_all_engravers draws every test excerpt
    with every engraver too (a paired test). Either adds an `engraver` column; the `font` of a LilyPond or
    abcm2ps image is the engraver's name, so train.py's holdout_font=lilypond leaves that engraver out.
    The new sources take the engraver options too (sources.render_windows), not the held-out-font ones."""
    if holdout_font is not None and holdout_font not in FONTS:
        raise ValueError(f'unknown holdout_font {holdout_font!r}; choose from {FONTS}')
    if glyph_text and not glyph_mix:
        raise ValueError('glyph_text changes the glyphs glyph_mix swaps: give --glyph_mix too')
    if (glyph_mix or glyph_jitter) and holdout_font is None:
        raise ValueError('glyph_mix/glyph_jitter are for the held-out-font study: name the font it leaves out (--holdout_font)')
    shares = engravers.parse_shares(engraver_shares) if isinstance(engraver_shares, str) else engraver_shares
    for e in set(shares or {}) | (set(engravers.ENGRAVERS) if test_all_engravers else set()):
        if not engravers.available(e):
            raise ValueError(f'engraver {e} is not installed (lilypond: pip install lilypond; abcm2ps: apt-get install abcm2ps)')
    sources = list(sources or ABC_SOURCES)
    bad = [s for s in sources if s not in ABC_SOURCES]
    if bad:
        raise ValueError(f'unknown source(s) {bad}; choose from {ABC_SOURCES}')
    tunes = select_tunes(list_tunes(sources, no_essen), max_tunes, seed)
    if not tunes:
        raise ValueError('no tunes selected')
    options = dict(max_tunes=max_tunes, excerpts_per_tune=excerpts_per_tune, seed=seed, no_essen=no_essen,
                   sources=sources, version=5)  # bump when the output changes: old partial shards are dropped
    fonts = {k: v for k, v in dict(test_all_fonts=test_all_fonts, glyph_mix=glyph_mix, glyph_jitter=glyph_jitter,
                                   glyph_text=glyph_text, holdout_font=holdout_font).items() if v}
    options.update(fonts)  # only when set: the default corpus's options (and cached shards) stay as they were
    columns = [('source', 'string'), ('tune_id', 'string'), ('font', 'string')]
    if shares or test_all_engravers:
        fonts.update({k: v for k, v in dict(engravers=shares, test_all_engravers=test_all_engravers).items() if v})
        options.update(fonts)
        columns.append(('engraver', 'string'))
    jobs, splits = [t[:4] + (seed, excerpts_per_tune, fonts) for t in tunes], [split_of(t[1], t[2]) for t in tunes]
    more = {k: v for k, v in dict(parts=parts, part_sources=part_sources if parts else None,
                                  excerpts_per_part=excerpts_per_part if parts else None, transpose=transpose,
                                  synth_share=synth_share, no_meter_share=no_meter_share).items() if v}
    if more:  # the new sources (sources.py): only when asked for, so the default corpus stays byte for byte
        if set(fonts) - {'engravers', 'test_all_engravers'}:
            raise ValueError('the held-out-font options do not mix with the new sources (parts, transpose, synth) yet')
        if not 0 <= no_meter_share <= 1 or not 0 <= transpose <= 1:
            raise ValueError('no_meter_share and transpose are shares: give a number from 0 to 1')
        if no_meter_share and not (parts or transpose or synth_share):
            raise ValueError('no_meter_share draws lines of the new sources: give --parts, --transpose or --synth_share too')
        extra, extra_splits = more_sources.extra_jobs(tunes, seed, excerpts_per_tune, parts, part_sources, excerpts_per_part,
                                                      transpose, synth_share, no_meter_share, shares, test_all_engravers)
        jobs, splits = jobs + extra, splits + extra_splits
        options.update(more, sources_version=1)
    return builder.build(out_dir, jobs, splits, options, run_pool, columns, vocab_size, num_workers, quiet, unit='tunes',
                         shard_size=SHARD_SIZE)

# -----------------------------------------------------------------------------
# reporting on a prepared corpus: statistics and a picture of examples

def corpus_stats(data_dir):
    """tunes, excerpts, tokens per excerpt, vocabulary coverage and image sizes of a prepared corpus."""
    import datasets
    load_split(data_dir, 'train')  # a broken file: one line naming it, not datasets' traceback
    dd = datasets.load_from_disk(data_dir)
    tok = Tokenizer(os.path.join(data_dir, 'tokenizer.model'))
    out, used = {}, {}
    for sp in dd:
        texts = dd[sp]['transcription']
        ids = [tok.encode(t) for t in texts]
        n = np.array([len(x) for x in ids]) if ids else np.zeros(1)
        byte_ids = sum(tok.sp.is_byte(i) for x in ids for i in x)  # characters unseen in train
        sizes = np.array([im.size for im in dd[sp].select(range(min(200, len(texts))))['image']]) if texts else np.zeros((1, 2))
        used[sp] = {i for x in ids for i in x}
        out[sp] = dict(tunes=len(set(dd[sp]['tune_id'])), excerpts=len(texts),
                       tokens_per_excerpt=dict(mean=round(float(n.mean()), 1), p50=int(np.median(n)), p95=int(np.percentile(n, 95)), max=int(n.max())),
                       chars_per_excerpt=round(float(np.mean([len(t) for t in texts] or [0])), 1),
                       byte_fallback_token_share=round(byte_ids / max(1, int(n.sum())), 5),
                       image_height=dict(mean=round(float(sizes[:, 1].mean()), 1), min=int(sizes[:, 1].min()), max=int(sizes[:, 1].max())),
                       image_width=dict(mean=round(float(sizes[:, 0].mean()), 1), min=int(sizes[:, 0].min()), max=int(sizes[:, 0].max())))
    out['vocab'] = dict(size=tok.vocab_size, pieces_used_in_train=len(used['train']),
                        share_used_in_train=round(len(used['train']) / tok.vocab_size, 3),
                        val_test_pieces_also_in_train=round(len((used['val'] | used['test']) & used['train']) /
                                                            max(1, len(used['val'] | used['test'])), 4))
    out['features'] = features.corpus_features(data_dir)
    return out

def plot_examples(data_dir, path, n=6, split='train'):
    """a column of n (image, label) pairs from a prepared corpus, saved as a PNG."""
    import datasets
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    ds = datasets.load_from_disk(data_dir)[split]
    order, fonts = np.random.default_rng(0).permutation(len(ds)).tolist(), ds['font']
    idx = [next(i for i in order if fonts[i] == f) for f in FONTS if f in fonts]  # one per font first
    idx = (idx + [i for i in order if i not in idx])[:n]
    fig, axes = plt.subplots(len(idx), 1, figsize=(12, 2.6 * len(idx)))
    for ax, i in zip(np.atleast_1d(axes), idx):
        r = ds[int(i)]
        ax.imshow(r['image'], cmap='gray', vmin=0, vmax=255)
        ax.set_title(r['transcription'].replace('\n', '  ') + f"\n[{r['font']}, {r['image'].size[0]}x{r['image'].size[1]} px, {r['tune_id']}]",
                     fontsize=8, family='monospace', loc='left')
        ax.axis('off')
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--out_dir', default='data/m21/full')
    ap.add_argument('--max_tunes', type=int, default=None, help='use only this many tunes (quick corpora)')
    ap.add_argument('--excerpts_per_tune', type=int, default=4)
    ap.add_argument('--seed', type=int, default=1337)
    ap.add_argument('--no_essen', action='store_true', help='leave out the Essen collection (non-commercial license)')
    ap.add_argument('--num_workers', type=int, default=None, help='default: all cores')
    ap.add_argument('--vocab_size', type=int, default=4096)
    ap.add_argument('--sources', default=','.join(ABC_SOURCES), help='comma-separated music21 corpus folders')
    ap.add_argument('--test_all_fonts', action='store_true', help='held-out-font study: every test excerpt in all five fonts')
    ap.add_argument('--glyph_mix', type=float, default=0.0, help='held-out-font study: P(a train glyph comes from another font)')
    ap.add_argument('--glyph_jitter', type=float, default=0.0, help='held-out-font study: 0-1, reshape and embolden train glyphs')
    ap.add_argument('--glyph_text', action='store_true', help='held-out-font study: glyph_mix also draws digits and accidentals from text fonts')
    ap.add_argument('--holdout_font', default=None, help='held-out-font study: the font glyph_mix never draws from')
    ap.add_argument('--parts', type=int, default=0, help='new source: single parts of this many score pieces (-1: all)')
    ap.add_argument('--part_sources', default=None, help='comma-separated score folders for --parts (default: sources.py)')
    ap.add_argument('--excerpts_per_part', type=int, default=2, help='excerpts of a part per 32 of its measures')
    ap.add_argument('--transpose', type=float, default=0.0, help='new source: share of tunes drawn again in random keys/octaves')
    ap.add_argument('--synth_share', type=float, default=0.0, help='new source: share of synthetic lines (e.g. 0.2)')
    ap.add_argument('--no_meter_share', type=float, default=0.0, help='share of new-source lines without M: (later lines of a page)')
    ap.add_argument('--engravers', default=None, help="share of excerpts per engraver, e.g. verovio:0.6,lilypond:0.2,abcm2ps:0.2")
    ap.add_argument('--test_all_engravers', action='store_true', help='every test excerpt drawn by every engraver too (a paired test)')
    ap.add_argument('--stats', action='store_true', help='print statistics of the corpus in out_dir and exit')
    ap.add_argument('--plot', default=None, help='save a PNG of examples from the corpus in out_dir and exit')
    a = ap.parse_args(argv)
    with builder.cli_errors(a.out_dir):
        if a.stats or a.plot:
            if not os.path.isdir(a.out_dir):
                raise FileNotFoundError(f'no prepared corpus in {a.out_dir}; run python data/m21/prepare.py --out_dir={a.out_dir}')
            if a.stats:
                print(json.dumps(corpus_stats(a.out_dir), indent=1))
            if a.plot:
                plot_examples(a.out_dir, a.plot)
                print(f'wrote {a.plot}')
            return
        prepare(a.out_dir, a.max_tunes, a.excerpts_per_tune, a.seed, a.no_essen, a.num_workers, a.vocab_size,
                [s for s in a.sources.split(',') if s], test_all_fonts=a.test_all_fonts, glyph_mix=a.glyph_mix,
                glyph_jitter=a.glyph_jitter, holdout_font=a.holdout_font, glyph_text=a.glyph_text, parts=a.parts,
                part_sources=[s for s in (a.part_sources or '').split(',') if s] or None,
                excerpts_per_part=a.excerpts_per_part, transpose=a.transpose, synth_share=a.synth_share,
                no_meter_share=a.no_meter_share, engraver_shares=a.engravers, test_all_engravers=a.test_all_engravers)

if __name__ == '__main__':
    main()
