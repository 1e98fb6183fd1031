"""
tests/test_prepare.py: the m21 corpus builder (data/m21/prepare.py) and the PDMX-Synth offline path.

Everything runs on real tunes from music21's corpus; the session fixture `tiny_corpus` (conftest.py)
is shared with the other test files, so most checks here cost nothing extra.
"""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location('m21_prepare', os.path.join(ROOT, 'data', 'm21', 'prepare.py'))
P = importlib.util.module_from_spec(spec)
spec.loader.exec_module(P)

LAYOUT = dict(font='Bravura', scale=100, spacingLinear=0.25, spacingNonLinear=0.6)


def _measures(abc_text):
    import music21
    return P.score_to_measures(music21.converter.parse(abc_text, format='abc'))


def _canonical(measures):
    ex = [dict(m, events=[dict(e) for e in m['events']]) for m in measures]
    P.mark_ties(ex)
    return P.write_excerpt(ex), ex


# ----------------------------------------------------------------------------- the canonical label

def test_canonical_label_exact():
    # L:1/4, E dorian (= 2 sharps), a dotted rhythm, a triplet, a grace note, a chord, a tie to an equal
    # pitch and a '-' between different pitches (O'Neill's slur notation, must be dropped), lyrics, chord
    # symbols and a title: all normalized to one way of writing
    src = ('X:7\nT:Some Title\nC:Someone\nM:6/8\nL:1/4\nK:Edor\n'
           '"Em"E/>F/ G/ (3A/B/c/ {g}d/ | [GB] A/- A/ ^c/- d/ | B3/2 A/ G/ F/ |: e3/2 z :|\nw: la la\n')
    abc, ex = _canonical(_measures(src))
    # ^c is in the key: no accidental; beams group by dotted-quarter beat in 6/8; the grace keeps its
    # written (quarter) value; the ties between different pitches are gone
    assert abc == ('M:6/8\nL:1/8\nK:D\n'
                   'E3/2F/G (3ABc {g2} d | [G2B2] A- Acd | B3 AGF |: e3 z2 :|')
    svg, mei = P.engrave(abc, LAYOUT['font'], LAYOUT)
    P.check_agreement(mei, ex)  # verovio read it the way we wrote it


def test_agreement_on_real_tunes_and_detects_a_wrong_label():
    """canonicalize -> engrave -> verovio's MEI of what it drew == the label's notes, on real tunes."""
    tunes = P.select_tunes(P.list_tunes(P.ABC_SOURCES), 25, seed=0)
    n_checked = 0
    for src, rel, idx, text in tunes:
        try:
            measures = _measures(text)
        except ValueError:
            continue
        rng = np.random.default_rng(0)
        for a, b in P.choose_excerpts(measures, rng, 2):
            abc, ex = _canonical(measures[a:b])
            svg, mei = P.engrave(abc, P.FONTS[n_checked % len(P.FONTS)], LAYOUT)
            P.check_agreement(mei, ex)
            n_checked += 1
    assert n_checked >= 30
    # the check can fail: engrave a label with one note moved up a step and compare with the true events
    wrong = abc.replace('|', '| c', 1) if '|' in abc else abc + ' c'
    svg, mei = P.engrave(wrong, 'Leipzig', LAYOUT)
    with pytest.raises(ValueError, match='mismatch'):
        P.check_agreement(mei, ex)


def test_malformed_abc_is_skipped_with_a_reason():
    job = lambda text: ('test', 'test/bad.abc', 0, text, 1337, 4)
    samples, skips = P.process_tune(job('X:1\nT:no notes at all\nM:4/4\nK:G\n'))
    assert samples == [] and skips == {'tune: no measures (music21 needs 2 plain bar lines)': 1}
    samples, skips = P.process_tune(job('X:1\nM:4/4\nK:G\nA B c | (((( [[ | }}{{ d |\n'))
    assert samples == [] and skips == {'tune: malformed ABC (ABCHandlerException)': 1}
    samples, skips = P.process_tune(job('X:1\nM:99/0\nL:1/8\nK:G\nABcd|ABcd|\n'))
    assert samples == [] and skips == {'tune: malformed ABC (ZeroDivisionError)': 1}
    samples, skips = P.process_tune(job('X:1\nM:4/4\nL:1/8\nK:G\nV:1\nGABc|d4|\nV:2\nDEFG|A4|\n'))
    assert samples == [] and skips == {'tune: multi-voice': 1}
    # a good tune still works through the same entry point
    samples, skips = P.process_tune(job('X:1\nM:4/4\nL:1/8\nK:G\nGABc dedB|A2 A2 G4|GABc dedB|A2 F2 G4|]\n'))
    assert len(samples) >= 1 and skips == {}
    assert samples[0]['transcription'].startswith('M:4/4\nL:1/8\nK:G\n')


def test_worker_crash_is_counted_and_the_run_goes_on(monkeypatch):
    # a job that kills its process (like a verovio SIGABRT) costs that job only
    def fake(job):
        if job == 'crash':
            import faulthandler
            faulthandler.disable()  # pytest's fault handler would dump a stack trace on stderr
            os.abort()
        return [job], {}
    monkeypatch.setattr(P, 'process_tune', fake)  # workers are forked after this, so they see it
    got = {}
    P.run_pool(['a', 'crash', 'b', 'c'], 2, lambda i, s, k: got.__setitem__(i, (s, k)))
    assert got[0] == (['a'], {}) and got[2] == (['b'], {}) and got[3] == (['c'], {})
    assert got[1][0] == [] and list(got[1][1]) == ['tune: worker crashed (exit code -6)']


# ----------------------------------------------------------------------------- end to end

def test_tiny_corpus_layout(tiny_corpus):
    import datasets
    dd = datasets.load_from_disk(tiny_corpus)
    meta = json.load(open(os.path.join(tiny_corpus, 'meta.json')))
    assert os.path.isfile(os.path.join(tiny_corpus, 'tokenizer.model'))
    assert sorted(dd) == ['test', 'train', 'val']
    for split in dd:
        assert dd[split].column_names == ['image', 'transcription', 'source', 'tune_id', 'font']
        assert len(dd[split]) == meta['excerpts'][split] > 0
    tunes = {s: set(dd[s]['tune_id']) for s in dd}
    assert not (tunes['train'] & tunes['val'] or tunes['train'] & tunes['test'] or tunes['val'] & tunes['test'])
    for s in dd:  # the split is the hash of (file, tune index), whatever was selected
        for t in tunes[s]:
            rel, idx = t.rsplit('#', 1)
            assert P.split_of(rel, int(idx)) == s
    assert sum(len(t) for t in tunes.values()) == sum(meta['tunes_with_excerpts'].values()) <= 20
    for row in dd['train'].select(range(5)):
        img, text = row['image'], row['transcription']
        a = np.asarray(img)
        assert img.mode == 'L' and 100 <= img.height <= 400 and img.width > img.height
        assert a[0].min() == 255 and a[-1].min() == 255 and a.min() < 50  # white margin, black ink
        assert text.startswith('M:') and '\nL:1/8\nK:' in text and text.count('\n') == 3
        assert not any(bad in text for bad in ('X:', 'T:', '"', 'w:', '!'))
        assert row['font'] in P.FONTS
        assert 2 <= text.split('\n')[3].count('|') <= 9


def test_same_seed_same_output_and_resume(tmp_path, monkeypatch):
    """an interrupted run resumed with a different worker count == one uninterrupted run (byte for byte)."""
    import datasets
    full = str(tmp_path / 'a')
    P.prepare(full, max_tunes=6, seed=3, num_workers=1, quiet=True, vocab_size=300)

    monkeypatch.setattr(P, 'SHARD_SIZE', 2)
    real_pool, calls = P.run_pool, []

    def interrupted_pool(jobs, n, on_result):
        calls.append(len(jobs))
        if len(calls) == 1:  # first run: stop after 3 tunes, i.e. after shard 0 (2 tunes) was saved
            def stop_after_3(i, s, k, seen=[]):
                on_result(i, s, k)
                seen.append(i)
                if len(seen) == 3:
                    raise KeyboardInterrupt
            return real_pool(jobs, 1, stop_after_3)
        return real_pool(jobs, n, on_result)
    monkeypatch.setattr(P, 'run_pool', interrupted_pool)
    resumed = str(tmp_path / 'b')
    with pytest.raises(KeyboardInterrupt):
        P.prepare(resumed, max_tunes=6, seed=3, num_workers=2, quiet=True, vocab_size=300)
    assert not os.path.exists(resumed) and os.path.isdir(resumed + '.partial')
    P.prepare(resumed, max_tunes=6, seed=3, num_workers=2, quiet=True, vocab_size=300)
    assert calls == [6, 4]  # the resumed run redid only the unfinished shards
    assert not os.path.exists(resumed + '.partial')
    A, B = datasets.load_from_disk(full), datasets.load_from_disk(resumed)
    for s in A:
        assert A[s]['transcription'] == B[s]['transcription'] and A[s]['font'] == B[s]['font']
        ia = [r['bytes'] for r in A[s].cast_column('image', datasets.Image(decode=False))['image']]
        ib = [r['bytes'] for r in B[s].cast_column('image', datasets.Image(decode=False))['image']]
        assert ia == ib
    assert open(os.path.join(full, 'tokenizer.model'), 'rb').read() == open(os.path.join(resumed, 'tokenizer.model'), 'rb').read()


def test_cli_bad_source_is_one_line():
    r = subprocess.run([sys.executable, 'data/m21/prepare.py', '--sources=nope', '--out_dir=/tmp/never'],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and 'Traceback' not in r.stderr
    assert r.stderr.strip().count('\n') == 0 and "unknown source(s) ['nope']" in r.stderr


def test_pdmx_offline_is_one_line_naming_the_default():
    env = dict(os.environ, HF_DATASETS_OFFLINE='1', HF_HUB_OFFLINE='1')
    r = subprocess.run([sys.executable, 'data/pdmx_synth/prepare.py', '--out_dir=/tmp/never_pdmx'],
                       cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode != 0 and 'Traceback' not in r.stderr
    assert r.stderr.strip().count('\n') == 0 and r.stdout == ''
    assert 'python data/m21/prepare.py' in r.stderr and r.stderr.startswith('error: ')


@pytest.mark.parametrize('streaming', [False, True])
def test_pdmx_layout_with_a_local_stand_in(tmp_path, monkeypatch, streaming):
    """the online path, with datasets.load_dataset answered by a tiny local DatasetDict of the same
    shape as PDMX-Synth (RGBA images, splits train/validation/test)."""
    import datasets
    from PIL import Image
    spec = importlib.util.spec_from_file_location('pdmx_prepare', os.path.join(ROOT, 'data', 'pdmx_synth', 'prepare.py'))
    X = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(X)

    def fake(repo, streaming=False):
        assert repo == 'guangyangmusic/PDMX-Synth'
        img = Image.new('RGBA', (60, 20), (0, 0, 0, 0))  # transparent paper, as a raw SVG render gives
        img.paste((0, 0, 0, 255), (10, 5, 50, 15))
        rows = lambda n: {'image': [img] * n, 'transcription': [f'X:1\nK:C\nC D E{i} |' for i in range(n)]}
        dd = datasets.DatasetDict({s: datasets.Dataset.from_dict(rows(n)) for s, n in (('train', 5), ('validation', 2), ('test', 3))})
        return datasets.IterableDatasetDict({s: d.to_iterable_dataset() for s, d in dd.items()}) if streaming else dd
    monkeypatch.setattr(datasets, 'load_dataset', fake)
    out = str(tmp_path / 'pdmx')
    meta = X.prepare(out, streaming=streaming, max_samples=4, vocab_size=300)
    assert meta['excerpts'] == {'train': 4, 'val': 2, 'test': 3}
    dd = datasets.load_from_disk(out)
    assert dd['train'].column_names == ['image', 'transcription', 'source', 'tune_id', 'font']
    im = dd['val'][0]['image']
    a = np.asarray(im)
    assert im.mode == 'L' and a[0, 0] == 255 and a[10, 30] == 0  # transparent -> white, ink stays black
    assert dd['test']['transcription'] == [f'X:1\nK:C\nC D E{i} |' for i in range(3)]
    assert os.path.isfile(os.path.join(out, 'tokenizer.model'))


# ----------------------------------------------------------------------------- the held-out-font study

TUNE = 'X:1\nM:3/4\nL:1/8\nK:D\n|: FGA2 d2 | c2 B2 A2 | ^G2 A2 =c2 | d6 :|\nz2 f4 | e6 |]\n'


def _job_in(split, fonts=None):
    """a job for TUNE whose (relpath, index) hashes into `split`"""
    idx = next(i for i in range(1000) if P.split_of('study/t.abc', i) == split)
    return ('test', 'study/t.abc', idx, TUNE, 1337, 2) + ((fonts,) if fonts else ())


def test_mix_glyphs_swaps_definitions_only():
    from engrave import engrave, font_glyphs, mix_glyphs
    svg, _ = engrave(TUNE.split('\n', 1)[1], 'Leipzig', LAYOUT)
    rng = np.random.default_rng(0)
    assert mix_glyphs(svg, rng, ['Bravura'], 0.0) == svg  # nothing asked, nothing changed
    out = mix_glyphs(svg, rng, ['Bravura'], 1.0)
    defs = P.re.findall(r'<g id="([0-9A-F]{4})-[^"]*">(.*?)</g>', out.partition('</defs>')[0], P.re.S)
    assert defs and all(body == font_glyphs('Bravura')[code] for code, body in defs if code in font_glyphs('Bravura'))
    assert out.partition('</defs>')[2] == svg.partition('</defs>')[2]  # every <use>, line and beam stays put
    jit = mix_glyphs(svg, np.random.default_rng(1), [], 0.0, jitter=1.0)
    assert jit.count('<g transform="matrix(') == len(defs) and jit.partition('</defs>')[2] == svg.partition('</defs>')[2]


def test_text_glyphs_fill_the_smufl_box_and_join_the_mix():
    from engrave import TEXT_BOX, TEXT_CHARS, TEXT_DONORS, engrave, font_glyphs, mix_glyphs, text_glyph, text_glyphs
    for f in TEXT_DONORS:  # every donor draws all ten digits
        assert {f'E08{d}' for d in range(10)} <= set(text_glyphs(f))
    rng = np.random.default_rng(0)
    for code in ('E086', 'E262', 'E260'):
        y, h, w = TEXT_BOX[code]
        for _ in range(20):
            d = text_glyph(code, 'DejaVuSerif', rng)
            xy = np.array([float(v) for v in P.re.findall(r'-?[0-9.]+', d)]).reshape(-1, 2)
            top, bottom = -xy[:, 1].min(), -xy[:, 1].max()  # SVG's y points down, SMuFL's up
            assert xy[:, 0].min() == 0 and abs((top + bottom) / 2 - (y + h / 2)) <= 1  # centred on the box
            assert h - 1 <= top - bottom <= h * (1.8 if code == 'E086' else 1.3) + 1
            assert xy[:, 0].max() <= 1.3 * w * (top - bottom) / h + 1  # no wider than 1.3x the aspect
    svg, _ = engrave('M:6/8\nL:1/8\nK:D\nA|dfa agf|]', 'Leipzig', LAYOUT)
    out = mix_glyphs(svg, np.random.default_rng(0), ['Bravura'], 1.0, 0.0, TEXT_DONORS)
    defs = dict(P.re.findall(r'<g id="([0-9A-F]{4})-[^"]*">(.*?)</g>', out.partition('</defs>')[0], P.re.S))
    assert {'E086', 'E088', 'E262'} <= set(defs)
    text = [c for c in defs if c in TEXT_CHARS and defs[c] != font_glyphs('Bravura')[c]]
    assert text and all(defs[c].startswith('<path d="M') for c in text)  # digits and sharps from text fonts
    assert all(defs[c] == font_glyphs('Bravura')[c] for c in defs if c not in TEXT_CHARS)  # the rest: Bravura
    assert out.partition('</defs>')[2] == svg.partition('</defs>')[2]
    with pytest.raises(ValueError, match='glyph_mix'):
        P.prepare('unused', glyph_text=True, holdout_font='Petaluma')


def test_test_all_fonts_pairs_every_test_excerpt(monkeypatch):
    fonts = dict(test_all_fonts=True)
    for split in ('train', 'test'):
        plain, _ = P.process_tune(_job_in(split))
        paired, skips = P.process_tune(_job_in(split, fonts))
        assert plain and skips == {}
        if split == 'train':  # train (and val) are the corpus without the option, byte for byte
            assert paired == plain
            continue
        assert len(paired) == len(P.FONTS) * len(plain)
        for s in plain:  # each excerpt once in each font, the original among them, one label
            same = [p for p in paired if p['excerpt'] == s['excerpt']]
            assert sorted(p['font'] for p in same) == sorted(P.FONTS) and s in same
            assert {p['transcription'] for p in same} == {s['transcription']}
            assert len({p['image'] for p in same}) == len(P.FONTS)


def test_glyph_mix_changes_train_images_only_and_never_draws_on_the_held_out_font(monkeypatch):
    calls = []
    real = P.mix_glyphs
    monkeypatch.setattr(P, 'mix_glyphs', lambda svg, rng, donors, *a: calls.append(donors) or real(svg, rng, donors, *a))
    fonts = dict(glyph_mix=1.0, glyph_jitter=0.5, holdout_font='Petaluma')
    for split in ('train', 'test'):
        plain, _ = P.process_tune(_job_in(split))
        mixed, _ = P.process_tune(_job_in(split, fonts))
        assert [s['transcription'] for s in mixed] == [s['transcription'] for s in plain]
        assert [s['font'] for s in mixed] == [s['font'] for s in plain]  # same excerpts, fonts and layouts
        for a, b in zip(plain, mixed):  # train images change, unless the engraving font is the held-out one
            assert (a['image'] != b['image']) == (split == 'train' and a['font'] != 'Petaluma')
    assert calls and all('Petaluma' not in d and len(d) == 4 for d in calls)
    with pytest.raises(ValueError, match='holdout_font'):
        P.prepare('unused', glyph_mix=0.5)


def test_train_refuses_a_held_out_font_the_corpus_mixed_in(tmp_path):
    import data
    (tmp_path / 'meta.json').write_text(json.dumps(dict(glyph_mix=0.5, holdout_font='Petaluma')))
    assert data.holdout_error(tmp_path, 'Petaluma') is None and data.holdout_error(tmp_path, None) is None
    assert 'hold out Petaluma' in data.holdout_error(tmp_path, 'Leland')
    (tmp_path / 'meta.json').write_text(json.dumps(dict(seed=1)))  # a corpus that mixes nothing
    assert data.holdout_error(tmp_path, 'Leland') is None
