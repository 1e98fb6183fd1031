"""
inference/tune.py: the text of a transcribed tune. Split one transcription into its header fields and
its music, or into its voices; join the transcriptions of a page's staves (or systems) into one tune.
Plain text in, plain text out (no torch), so the engraving child process of sample.py stays light.
"""
import re

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


def join_lines(abcs):
    """Transcriptions of the staves of a tune, top to bottom -> (tune ABC, indices left out).
    Header M:, L:, K: once (from the first readable line; the labels' format), one line per staff,
    inline [K:..] [M:..] [L:..] where a staff's differ from the one before. A line without K: or
    without music is left out.
    Multi-voice transcriptions (one per system, see split_voices) join voice by voice: the first
    readable system's header as it is, then one '[V:n]' line per voice, each system's bars of voice
    n appended to line n (inline fields where they change, in every voice). A system whose voices
    are not the first one's, or a single-voice line on a multi-voice page (and the reverse), is left
    out: appending it would put one part's music in another's line."""
    head, cur, out, skipped, poly = None, {}, [], [], None
    for i, abc in enumerate(abcs):
        sv = split_voices(abc or '')
        fields, body = (sv[1], ' '.join(sv[2].values())) if sv else split_abc(abc or '')
        if 'K' not in fields or not body.strip() or (head is not None and (sv is None) != (poly is None)) \
                or (poly is not None and set(sv[2]) != set(poly)):
            skipped.append(i)
            continue
        if head is None:
            cur = {k: fields[k] for k in 'MLK' if k in fields}
            if sv:
                head, poly = '\n'.join(sv[0]), dict(sv[2])
            else:
                head = '\n'.join(f'{k}:{cur[k]}' for k in 'MLK' if k in cur)
                out.append(body)
            continue
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
    if head is None:
        return '', skipped
    if poly is not None:
        out = [f'[V:{v}] {music}' for v, music in poly.items()]
    return head + '\n' + '\n'.join(out), skipped
