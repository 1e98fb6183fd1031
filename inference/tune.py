"""
inference/tune.py: the text of a transcribed tune. Split one transcription into its header fields and
its music, or into its voices; join the transcriptions of a page's staves (or systems) into one tune.
Plain text in, plain text out (no torch), so the engraving child process of sample.py stays light.

join_lines writes a later staff's key, clef or meter as a change only where the page shows one: a key
and clef that the next staff reads too (both are drawn on every staff), a meter its bars add up to (it is
drawn once, where it changes). Two checks settle a page's header from the rest of the page, as a reader
of the page would:
  - first_staff_header: the first staff's clef and key disagree with the two staves below it, which agree
    (a degraded first staff read under a bass clef, say); inference/pages.Reader.settle reads it again
    with theirs, and keeps that reading only if the model finds it as likely as its own;
  - settle_meter: the meter read on the first staff (a scanned 2/4 read as 4/4) fits fewer bars than
    another the model finds nearly as likely on that staff (Reader.meter_scores); the bars decide.
"""
import re
from collections import Counter
from fractions import Fraction

from inference.musicxml import _TOKEN, _pqr, meter_len, parse_len

_FIELD = re.compile(r'^([A-Za-z]):(.*)$')


def split_abc(abc):
    """One transcription -> ({field letter: value}, body): the header fields before the music, and
    the music lines joined by a space."""
    fields, body = {}, []
    for ln in abc.splitlines():
        ln = ln.strip()
        m = _FIELD.match(ln)
        if m and not body:
            fields.setdefault(m.group(1), m.group(2).strip())
        elif ln and not (ln.startswith('%') and not body):
            body.append(ln)
    return fields, ' '.join(body)


_VOICE_LINE = re.compile(r'^\[V:\s*([^\]\s]+)[^\]]*\]\s*')


def split_voices(abc):
    """A multi-voice transcription (issue 12's labels: '%%score', header, 'V:n clef' lines, then one
    '[V:n] ..' line per voice) -> (header lines as written, {field letter: value},
    {voice id: its music, its lines joined by a space}), or None when no line opens with [V:..].
    Music after a bare 'V:n' line is that voice's too (xml2abc's layout); a repeated V: line is not
    kept in the header."""
    head, fields, voices, seen, cur = [], {}, {}, set(), None
    for ln in abc.splitlines():
        ln = ln.strip()
        if not ln:
            continue
        m = _FIELD.match(ln)
        vm = _VOICE_LINE.match(ln)
        if vm:
            cur = vm.group(1)
            voices[cur] = (voices.get(cur, '') + ' ' + ln[vm.end():]).strip()
        elif m and m.group(1) == 'V':
            cur = m.group(2).split()[0] if m.group(2).split() else cur
            if cur not in seen and not voices:
                head.append(ln)
            seen.add(cur)
        elif (m or ln.startswith('%')) and not voices:
            head.append(ln)
            if m:
                fields.setdefault(m.group(1), m.group(2).strip())
        elif cur is not None:
            voices[cur] = (voices.get(cur, '') + ' ' + ln).strip()
    return (head, fields, voices) if voices else None


def join_lines(abcs, labels=False):
    """Transcriptions of the staves of a tune, top to bottom -> (tune ABC, indices left out).
    Header M:, L:, K: once (from the first readable line; the labels' format), one line per staff,
    inline [K:..] [M:..] [L:..] where a staff's differ from the one before. A line without K: or
    without music is left out.
    A change read is written only where the page shows it, as engravers draw one (labels=True: the
    lines are labels, references to score against, and every change in them is real):
      - key and clef (K:'s first word, and the rest) are drawn on every staff, so a change lasts: one
        is taken only where the next readable staff reads it too. A key read differently on one staff
        between two that agree is a misreading (2% of later staves on val pages, none of them real);
      - a meter is drawn once, where it changes, and the bars after it add up to it: a later staff's
        M: is taken only where more than half its bars do, and more than add up to the meter before.
        The reader guesses a meter on 7-14% of the later staves of val pages, which show none.
    Multi-voice transcriptions (one per system, see split_voices) join voice by voice: the first
    readable system's header as it is, then one '[V:n]' line per voice, each system's bars of voice
    n appended to line n (inline fields where they change, in every voice). A system whose voices
    are not the first one's, or a single-voice line on a multi-voice page (and the reverse), is left
    out: appending it would put one part's music in another's line."""
    read, skipped, poly = [], [], None  # read: (index, split_voices or None, fields, body) of readable lines
    for i, abc in enumerate(abcs):
        sv = split_voices(abc or '')
        fields, body = (sv[1], ' '.join(sv[2].values())) if sv else split_abc(abc or '')
        if 'K' not in fields or not body.strip() or (read and (sv is None) != (poly is None)) \
                or (poly is not None and set(sv[2]) != set(poly)):
            skipped.append(i)
            continue
        if not read and sv:
            poly = dict(sv[2])
        read.append((i, sv, fields, body))
    if not read:
        return '', skipped
    _, sv, cur, body = read[0]
    cur = {k: cur[k] for k in 'MLK' if k in cur}
    head = '\n'.join(sv[0]) if sv else '\n'.join(f'{k}:{cur[k]}' for k in 'MLK' if k in cur)
    out = [] if sv else [body]
    for n, (i, sv, fields, body) in enumerate(read[1:], 1):
        fields = dict(fields)
        if not labels:
            fields['K'] = _lasting_key(fields['K'], cur['K'], read[n + 1][2]['K'] if n + 1 < len(read) else None)
            if 'M' in fields and fields['M'] != cur.get('M') \
                    and not _meter_shown(body, fields['M'], cur.get('M'), fields.get('L', cur.get('L', '1/8'))):
                del fields['M']
        inline = ''
        for k in 'KML':  # the key first: it is the one a reader looks for at a line start
            if k in fields and fields[k] != cur.get(k):
                inline += f'[{k}:{fields[k]}]'
                cur[k] = fields[k]
        if poly is not None:
            for v, music in sv[2].items():
                poly[v] += ' ' + (inline + ' ' if inline else '') + music
        else:
            out.append((inline + ' ' if inline else '') + body)
    if poly is not None:
        out = [f'[V:{v}] {music}' for v, music in poly.items()]
    return head + '\n' + '\n'.join(out), skipped


def _lasting_key(k, before, after):
    """A later staff's K: value, the K: in force before it, the next readable staff's (None: the last)
    -> the K: to join it under: its key (first word) and its clef etc. (the rest) each taken where
    it is the one before, or the next staff reads it too; else the one before."""
    now, was = k.partition(' ')[::2], before.partition(' ')[::2]
    nxt = after.partition(' ')[::2] if after is not None else (None, None)
    return ' '.join(a if a in (b, c) else b for a, b, c in zip(now, was, nxt)).strip()


def _meter_shown(body, new, old, unit):
    """A staff's music, the meter it was read with, the one before it, its L: -> whether the bars bear
    the new meter out: more of them add up to it than to the old one, and more than half do (a short
    first bar, a pickup, and a short last one left out)."""
    bars, length = _bars(body, unit), meter_len(new)
    if length is None:
        return False
    whole = bars[1:] if bars and bars[0] < length else bars
    whole = whole[:-1] if whole and whole[-1] < length else whole
    fit = bars.count(length)
    return fit > bars.count(meter_len(old)) and 2 * fit > len(whole)


def _bars(body, unit):
    """bar_lengths under an L: value ('1/8'); [] where it is not 1/n."""
    lm = re.fullmatch(r'1/(\d+)', (unit or '').strip())
    return bar_lengths(body, Fraction(1, int(lm.group(1)))) if lm else []


def first_staff_header(abcs):
    """Transcriptions of a page's staves -> (index of the first readable staff, the header to read it
    again with: its own M: and L:, and the K: (clef and key) that the next two readable staves both
    read), or (None, None) when they agree with it, there are fewer than three, or the page has voices.
    A key that changes at the second staff and stays is read the same way, which is why the re-reading
    must convince the model (Reader.settle) before it replaces the first one."""
    readable = []
    for i, abc in enumerate(abcs):
        if split_voices(abc or '') is not None:
            return None, None
        fields, body = split_abc(abc or '')
        if 'K' in fields and body.strip():
            readable.append((i, fields))
        if len(readable) == 3:
            break
    if len(readable) < 3:
        return None, None
    (i, f0), (_, f1), (_, f2) = readable
    if f1['K'] != f2['K'] or f1['K'] == f0['K']:
        return None, None
    head = [('M', f0.get('M')), ('L', f0.get('L', '1/8')), ('K', f1['K'])]
    return i, ''.join(f'{k}:{v}\n' for k, v in head if v)


def bar_lengths(body, unit=Fraction(1, 8)):
    """Music of one voice -> the length of each bar in whole notes, in order (empty bars dropped), up
    to the first inline [M:] or [L:]. Grace notes take no time; '(3' puts three in the time of two; a
    chord lasts as long as its first note, times the length after ']'."""
    out, cur, tup = [], Fraction(0), None  # tup: [notes left in the tuplet, their time factor q/p]
    for t in _TOKEN.finditer(body):
        kind, text = t.lastgroup, t.group()
        if kind == 'field' and text[1] in 'ML':
            break
        if kind == 'bar':
            out, cur = out + [cur], Fraction(0)
        elif kind == 'tuplet':
            p, q, r = _pqr(text)
            tup = [r, Fraction(q, p)]
        elif kind in ('note', 'rest', 'chord'):
            if kind == 'chord':
                inner = re.findall(r"[_^=]*[A-Ga-g][,']*(\d*/*\d*)", text[1:text.rindex(']')])
                d = (parse_len(inner[0]) if inner else 1) * parse_len(text[text.rindex(']') + 1:] or '1')
            else:
                d = parse_len(text[1:] if kind == 'rest' else re.sub(r"^[_^=]*[A-Ga-g][,']*", '', text))
            if tup:
                d, tup[0] = d * tup[1], tup[0] - 1
                tup = tup if tup[0] > 0 else None
            cur += d * unit
    return [x for x in out + [cur] if x > 0]


# the meters of >= 100 train lines of data/m21/all, most common first: a settled meter is one of these
METERS = ('2/4', '4/4', '6/8', '3/4', 'C', '2/2', '4/2', '3/2', '3/8', '9/8', 'C|', '12/8', '6/4')
METER_TAU = 3.0  # nats: a meter the model finds at most e^3 (20x) less likely than its best is still a candidate


def settle_meter(abc, scores):
    """A transcribed tune and the model's log-probability of each of METERS as its first staff's header
    (pages.Reader.meter_scores: how well each meter's digits fit the image) -> the same tune, its M:
    replaced by the candidate (within METER_TAU of the best score) that the most whole bars (the first,
    a pickup, and the last left out) add up to, where that is more bars than the meter read fits. Digits
    the model reads one way with another close behind (a scanned 2/4 read 4/4) are settled by the bars;
    one it is sure of is not. Ties keep the meter read, then the likelier one; 6/8 and 3/4 (one length)
    are never told apart this way. Free time, multi-voice tunes and scores=None stay as they are.
    Chosen on 100 val pages per engraver (docs/pages.md)."""
    if scores is None or split_voices(abc or '') is not None:
        return abc
    fields, body = split_abc(abc or '')
    m = fields.get('M', '').strip()
    if meter_len(m) is None or not scores:
        return abc
    fits = Counter(_bars(body, fields.get('L', '1/8'))[1:-1])
    best = max(scores.values())
    new = max((x for x in METERS if scores.get(x, -1e9) >= best - METER_TAU), key=lambda x: (fits[meter_len(x)], scores[x]))
    if fits[meter_len(new)] <= fits[meter_len(m)]:
        return abc
    return re.sub(r'(?m)^M:.*$', lambda _: 'M:' + new, abc, count=1)
