"""
inference/musicxml.py: ABC (a transcription, one line or a joined page) -> MusicXML that MuseScore opens, with
abctoolkit's bundled abc2xml (W. Vree, LGPL), after a repair pass that makes every bar add up to its
meter. A model's ABC can have bars one eighth short or long; abc2xml would write them as they are, and
MuseScore then shows corrupted measures. repair_bars decides:

  - a short bar is padded with rests at its end; a long one loses whole events (a note, chord, rest, a
    whole tuplet, with the grace notes and decorations before it) from its end until it fits;
  - left short on purpose: the FIRST bar (a pickup), the LAST bar, a short bar that ends a repeat (':|')
    and completes the pickup, and a bar split at a section line ('G4 || GA |' in 3/4: a short bar before
    '||', '|]' or a repeat and the next strain's pickup, together one meter), as folk tunes are written;
  - free time (no meter) bars are neither padded nor trimmed;
  - multi-voice tunes (issue 12's labels: '%%score', 'V:n clef' lines, '[V:n] ..' lines): each voice is
    repaired on its own; a bar left short is padded to the longest voice's bar of that number (MuseScore
    flags a measure whose voices do not add up alike). Header and '%%' lines are kept as written.

What MuseScore 3 imports without one complaint (bench/musicxml_check.py counts them):
  - every note and rest has a written value: durations on a 32nd grid (abc2xml's 2520 divisions per
    quarter have no 64th), a length no single value has split into values tied (split_len);
  - every tuplet can be measured: its notes count a multiple of p in their smallest unit, inside its bar
    (else the mark is dropped, _regular_tuplets); a split note recounts it ('(3:2:4');
  - no grace note before a rest or a bar line; accidentals ABC has ('^^^^' -> '^^'); octaves 0-9; no stray
    digits, no volta but 1 and 2;
  - a bar with no music ('| |', a bare volta '|4') makes no measure: its bar line merges into the one
    before; a line that ends in music is closed by a bar line (abc2xml would run it into the next);
  - a tie reaches its pitch or is dropped (chords per note, none on grace notes or rests);
  - each part names an instrument (with_instruments; else "no instrument found for part 'P1'").
Durations follow ABC: L: unit lengths ('A2', 'A/', 'A3/2'), '(3' = three notes in the time of two,
grace notes '{..}' take no time, a chord '[..]' lasts as long as its first note. Inline [M:..] / [L:..]
/ [K:..] fields change the meter/unit for what follows. Decorations ('!fermata!'), quoted text and '%'
comments are kept and take no time. A tune with its own X: line (xml2abc's output) keeps it."""

import contextlib
import io
import re
import warnings
from fractions import Fraction

from core.files import atomic_write

_TOKEN = re.compile(r"""
    (?P<field>\[[A-Za-z]:[^\]\n]*\])        # inline field [K:G] [M:3/4]
  | (?P<bar>:*\|+[\]:]*\d*|\[\|\]?|:{2,}|\|)  # bar lines, repeats, thin-thick; an attached volta number
  | (?P<chord>\[[^\]\[\n]*\]\d*/*\d*)       # [CEG] (a length after ] too)
  | (?P<grace>\{[^}\n]*\})
  | (?P<deco>![^!\n]*!|"[^"\n]*")          # !fermata!, "^text": kept as written, no time (not notes)
  | (?P<comment>%.*)                       # a comment to the end of the line (xml2abc's bar numbers)
  | (?P<tuplet>\(\d(?::\d*)*)
  | (?P<note>[_^=]*[A-Ga-g][,']*\d*/*\d*)
  | (?P<rest>[zxZX]\d*/*\d*)
  | (?P<space>\s+)
  | (?P<other>.)
""", re.X)
_LEN = re.compile(r"(\d*)(/*)(\d*)$")


def parse_len(s):
    """the length suffix of a note/rest ('', '2', '/', '//', '/4', '3/2') -> Fraction of the unit."""
    num, slashes, den = _LEN.search(s).groups()
    n = Fraction(int(num)) if num else Fraction(1)
    if slashes:
        n /= int(den) if den else 2 ** len(slashes)
    return n


def meter_len(m):
    """'6/8' -> Fraction(6, 8) of a whole note; 'C' -> 1, 'C|' -> 1; None for free time / unreadable."""
    m = (m or '').strip()
    if m in ('C', 'C|'):
        return Fraction(1)
    mm = re.fullmatch(r'(\d+(?:\+\d+)*)/(\d+)', m)
    return Fraction(sum(int(x) for x in mm.group(1).split('+')), int(mm.group(2))) if mm else None


def _rest(units):
    """a rest of `units` L-lengths as ABC: z, z2, z/, z3/2, z1/3."""
    if units == 1:
        return 'z'
    if units.denominator == 1:
        return f'z{units.numerator}'
    return f'z{units.numerator if units.numerator != 1 else ""}/{units.denominator}'


# every duration is put on a 32nd grid (the labels' shortest, A/4): abc2xml's 2520 divisions per quarter
# round a 64th (157.5) and MuseScore reports 'calculated duration (1/64) not equal to ... (157/10080)'
GRID = Fraction(1, 32)
# note values abc2xml and MuseScore write exactly: a 32nd .. a long (4 whole notes), with 0-2 dots, on the grid
WRITTEN = sorted({v for k in range(-5, 3) for f in (Fraction(1), Fraction(3, 2), Fraction(7, 4))
                  for v in [Fraction(2) ** k * f] if (v / GRID).denominator == 1}, reverse=True)
ACCIDENTALS = ('', '^', '^^', '_', '__', '=')


def split_len(d):
    """A duration in whole notes -> the written values that add up to it, longest first (greedy):
    5/32 -> [1/8, 1/32], 5/16 -> [1/4, 1/16], 3/8 -> [3/8] (a dotted quarter). A note or rest of a
    length no single value has (a model's 'G5/2', a padding rest) is written as these, tied for a
    note, so that every <note>'s type and dots equal its duration (MuseScore otherwise reports
    'calculated duration not equal to specified duration'). d is on the GRID (quantize)."""
    out, d = [], Fraction(d)
    for w in WRITTEN:
        while d >= w:
            out.append(w)
            d -= w
    return out


def quantize(d):
    """whole notes -> the nearest multiple of GRID, at least one: a model's 'c/8' (L:1/8) is a 32nd."""
    return max(GRID, round(Fraction(d) / GRID) * GRID)


def _accidental(a):
    """'^^^^', '___', '=^' -> an ABC accidental (abc2xml misreads the run, and its bar with it): a run
    keeps at most two signs, a mix its last."""
    if a in ACCIDENTALS:
        return a
    return {'^': '^^', '_': '__', '=': '='}[a[-1]] if len(set(a)) == 1 else a[-1]


def _clean(kind, text):
    """a note or chord token with its accidentals made ABC's (_accidental); a rest as it is."""
    text = text if kind == 'rest' else re.sub(r",{5,}", ",,,,", re.sub(r"'{5,}", "'" * 4, text))  # octaves 0-9
    return text if kind == 'rest' else re.sub(r"([_^=]+)(?=[A-Ga-g])", lambda m: _accidental(m.group(1)), text)


def _with_len(kind, text, d, unit):
    """a note, rest or chord token rewritten to last d (whole notes): the same pitches and inner ties."""
    L = _len_text(d / unit)
    if kind == 'rest':
        return text[0] + L
    if kind == 'note':
        return re.match(r"^[_^=]*[A-Ga-g][,']*", text).group() + L
    inner = text[1:text.rindex(']')]
    return '[' + re.sub(r"([_^=]*[A-Ga-g][,']*)\d*/*\d*", lambda m: m.group(1) + L, inner) + ']'


def _pqr(text):
    """'(3', '(3:2', '(5:4:3' -> (p, q, r): p notes in the time of q, for the next r notes."""
    pqr = [int(x) if x else None for x in text[1:].split(':')] + [None, None]
    p = pqr[0]
    return p, pqr[1] or {2: 3, 3: 2, 4: 3, 6: 2, 8: 3}.get(p, 2), pqr[2] or p


def _smallest(w):
    """a written value -> the smallest unit it is counted in by MuseScore: a dotted value in thirds
    of itself (a dotted quarter = 3 eighths), a double-dotted one in sevenths."""
    for f in (Fraction(7, 4), Fraction(3, 2)):
        b = w / f
        if b.numerator == 1 and b.denominator & (b.denominator - 1) == 0:
            return w / f / (4 if f == Fraction(7, 4) else 2)
    return w


def _regular_tuplets(toks):
    """a bar's tokens -> the same without the tuplet marks MuseScore cannot read (their notes count at
    face value): one whose notes' count in their smallest written unit p does not divide ('(3A/G/F' is
    4 sixteenths: 'determineTupletBaseLen cannot divide count 4 by 3'; it lasts 1/6, no note value), or
    with fewer than r notes before the bar line or another tuplet ('tuplet not stopped at end of
    measure'; abc2xml nests none). Inner tuplets first, so an outer one sees what is left of them."""
    out = list(toks)
    for i in range(len(toks) - 1, -1, -1):
        if toks[i][0] != 'tuplet':
            continue
        p, q, r = _pqr(toks[i][1])
        kinds = [t[0] for t in out[i + 1:] if t[0] in ('note', 'rest', 'chord', 'tuplet')]
        ds = [t[2] for t in out[i + 1:] if t[0] in ('note', 'rest', 'chord')][:r * ('tuplet' not in kinds[:r])]
        pieces = [w for x in ds for w in split_len(x)]
        count = sum(ds) / min(_smallest(w) for w in pieces) if len(ds) == r and pieces else Fraction(1, 2)
        if count.denominator != 1 or count.numerator % p:  # not a whole count, or not one p divides
            out[i] = ('space', '', None)
            continue
        j = i + 1  # grace notes right after the mark go before it (abc2xml counts them in: 'implicit tuplet start')
        while j < len(out) and out[j][0] in ('grace', 'space'):
            j += 1
        out[i:j] = out[i + 1:j] + [out[i]]
    return out


def _len_text(units):
    """a length in L-units as ABC's suffix: '', 2, /, 3/2, 1/3."""
    return _rest(units)[1:]


def _split_token(kind, text, d, unit):
    """one note/rest/chord token whose duration d no single written value has -> (its text as
    several tokens, tied for notes and chords, number of pieces). A representable one is unchanged."""
    if d is None or d in WRITTEN or d <= 0:
        return text, 1
    parts = split_len(d) or [WRITTEN[-1]]
    if kind == 'rest':
        return ' '.join(text[0] + _len_text(w / unit) for w in parts), len(parts)
    if kind == 'note':
        acc, pitch = re.match(r"^([_^=]*)([A-Ga-g][,']*)", text).groups()
        tie = '-' if text.rstrip().endswith('-') else ''
        notes = [(acc if i == 0 else '') + pitch + _len_text(w / unit) for i, w in enumerate(parts)]
        return '-'.join(notes) + tie, len(parts)
    # a chord: each note tied to itself in the next piece, '-' after every note ([C2-E2-][C/E/])
    inner = text[1:text.rindex(']')]
    pitches = [m.group(1) + m.group(2) for m in re.finditer(r"([_^=]*)([A-Ga-g][,']*)\d*/*\d*", inner)]
    plain = [re.sub(r'^[_^=]*', '', q) for q in pitches]
    chords = ['[' + ''.join(q + _len_text(w / unit) + '-' * (i < len(parts) - 1) for q in (plain if i else pitches)) + ']'
              for i, w in enumerate(parts)]
    return ''.join(chords), len(parts)


def _events(tokens):
    """tokens of one bar -> list of [start index, end index (exclusive), duration in whole notes or
    None for fields] per timed event; a '(3' groups the next three notes/rests/chords into one event."""
    ev, i, n = [], 0, len(tokens)
    while i < n:
        kind, text, d = tokens[i]
        if kind == 'tuplet':
            p, q, r = _pqr(text)
            j, got, dur = i + 1, 0, Fraction(0)
            while j < n and got < r:
                if tokens[j][0] in ('note', 'rest', 'chord'):
                    got += 1
                    dur += tokens[j][2]
                j += 1
            ev.append([i, j, dur * q / p])
            i = j
        else:
            ev += [[i, i + 1, d]] if kind in ('note', 'rest', 'chord') else []
            i += 1
    return ev


_VOICE = re.compile(r'^\s*\[V:\s*([^\]\s]+)[^\]]*\]')


def repair_bars(abc):
    """ABC text -> ABC text whose bars add up to their meter (see the module docstring). Header
    lines and '%' lines (%%score, comments) are kept as they are. A multi-voice tune (lines opened by
    [V:n], or a V: line before its music) is repaired per voice: each voice has its own first bar
    (pickup), last bar, and meter/unit from the header on, as abc2xml reads it."""
    lines = abc.split('\n')
    head = {'meter': None, 'unit': Fraction(1, 8)}
    state, voice = {}, None  # voice id (None: a tune without voices) -> {'meter', 'unit'} as that voice reads on
    # bars: (line index, voice, [(kind, text, duration)], meter length, unit length); tails: voice -> the
    # tokens after its last line's last bar line, when they hold music
    out_lines, bars, tails = [], [], {}
    for li, ln in enumerate(lines):
        if ln.lstrip().startswith('%'):
            out_lines.append(ln)  # %%score, %%MIDI, comments: not music
            continue
        m = re.match(r'^([A-Za-z]):(.*)$', ln.strip())
        if m:
            if m.group(1) == 'V' and m.group(2).split():
                voice = m.group(2).split()[0]  # music after a V: line is that voice's (ABC 2.1)
            for st in ([head] + ([state[voice]] if voice in state else [])):
                if m.group(1) == 'M':
                    st['meter'] = meter_len(m.group(2))
                elif m.group(1) == 'L':
                    st['unit'] = parse_len('1' + m.group(2).strip()[1:]) if m.group(2).strip().startswith('1/') else st['unit']
            out_lines.append(ln)
            continue
        vm = _VOICE.match(ln)
        if vm:
            voice = vm.group(1)
        st = state.setdefault(voice, dict(head))
        if tails.get(voice):  # the voice's last line ended in music, no bar line: closed there, as it is
            # repaired on its own (abc2xml would run it into this line's first bar: two padded bars in one)
            tails.pop(voice).extend([('space', ' ', None), ('bar', '|', None)])
        cur = []
        for t in _TOKEN.finditer(ln):
            kind, text = t.lastgroup, t.group()
            if kind == 'field':
                f, v = text[1], text[3:-1]
                if f == 'V' and v.split():  # a voice change inside a line: that voice's meter/unit from now
                    voice = v.split()[0]
                    st = state.setdefault(voice, dict(head))
                elif f == 'M':
                    st['meter'] = meter_len(v)
                elif f == 'L' and v.strip().startswith('1/'):
                    st['unit'] = Fraction(1, int(v.strip()[2:]))
            unit = st['unit']
            if kind in ('note', 'rest'):
                d = parse_len(text[1:] if kind == 'rest' else re.sub(r"^[_^=]*[A-Ga-g][,']*", '', text)) * unit
            elif kind == 'chord':
                inner = re.findall(r"[_^=]*[A-Ga-g][,']*(\d*/*\d*)", text[1:text.rindex(']')])
                after = text[text.rindex(']') + 1:]
                d = (parse_len(inner[0]) if inner else Fraction(1)) * (parse_len(after) if after else 1) * unit
            else:
                d = None
            if d is not None:  # on the grid, with accidentals ABC has (labels are already)
                text = _clean(kind, text)
                if quantize(d) != d:
                    d = quantize(d)
                    text = _with_len(kind, text, d, unit)
            if kind == 'other' and text not in '-().~HLMOPSTuv!"+<>':
                continue  # stray characters abc2xml would choke on (a digit: it misreads the next note's length)
            text = re.sub(r'(?<=[|\]:])([3-9]|\d\d+)$', '', text) if kind == 'bar' else text  # voltas are 1 or 2
            cur.append((kind, text, d))
            if kind == 'bar':
                bars.append((li, voice, _regular_tuplets(cur), st['meter'], unit))
                cur = []
        cur = _regular_tuplets(cur)
        bars.append((li, voice, cur, st['meter'], st['unit']))  # the rest of the line (no closing bar)
        tails[voice] = cur if _events(cur) else None
        out_lines.append(None)  # rebuilt below

    # first and last timed bar, and the pickup, are each voice's own
    first, last, pickup, nth = {}, {}, {}, {}
    for k, (_, v, toks, _, _) in enumerate(bars):
        if _events(toks):
            first.setdefault(v, k)
            last[v] = k
            nth[k] = sum(1 for j in nth if bars[j][1] == v)  # the bar's number within its voice
    # a bar split at a section line: a short bar closed by '||', '|]' or a repeat, and the short bar
    # after it (the next strain's pickup), together exactly one meter ('G4 || GA |' in 3/4): both kept
    length, split, before = {k: sum(e[2] for e in _events(bars[k][2])) for k in nth}, set(), {}
    for b in sorted(nth):  # before: voice -> its timed bar before b
        a, m, before[bars[b][1]] = before.get(bars[b][1]), bars[b][3], b
        end = bars[a][2][-1] if a is not None else ('', '')  # a section line: '||', '|]', a repeat; not '|' or '|1'
        if (end[0] == 'bar' and m is not None and m == bars[a][3] and ('||' in end[1] or ']' in end[1] or ':' in end[1])
                and 0 < length[a] < m and 0 < length[b] < m and length[a] + length[b] == m):
            split |= {a, b}
    plan, free = {}, set()  # bar -> (events kept, their length, closing bar line, may stay short); free time bars
    for k, (li, v, toks, mlen, u) in enumerate(bars):
        ev = _events(toks)
        if not ev:
            continue
        total = sum(e[2] for e in ev)
        if mlen is None:  # free time: written in note values, never padded or trimmed
            plan[k] = (ev, total, None, True)
            free.add(k)
            continue
        closing = toks[-1][1] if toks and toks[-1][0] == 'bar' else None
        if k == first[v] and total < mlen:
            pickup[v] = total
        keep_short = (k == first[v] or k == last[v] or k in split or
                      (closing is not None and closing.startswith(':') and v in pickup and total + pickup[v] == mlen))
        while ev and sum(e[2] for e in ev) > mlen:  # drop whole events from the end until it fits
            ev.pop()
            keep_short = False
        plan[k] = (ev, sum(e[2] for e in ev), closing, keep_short)
    # a bar that may stay short (pickup, last bar) is as long as the longest voice's bar of that
    # number: the voices of one measure must add up alike, or MuseScore marks the measure corrupt
    goal = {}
    for k, (_, total, _, _) in plan.items():
        if k not in free:
            goal[nth[k]] = max(goal.get(nth[k], 0), total)
    texts, prev = {}, {}  # prev: voice -> [line, index in texts[line], text, closing bar line, extra]
    for k, (li, v, toks, mlen, u) in enumerate(bars):
        closing = toks[-1][1] if toks and toks[-1][0] == 'bar' else None
        if k not in plan:  # no music: grace notes there would hang on nothing (music21: a 0-length measure)
            toks = [t for t in toks if t[0] not in ('grace', 'other')]  # (a stray '-' or '(' alone makes a measure too)
            if closing is not None and v not in prev:  # a bar line before any music ('||', ':|') makes an empty
                closing = '|:' if closing.endswith(':') else None  # measure; a start repeat stays, as '|:'
                toks = toks[:-1] + ([('bar', closing, None)] if closing else [])
            text = ''.join(t[1] for t in toks)
            if closing is not None and v in prev:
                # an empty bar (a model's '| |', a volta with no music): abc2xml would make it a measure
                # with no notes (MuseScore: 'empty bar type'; music21: a 0-length bar); its bar line
                # merges into the bar line before it instead
                pv = prev[v]
                # (a volta number on the bar line before was the empty bar's: it goes with it)
                pv[3] = _merge_bars(re.sub(r'(?<=\|)\d+$', '', pv[3]) if pv[3] else pv[3], closing)
                extra = ' '.join(t[1] for t in toks[:-1] if t[0] in ('field', 'deco', 'comment')).strip()
                pv[4] = (pv[4] + ' ' + extra).strip()
                texts[pv[0]][pv[1]] = pv[2] + (' ' + pv[3] + ' ' if pv[3] else ' ') + (pv[4] + ' ' if pv[4] else '')
                continue
            texts.setdefault(li, []).append(text)
            if text.strip():
                prev[v] = [li, len(texts[li]) - 1, ''.join(t[1] for t in (toks[:-1] if closing else toks)).rstrip(), closing, '']
            continue
        ev, total, _, keep_short = plan[k]
        body = list(toks[:-1]) if closing is not None else list(toks)
        if len(ev) < len(_events(toks)):  # trimmed: cut the tokens after the last event kept
            s = _events(toks)[len(ev)][0]
            while s > 0 and (body[s - 1][0] in ('grace', 'deco', 'space') or
                             body[s - 1][0] == 'other' and body[s - 1][1] in '(~.HLMOPSTuv'):
                s -= 1  # the grace notes, decorations and slur start of the first event dropped go with it
            body = body[:s] + [t for t in body[s:] if t[0] in ('field',)]
        text = _written(body, u).rstrip()
        want = total if k in free else goal[nth[k]] if keep_short else mlen
        if total < want:
            text += ' ' + ' '.join(_rest(w / u) for w in split_len(want - total))
        texts.setdefault(li, []).append(text + (' ' + closing + ' ' if closing else ''))
        prev[v] = [li, len(texts[li]) - 1, text, closing, '']
    for li in range(len(lines)):
        if out_lines[li] is None:
            out_lines[li] = re.sub(r' +', ' ', ''.join(texts.get(li, []))).strip()
    out_lines = _fix_ties(out_lines)
    return '\n'.join(out_lines)


def _merge_bars(a, b):
    """the bar line before an empty bar (a; None at a line's end) and the empty bar's own (b) -> the
    one bar line that replaces both: a repeat or final bar wins over a plain '|', a bare volta
    number with no music is dropped, two repeats make ':||:'."""
    if a is None or a == '|':
        return b if not re.fullmatch(r'\|\d+', b) else '|'
    if re.fullmatch(r'\|\d*', b):
        return a
    if a.startswith(':') and b == '|]':
        return a + ']' if not a.endswith(']') else a
    if a.startswith(':') and b.endswith(':'):
        return a + b
    return b


_CHORD_NOTE = re.compile(r"([_^=]*)([A-Ga-g][,']*)(\d*/*\d*)(-?)")


def _pitches(kind, text):
    """a note or chord token -> its pitches without accidentals, as abc2xml matches a tie's ends; a rest -> none."""
    inner = text[1:text.rindex(']')] if kind == 'chord' else text if kind == 'note' else ''
    return {m.group(2) for m in _CHORD_NOTE.finditer(inner)}


def _tie_chord(text, keep):
    """a chord token -> the same chord with a tie ('-' after the note, inside) on the pitches in keep only."""
    end = text.rindex(']')
    return '[' + _CHORD_NOTE.sub(lambda m: ''.join(m.group(1, 2, 3)) + '-' * (m.group(2) in keep), text[1:end]) + text[end:]


def _fix_ties(lines):
    """A tie ('-') must reach its pitch: abc2xml turns one into a rest, another pitch or nothing (a
    model's 'F2- E2', a tie at the end) into a slur or a tie with no end (MuseScore: 'duplicate slur
    start', 'next note for tie not found'); such a '-' is dropped. A chord's ties ('[CE]-', '[C-E-]')
    stay on the pitches the next note or chord has; ties on grace notes ('{g-}': 'spanner (Tie) doesn't
    have an endpoint') and rests go. Per voice, across bars and lines."""
    toks, voice, pend = {}, None, {}  # pend: voice -> (line, token index, index of a '-' after it or None, pitches tied)
    for li, ln in enumerate(lines):
        if ln.lstrip().startswith('%') or re.match(r'^[A-Za-z]:', ln.strip()):
            m = re.match(r'^V:\s*(\S+)', ln.strip())
            voice = m.group(1) if m else voice
            continue
        voice = vm.group(1) if (vm := _VOICE.match(ln)) else voice
        tl, last = [[t.lastgroup, t.group()] for t in _TOKEN.finditer(ln)], None
        toks[li] = tl
        for i, (kind, text) in enumerate(tl):
            if [kind, text] == ['other', '-'] and last not in ('note', 'chord'):
                tl[i][1] = ''  # a '-' not right after a note ties nothing here ('c--', '| -'; abc2xml ties the note before)
            last = kind if kind != 'space' else last
            if kind == 'field' and text[1] == 'V' and text[3:-1].split():
                voice = text[3:-1].split()[0]
            if kind == 'grace':
                tl[i][1] = re.sub(r'[-\[\]]', '', text)  # no ties, no chords: abc2xml misreads '{[c/d/}'
            if kind not in ('note', 'rest', 'chord'):
                continue
            if voice in pend:
                _untie(toks, *pend.pop(voice), _pitches(kind, text))
            j = i + 1
            while j < len(tl) and tl[j][0] == 'space':
                j += 1
            outer = j if j < len(tl) and tl[j] == ['other', '-'] else None
            tied = _pitches(kind, text) if outer is not None else \
                {m.group(2) for m in _CHORD_NOTE.finditer(text[1:text.rindex(']')]) if m.group(4)} if kind == 'chord' else set()
            if tied:
                pend[voice] = (li, i, outer, tied)
    for pend_tie in pend.values():  # a tie at the end of a voice: nothing to tie to
        _untie(toks, *pend_tie, set())
    return [''.join(t[1] for t in toks[li]) if li in toks else ln for li, ln in enumerate(lines)]


def _untie(toks, li, i, outer, tied, here):
    """the tie(s) of token i of line li, on pitches `tied`, given the next event's pitches `here`:
    kept where they reach, dropped where not."""
    keep = tied & here
    if keep == tied:
        return
    if outer is not None:
        toks[li][outer][1] = ''
    if toks[li][i][0] == 'chord':
        toks[li][i][1] = _tie_chord(toks[li][i][1], keep)


def _written(body, unit):
    """a bar's tokens -> its text with every note, rest and chord of a length no single note value has
    split into written values (_split_token); a tuplet whose notes were split counts them ('(3' ->
    '(3:2:4'). Grace notes with no note after them in the bar (before a rest, or at its end) are
    dropped: MuseScore can hang them on no chord ('addGraceChordsAfter'). Tokens that need nothing are
    kept exactly as written."""
    out, tup = [], None  # tup: [index in out, p, q, notes left, pieces so far]
    nxt = [None] * len(body)  # the kind of the next timed token after each
    for i in range(len(body) - 2, -1, -1):
        k = body[i + 1][0]
        nxt[i] = k if k in ('note', 'rest', 'chord') else nxt[i + 1]
    for i, (kind, text, d) in enumerate(body):
        if kind == 'grace' and nxt[i] not in ('note', 'chord'):
            continue
        if kind == 'tuplet':
            p, q, r = _pqr(text)
            tup = [len(out), p, q, r, 0, text]
            out.append(text)
            continue
        if kind in ('note', 'rest', 'chord'):
            new, pieces = _split_token(kind, text, d, unit)
            out.append(new)
            if tup is not None:
                tup[3] -= 1
                tup[4] += pieces
                if tup[3] == 0:
                    if tup[4] != _pqr(tup[5])[2]:
                        out[tup[0]] = f'({tup[1]}:{tup[2]}:{tup[4]}'
                    tup = None
            continue
        out.append(text)
    return ''.join(out)


def to_musicxml(abc, title=None):
    """ABC (no X: needed) -> MusicXML text (partwise 3.0) after repair_bars. ValueError if abc2xml
    cannot read it. abc2xml reports on stderr; that is captured and only its first line is kept."""
    fixed = repair_bars(abc)
    body = [ln for ln in fixed.splitlines() if not re.match(r'^([A-Za-z]:|%)', ln.strip())]
    if not any(t.lastgroup in ('note', 'rest', 'chord') for ln in body for t in _TOKEN.finditer(ln)):
        raise ValueError('no music in the ABC (no note, chord or rest)')
    head = 'X:1\n' + (f'T:{title}\n' if title else '')
    if not re.search(r'(?m)^\s*M:', fixed):  # a later line of a page shows no meter; abc2xml would invent 4/4
        head += 'M:none\n'
    if re.match(r'\s*X:', fixed):  # a whole tune (xml2abc's output) has its own X:; a second one would
        head, fixed = fixed.split('\n', 1)[0] + '\n' + head[4:], fixed.split('\n', 1)[1]  # start an empty first tune
    err = io.StringIO()
    with contextlib.redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter('ignore')  # abc2xml uses pyparsing's deprecated camelCase names
        from abctoolkit.abc2xml import fixDoctype, getXmlDocs
        try:
            docs = getXmlDocs(head + fixed + '\n')
        except Exception:  # abc2xml's parser raises on odd input; reported below as no tune
            docs = []
    if not docs:
        why = [ln for ln in err.getvalue().splitlines() if ln.strip() and 'skipped header' not in ln]
        raise ValueError(f"abc2xml could not convert the ABC ({(why or ['no tune'])[0].strip('- ')})")
    return with_instruments(fixDoctype(docs[0]))


def with_instruments(xml):
    """abc2xml's <score-part>s name no instrument; MuseScore 3 then reports "no instrument found for
    part 'P1'" on import and picks one itself. Each part gets a named part, a <score-instrument> and a
    <midi-instrument> (General MIDI 1, acoustic grand piano; channel per part, skipping 10, drums),
    as MuseScore's own exports write them. Parts that have an instrument are left alone."""
    def add(m):
        block, pid = m.group(0), m.group(1)
        if '<score-instrument' in block:
            return block
        n = int(re.sub(r'\D', '', pid) or 1)
        block = re.sub(r'<part-name\s*/>', f'<part-name>Music {n}</part-name>' if n > 1 else '<part-name>Music</part-name>', block)
        inst = (f'<score-instrument id="{pid}-I1"><instrument-name>Piano</instrument-name></score-instrument>'
                f'<midi-instrument id="{pid}-I1"><midi-channel>{min(n if n < 10 else n + 1, 16)}</midi-channel>'
                f'<midi-program>1</midi-program><volume>80</volume><pan>0</pan></midi-instrument>')
        return block.replace('</score-part>', inst + '</score-part>')
    return re.sub(r'<score-part id="([^"]+)">.*?</score-part>', add, xml, flags=re.S)


def write_musicxml(abc, path, title=None):
    """to_musicxml into path, atomically."""
    atomic_write(path, to_musicxml(abc, title))
