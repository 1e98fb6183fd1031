"""
data/m21/sources.py: the m21 corpus' sources beyond the folk tunes, as jobs for prepare.py's pool:

    part        single parts of music21's MusicXML and kern scores (parts.py)
    transposed  a folk tune or score again, every excerpt moved into a random key (any of the 15
                signatures) and octave, in the clef that fits its range (transpose.py)
    synth       label-first synthetic lines with ledger lines, chords, grace groups, ... (synth.py)

and, for any of them, page-like lines: with probability no_meter_share an excerpt is written as a later
line of a page, which shows clef and key but no meter: its label has no M: line, and the check proves
verovio drew no time signature. Every excerpt is written by canonical.write_excerpt, drawn by verovio from
that text and checked (canonical.check_agreement), as the folk tunes are; the `source` column says where
it came from ('part:bach', 'transposed:oneills1850', 'synth').

Splits: parts by piece (parts.split_of), a transposed tune in its tune's split (a tune is in one split in
all its keys, so no test melody is trained on in another key), synthetic lines by a hash of their id.
"""
import io

import numpy as np

from canonical import expected_events, mark_ties, parse_abc, score_to_measures, write_excerpt
from engrave import compare_events, engrave, mei_events, rasterize
import engravers
import excerpts
import parts as parts_mod
import synth as synth_mod
import transpose as tr

SYNTH_PER_JOB = 8       # synthetic lines per job (a job is the unit of work and of resuming)
MAX_PART_EXCERPTS = 8   # excerpts of one part at most, however long it is
# excerpts one job yields on average (measured on small builds), to size the synthetic share
EXPECTED_PER_TUNE, EXPECTED_PER_PIECE = 3.1, 14.0


def strip_meter(abc):
    """a label -> the same label as a later line of a page: the header without its M: line."""
    return '\n'.join(ln for ln in abc.split('\n') if not ln.startswith('M:'))


def check(mei, svg, ex, no_meter):
    """check_agreement, and for a line without meter: MEI and SVG hold no time signature."""
    want, ties = expected_events(ex)
    # two spellings canonical.expected_events gets wrong and the folk tunes never reach (music21's ABC
    # reader turns M:C into 4/4; their double sharps are rare): verovio's MEI writes common and cut time
    # with their count and unit, and a double sharp as 'x'
    head = want[0]
    meter = {('common', None, None): ('common', '4', '4'), ('cut', None, None): ('cut', '2', '2')}.get(head[2], head[2])
    want = [head[:2] + (None if no_meter else meter,)] + [
        [ev[:-1] + (tuple((s, o, 'x' if a == 'ss' else a) for s, o, a in ev[-1]),) if ev[0] == 'n' else ev for ev in m]
        for m in want[1:]]
    if no_meter:
        if 'class="meterSig' in svg:
            raise ValueError('mismatch: a meter drawn on a line without M:')
    compare_events(mei_events(mei), (want, ties))


def render_windows(measures, windows, rng, source, tune_id, no_meter_share=0.0, transform=None, engraving=None):
    """measures + windows (choose_excerpts) -> (samples, skips): each window written, engraved from its
    label, checked and rasterized, as prepare.process_tune does; transform(window measures, rng) -> the
    measures to write instead (a transposition), raising ValueError to skip the window.
    engraving (prepare's --engravers / --test_all_engravers): dict(shares={engraver: share}, all=bool).
    Each excerpt's engraver is drawn on a stream of its own, so the excerpts, their verovio layouts and
    every draw from rng are those of a verovio-only build; with all (test split only) every engraver
    draws the excerpt too, a paired test. A line without meter stays verovio's: the LilyPond and abcm2ps
    checks read the label through music21, which cannot read a label without M: yet."""
    samples, skips = [], {}
    shares, every = (engraving or {}).get('shares'), (engraving or {}).get('all', False)

    def skip(reason):
        skips[reason] = skips.get(reason, 0) + 1
    for k, (a, b) in enumerate(windows):
        layout, margin = excerpts.sample_layout(rng), int(rng.integers(6, 20))
        no_meter = bool(rng.random() < no_meter_share)
        tf_seed = int(rng.integers(2 ** 32))  # one transposition per window, whatever its final length
        eng_rng = np.random.default_rng([excerpts.tune_hash(tune_id, k, salt='engraver') & 0xFFFFFFFF, 2])
        main = engravers.pick(shares, eng_rng) if shares and not no_meter else 'verovio'
        want = ([main] + [e for e in engravers.ENGRAVERS if e != main]) if every and not no_meter else [main]

        def label(b):
            ex = [dict(m, events=[dict(e) for e in m['events']]) for m in measures[a:b]]
            if transform is not None:
                ex = transform(ex, np.random.default_rng(tf_seed))
            mark_ties(ex)
            abc = write_excerpt(ex)
            return (strip_meter(abc) if no_meter else abc), ex

        def draw(eng, b):  # -> (label, image, font, b): measures dropped from the end while wider than MAX_ASPECT : 1
            lay = layout if eng == 'verovio' else engravers.sample_layout(eng, eng_rng)
            while True:
                abc, ex = label(b)
                if eng == 'verovio':
                    svg, mei = engrave(abc, layout['font'], layout)
                    check(mei, svg, ex, no_meter)
                    img = rasterize(svg, margin)
                else:
                    img = engravers.engrave_image(abc, eng, lay, measures=ex)
                if img.width <= excerpts.MAX_ASPECT * img.height:
                    return abc, img, (layout['font'] if eng == 'verovio' else engravers.FONT_OF[eng]), b
                if b - a <= 2:
                    raise ValueError(f'wider than {excerpts.MAX_ASPECT}:1 even with 2 measures')
                b -= 1
        for eng in want:  # the second engravers draw the window the first one kept: one label, if they can
            try:
                abc, img, font, b = draw(eng, b)
            except ValueError as e:
                skip(('excerpt: ' if eng == main else f'excerpt by a second engraver ({eng}): ') +
                     ('label/image mismatch' if str(e).startswith('mismatch') else str(e)))
                continue
            buf = io.BytesIO()
            img.save(buf, format='PNG')
            row = dict(image=buf.getvalue(), transcription=abc, source=source, tune_id=tune_id, font=font, excerpt=k)
            if engraving:
                row['engraver'] = eng
            samples.append(row)
    return samples, skips


def transposer(ex, rng):
    """a window -> the same window in a random key and octave, in the clef that fits (ValueError if none)."""
    got = tr.random_transposition(ex, rng)
    if got is None:
        raise ValueError('no octave fits the staff')
    to, octaves, clef = got
    return tr.transpose_measures(ex, to, octaves, clef)


# -----------------------------------------------------------------------------
# the jobs (plain dicts; prepare.py's tune jobs are tuples)

def extra_jobs(tunes, seed, excerpts_per_tune, parts=0, part_sources=None, excerpts_per_part=2, transpose=0.0,
               synth_share=0.0, no_meter_share=0.0, engravers_shares=None, all_engravers=False):
    """the jobs of the new sources and their splits: `parts` score pieces (-1: all), transposed copies of a
    `transpose` share of the tunes and of those pieces (chosen by a seeded hash), and enough synthetic lines
    that they are about synth_share of all excerpts. engravers_shares / all_engravers: render_windows'
    engraving, all_engravers on the test split only. -> (jobs, splits)."""
    jobs, splits = [], []
    if transpose > 0:
        for t in tunes:
            if excerpts.tune_hash(t[1], t[2], salt=f'transpose{seed}') % 10000 < transpose * 10000:
                jobs.append(dict(kind='transposed', tune=t[:4], seed=seed, max_excerpts=excerpts_per_tune,
                                 no_meter_share=no_meter_share))
                splits.append(excerpts.split_of(t[1], t[2]))
    bad = [x for x in part_sources or [] if x not in parts_mod.PART_SOURCES]
    if bad:
        raise ValueError(f'unknown part source(s) {bad}; choose from {parts_mod.PART_SOURCES}')
    pieces = parts_mod.select_pieces(parts_mod.list_pieces(part_sources), parts, seed) if parts else []
    for src, rel in pieces:
        jobs.append(dict(kind='part', src=src, rel=rel, seed=seed, excerpts_per_part=excerpts_per_part,
                         no_meter_share=no_meter_share))
        splits.append(parts_mod.split_of(rel))
    for src, rel in pieces:  # score parts, transposed like the tunes (in their piece's split)
        if transpose > 0 and parts_mod.piece_hash(rel, f'transpose{seed}') % 10000 < transpose * 10000:
            jobs.append(dict(kind='part', src=src, rel=rel, seed=seed, excerpts_per_part=excerpts_per_part,
                             no_meter_share=no_meter_share, transpose=True))
            splits.append(parts_mod.split_of(rel))
    if synth_share > 0:
        if not 0 < synth_share < 1:
            raise ValueError('synth_share must lie in [0, 1)')
        n_parts = sum(1 for j in jobs if j['kind'] == 'part')
        real = EXPECTED_PER_TUNE * (len(tunes) + len(jobs) - n_parts) + EXPECTED_PER_PIECE * n_parts * excerpts_per_part / 2
        n_jobs = max(1, round(real * synth_share / (1 - synth_share) / SYNTH_PER_JOB))
        for i in range(n_jobs):
            jobs.append(dict(kind='synth', index=i, seed=seed, no_meter_share=no_meter_share))
            splits.append(synth_split(i))
    if engravers_shares or all_engravers:
        for job, split in zip(jobs, splits):
            job['engraving'] = dict(shares=engravers_shares, all=all_engravers and split == 'test')
    return jobs, splits


def synth_split(i):
    return excerpts.split_of('synth', i)


def process_job(job):
    """one job of extra_jobs -> (samples, skips), in a worker process."""
    return {'transposed': process_transposed, 'part': process_part, 'synth': process_synth}[job['kind']](job)


def process_transposed(job):
    src, rel, idx, text = job['tune']
    rng = np.random.default_rng([job['seed'], excerpts.tune_hash(rel, idx) & 0xFFFFFFFF, 7])  # not the tune's own stream
    try:
        measures = score_to_measures(parse_abc(text))
    except ValueError as e:
        return [], {f'tune: {e}': 1}
    except Exception as e:  # music21 raises many exception types on malformed ABC
        return [], {f'tune: malformed ABC ({type(e).__name__})': 1}
    windows = excerpts.choose_excerpts(measures, rng, job['max_excerpts'])
    return render_windows(measures, windows, rng, f'transposed:{src}', f'{rel}#{idx}', job['no_meter_share'], transposer,
                          job.get('engraving'))


def process_part(job):
    """every part of a score -> up to excerpts_per_part windows per 32 measures (at most MAX_PART_EXCERPTS)."""
    moved = job.get('transpose', False)
    rng = np.random.default_rng([job['seed'], parts_mod.piece_hash(job['rel']) & 0xFFFFFFFF] + [7] * moved)
    try:
        got = parts_mod.piece_parts(job['rel'], np.random.default_rng([job['seed'], parts_mod.piece_hash(job['rel']) & 0xFFFFFFFF, 1]))
    except Exception as e:  # music21's readers raise many types on odd files
        return [], {f'piece: unreadable ({type(e).__name__})': 1}
    samples, skips = [], {}
    for name, measures in got:
        if isinstance(measures, str):
            skips[f'part: {measures}'] = skips.get(f'part: {measures}', 0) + 1
            continue
        n = min(MAX_PART_EXCERPTS, job['excerpts_per_part'] * max(1, len(measures) // 32))
        # every window, then those mostly of notes (a part often rests for bars while the others sing)
        windows = [w for w in excerpts.choose_excerpts(measures, rng, 10 ** 9) if mostly_notes(measures[w[0]:w[1]])]
        if len(windows) > n:
            windows = [windows[i] for i in sorted(rng.choice(len(windows), size=n, replace=False).tolist())]
        if not windows:
            skips['part: no supported 2-8 measure excerpt'] = skips.get('part: no supported 2-8 measure excerpt', 0) + 1
        s, k = render_windows(measures, windows, rng, f"{'transposed' if moved else 'part'}:{job['src']}",
                              f"{job['rel']}#{name}", job['no_meter_share'], transposer if moved else None,
                              job.get('engraving'))
        samples += s
        for r, c in k.items():
            skips[r] = skips.get(r, 0) + c
    return samples, skips


def mostly_notes(measures, min_notes=4):
    """at least min_notes notes, and more notes than rests (grace notes aside)."""
    evs = [e for m in measures for e in m['events'] if not e['grace']]
    notes = sum(1 for e in evs if not e['rest'])
    return notes >= min_notes and notes > len(evs) - notes


def process_synth(job):
    rng = np.random.default_rng([job['seed'], excerpts.tune_hash('synth', job['index']) & 0xFFFFFFFF])
    samples, skips = [], {}
    for j in range(SYNTH_PER_JOB):
        measures, _ = synth_mod.synth_line(rng)
        s, k = render_windows(measures, [(0, len(measures))], rng, 'synth', f"synth#{job['index']}.{j}",
                              job['no_meter_share'], engraving=job.get('engraving'))
        samples += s
        for r, c in k.items():
            skips[r] = skips.get(r, 0) + c
    return samples, skips


def label_to_measures(label, meter='4/4'):
    """a canonical label -> canonical.py measures, read back by music21 (tests: what a label says). music21's
    ABC reader ignores 'clef=' in K: and needs a meter: the clef is set from the K: line, and a label without
    M: is read in `meter`."""
    head = label.split('\n')
    if not any(ln.startswith('M:') for ln in head):
        label = f'M:{meter}\n' + label
    clef = next((w.split('=')[1] for ln in head if ln.startswith('K:') for w in ln.split()[1:] if w.startswith('clef=')),
                'treble')
    measures = score_to_measures(parse_abc('X:1\n' + label + '\n'))
    for m in measures:
        m['ctx'] = (clef,) + m['ctx'][1:]
    return measures

