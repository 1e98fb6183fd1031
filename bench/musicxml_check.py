"""
bench/musicxml_check.py: do our MusicXML exports import cleanly? Many transcriptions go through
inference/musicxml.py's to_musicxml; each export is then (1) parsed by music21, every bar measured
against its meter, and (2) imported by MuseScore 3 headless, its complaints counted. MuseScore is
used for this import check ONLY (never to draw training or evaluation images).

The transcriptions: the labels of reader/samples/*.abc; the test labels of a prepared corpus
(--data_dir, e.g. data/m21/q200 from `python data/m21/prepare.py --out_dir=data/m21/q200 --max_tunes=200`);
the same labels damaged the way a model writes them (a bar an eighth short or long, a length no note
value has, garbage tokens, an empty bar, a dangling tie); pages (4-6 labels joined by inference/tune.py
join_lines, with inline key/meter changes); the multi-voice labels of tests/test_voices.py; and any
.abc files in --abc_dir (e.g. the shipped reader's page transcriptions).

music21 bar check: a bar other than the first and the last whose length (every voice) is not its
meter's is a mismatch; so is a first or last bar longer than its meter. A short bar that closes a
repeat (':|') and completes the pickup, and a bar split at a section line ('G4 || GA |' in 3/4: a
short bar before '||', '|]' or a repeat and the next strain's pickup, together one meter), are the
folk-tune conventions and counted apart ('repeat').
MuseScore: its "Error at line ..." lines per file (it prints each twice; counted once), and apart its
other import messages (a tie with no next note, an empty bar type, a zero-length slur).

    $ python -m bench.musicxml_check --data_dir=data/m21/q200 --abc_dir=results/pages_robust_abc
"""
import argparse
import ast
import glob
import json
import os
import random
import re
import shutil
import subprocess
import tempfile
import time
from fractions import Fraction

import data
from inference import musicxml, tune

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(p):
    with open(p) as f:
        return f.read().strip()


def damaged(abc, rng):
    """A label -> versions damaged as a model damages them: {kind: abc}."""
    head, _, body = abc.rpartition('\n')
    bars = body.split('|')
    out = {}
    notes = [(i, m) for i, b in enumerate(bars[:-1]) for m in re.finditer(r"(?<![_^=A-Ga-g,'/\d])[_^=]*[A-Ga-g][,']*\d*/*\d*", b)]
    if notes:
        i, m = notes[rng.randrange(len(notes))]
        b = bars[i]
        out['short'] = head + '\n' + '|'.join(bars[:i] + [b[:m.start()] + b[m.end():]] + bars[i + 1:])
        out['long'] = head + '\n' + '|'.join(bars[:i] + [b[:m.end()] + ' G' + b[m.end():]] + bars[i + 1:])
        out['odd_len'] = head + '\n' + '|'.join(bars[:i] + [b[:m.start()] + 'G5/2' + b[m.end():]] + bars[i + 1:])
        out['dangling_tie'] = head + '\n' + body.rstrip('|] ') + '-'
        # ties from every note of a bar to the next, whatever its pitch (the shipped reader's 'F2- E2- |')
        out['ties_everywhere'] = head + '\n' + '|'.join(bars[:i] + [re.sub(r"([A-Ga-g][,']*\d*/*\d*)(?![-\d/,'])", r'\1-', b)]
                                                        + bars[i + 1:])
    # the last bar a note short, then bars with no music and bare volta numbers ('|4- |4- |', as the
    # reader wrote at the end of a LilyPond page): music21 then sees a short bar in mid-tune
    core = body.rstrip('|]: ').split('|')
    last = list(re.finditer(r"[_^=]*[A-Ga-g][,']*\d*/*\d*", core[-1]))
    if len(core) > 1 and last:
        b = core[-1][:last[-1].start()] + core[-1][last[-1].end():]
        out['short_end_empty_bars'] = head + '\n' + '|'.join(core[:-1] + [b]) + '|4- |4- |'
    out['garbage'] = head + '\n' + body.replace('|', '| }$ ', 1).replace(' ', ' ,# ', 1)
    out['empty_bar'] = head + '\n' + body.rstrip('|] ') + ' | | |'
    return out


def voice_labels():
    """FOUR, GRAND, SIX and XML2ABC of tests/test_voices.py: its top-level string assignments,
    evaluated in order (tests/ is not a package, and importing it would need pytest)."""
    tree = ast.parse(_read(os.path.join(ROOT, 'tests', 'test_voices.py')))
    ns = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                ns[node.targets[0].id] = eval(compile(ast.Expression(node.value), 'test_voices', 'eval'), {}, dict(ns))
            except Exception:
                pass
    return {k: ns[k] for k in ('FOUR', 'GRAND', 'SIX', 'XML2ABC') if isinstance(ns.get(k), str)}


def corpus(data_dir=None, abc_dir=None, seed=0, max_labels=200):
    """-> list of (group, name, abc)."""
    rng = random.Random(seed)
    out = [('samples', os.path.basename(p), _read(p)) for p in sorted(glob.glob(os.path.join(ROOT, 'reader', 'samples', '*.abc')))]
    labels = [a for _, _, a in out]
    if data_dir:
        ds = data.load_split(data_dir, 'test')
        test = list(ds['transcription'])[:max_labels]
        out += [('corpus', f'test_{i}', a) for i, a in enumerate(test)]
        labels += test
    for i, a in enumerate(labels):
        for kind, d in damaged(a, rng).items():
            out.append((f'broken_{kind}', f'{i}', d))
    for i in range(max(1, len(labels) // 5)):
        k = rng.randint(4, 6)
        page, _ = tune.join_lines(rng.sample(labels, min(k, len(labels))), labels=True)
        if page:
            out.append(('pages', f'page_{i}', page))
    out += [('voices', k, v) for k, v in voice_labels().items()]
    if abc_dir:
        out += [('model', os.path.basename(p), _read(p)) for p in sorted(glob.glob(os.path.join(abc_dir, '*.abc')))]
    return out


def bar_check(xml):
    """music21's view of an export -> (bars, mismatches, short bars kept by the folk conventions:
    one closing a repeat, or a bar split at a section line, i.e. a short bar ending in '||', a
    final bar line, a repeat or a repeat start ('|:') and the short bar after it (the next strain's
    pickup), the two together one meter)."""
    import music21
    s = music21.converter.parseData(xml, format='musicxml')
    bars = bad = rep = 0
    for p in s.parts:
        ms = list(p.getElementsByClass('Measure'))
        want, lens = [], []
        for m in ms:
            want.append(Fraction(m.barDuration.quarterLength).limit_denominator(96))
            vs = list(m.voices) or [m]
            lens.append({Fraction(sum(n.quarterLength for n in v.notesAndRests)).limit_denominator(96) for v in vs})

        def section_split(a):  # measures a and a+1: one bar split at a section line
            if a < 0 or a + 1 >= len(ms) or len(lens[a]) != 1 or len(lens[a + 1]) != 1 or want[a] != want[a + 1]:
                return False
            bl, nl = ms[a].rightBarline, ms[a + 1].leftBarline  # ... or the next measure's repeat start ('A2 |: BA |')
            return ((bl is not None and (getattr(bl, 'direction', None) == 'end' or bl.type in ('double', 'final', 'light-light', 'light-heavy'))
                     or nl is not None and getattr(nl, 'direction', None) == 'start')
                    and 0 < min(lens[a]) < want[a] and 0 < min(lens[a + 1]) < want[a] and min(lens[a]) + min(lens[a + 1]) == want[a])
        for k, m in enumerate(ms):
            bars += 1
            edge = k == 0 or k == len(ms) - 1
            if all(x == want[k] for x in lens[k]) or (edge and all(x <= want[k] for x in lens[k])):
                continue
            bl = m.rightBarline
            if all(x < want[k] for x in lens[k]) and (bl is not None and getattr(bl, 'direction', None) == 'end'
                                                      or section_split(k) or section_split(k - 1)):
                rep += 1
            else:
                bad += 1
    return bars, bad, rep


def musescore(files, exe='mscore3'):
    """MuseScore 3's import messages per file: {path: (error lines, other lines)} (one batch job)."""
    tmp = tempfile.mkdtemp()
    # converted to .mscx, MuseScore's own score file (no picture is drawn), and deleted: only the import's messages count
    job = [{'in': f, 'out': os.path.join(tmp, f'{i}.mscx')} for i, f in enumerate(files)]
    with open(os.path.join(tmp, 'job.json'), 'w') as f:
        json.dump(job, f)
    env = dict(os.environ, QT_QPA_PLATFORM='offscreen', XDG_RUNTIME_DIR=tmp)
    r = subprocess.run([exe, '-j', os.path.join(tmp, 'job.json')], capture_output=True, text=True, env=env, timeout=3600)
    shutil.rmtree(tmp, ignore_errors=True)
    out, cur = {f: (set(), set()) for f in files}, None
    for ln in (r.stdout + '\n' + r.stderr).splitlines():
        m = re.match(r'convert <(.*)>\.\.\.', ln)
        if m:
            cur = m.group(1)
            continue
        if cur not in out or not ln.strip() or ln.startswith(('\tto <', '... success', 'QStandardPaths')):
            continue
        out[cur][0 if ln.startswith('Error at') else 1].add(ln.strip())
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--data_dir', default=None)
    ap.add_argument('--abc_dir', default=None)
    ap.add_argument('--max_labels', type=int, default=200)
    ap.add_argument('--musescore', default='mscore3', help="MuseScore 3's binary ('' to skip it)")
    ap.add_argument('--keep', default=None, help='a folder: keep the exports there')
    a = ap.parse_args()
    t0 = time.time()
    items = corpus(a.data_dir, a.abc_dir, max_labels=a.max_labels)
    folder = a.keep or tempfile.mkdtemp()
    os.makedirs(folder, exist_ok=True)
    groups, files = {}, {}
    for g, name, abc in items:
        st = groups.setdefault(g, dict(n=0, failed=0, bars=0, bad=0, rep=0, bad_files=0, ms_err=0, ms_err_files=0,
                                       ms_other=0))
        st['n'] += 1
        try:
            xml = musicxml.to_musicxml(abc)
        except ValueError:
            st['failed'] += 1
            continue
        bars, bad, rep = bar_check(xml)
        st['bars'] += bars
        st['bad'] += bad
        st['rep'] += rep
        st['bad_files'] += bad > 0
        path = os.path.join(folder, f'{g}_{re.sub(r"[^A-Za-z0-9_.-]", "_", name)}.musicxml')
        with open(path, 'w') as f:
            f.write(xml)
        files[path] = g
    ms = musescore(sorted(files), a.musescore) if a.musescore and shutil.which(a.musescore) else None
    examples = {}
    if ms is not None:
        for path, (err, other) in ms.items():
            st = groups[files[path]]
            st['ms_err'] += len(err)
            st['ms_err_files'] += bool(err)
            st['ms_other'] += len(other)
            for e in list(err) + list(other):
                key = re.sub(r'0x[0-9a-f]+|\d+', 'N', e)  # one kind: numbers and pointers aside
                examples.setdefault(key, [e, os.path.basename(path), 0])[2] += 1
    print('| group | exports | abc2xml failed | bars | music21 bar mismatches (files) | short bars kept (repeat, section split) | '
          'MuseScore errors (files) | other MuseScore messages |')
    print('|---|---:|---:|---:|---:|---:|---:|---:|')
    tot = dict.fromkeys(['n', 'failed', 'bars', 'bad', 'bad_files', 'rep', 'ms_err', 'ms_err_files', 'ms_other'], 0)
    for g, st in groups.items():
        for k in tot:
            tot[k] += st[k]
        ms_txt = f"{st['ms_err']} ({st['ms_err_files']})" if ms is not None else 'not run'
        print(f"| {g} | {st['n']} | {st['failed']} | {st['bars']} | {st['bad']} ({st['bad_files']}) | {st['rep']} | {ms_txt} | "
              f"{st['ms_other'] if ms is not None else '-'} |")
    print(f"| all | {tot['n']} | {tot['failed']} | {tot['bars']} | {tot['bad']} ({tot['bad_files']}) | {tot['rep']} | "
          f"{tot['ms_err']} ({tot['ms_err_files']}) | {tot['ms_other']} |")
    if examples:
        print('\nMuseScore messages (one example per kind, and how many of that kind):')
        for e, f, n in sorted(examples.values()):
            print(f'  {n} x  {f}: {e}')
    print(f'\n{time.time() - t0:.0f} s')


if __name__ == '__main__':
    main()
