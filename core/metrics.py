"""
core/metrics.py: how good a transcription is, independent of the tokenizer. A small ABC lexer splits a
transcription into musical symbols; SER is the edit distance over those symbols, CER over characters.

    abc_symbols(text)      ABC -> list of symbols (notes, rests, chords, bars, fields, beam breaks, ...)
    levenshtein(a, b)      edit distance of two sequences (bit-parallel, Myers 1999)
    score(preds, refs)     corpus-level SER, CER, BPE-SER and exact-match sequence accuracy
    corrupt(text, rate)    a fake prediction with some notes edited, for benchmarks and tests
"""

import re

# SER (symbol error rate) is computed over musical symbols from a small ABC lexer, not over BPE ids, so
# numbers compare across tokenizers and vocab sizes. One symbol = one thing a musician reads:
#   note       accidental + letter + octave marks + duration, e.g. ^c'2, _B,/2, =f3/2
#   rest       z2, x, Z4 (multi-measure)
#   chord      [CEG]2 as ONE symbol (like a note: one wrong chord tone = one error)
#   grace      {gAB} as ONE symbol (an ornament on the following note)
#   bar        | || |] [| |: :| :: :|: (plus a volta [1 [2 |1 :|2 as its own symbol "[1")
#   tie -, slur ( and ), tuplet (3 / (3:2:3, broken rhythm > <
#   decoration !trill! +fermata+ and the one-letter ones ~ . H L M O P S T u v J R
#   annotation "Am" / "^text" as one symbol
#   field      a header/body field line (K:G, M:6/8, L:1/8, w:...) or an inline field [K:D], one symbol each
#   " "        a beam break: whitespace right after a note, rest, chord, tie or slur end and before another
#              musical symbol. In ABC a space between two notes splits their beam, which the image shows,
#              so it is counted; whitespace next to a bar line, a field or a line end only lays out the
#              text and is dropped (CER still sees every character).
#   "\n"       a line (system) break inside the body; newlines that end header fields are dropped.
# Comments (% ...) and line continuations (\) are ignored; any other character is a symbol of its own,
# so garbage in a prediction is still counted as errors.

_DUR = r"\d*(?:/+\d*)?"
_ABC_TOKEN = re.compile("|".join([
    r"(?P<field>^[A-Za-z+]:[^\n]*)",                  # field line (only at line start)
    r"(?P<comment>%[^\n]*)",
    r"(?P<inline>\[[A-Za-z]:[^\]\n]*\])",             # inline field [K:D]
    r"(?P<volta>\[\d+(?:[,-]\d+)*|(?<=\|)\d+(?:[,-]\d+)*)",  # [1  or the 2 of :|2
    r"(?P<chord>\[[^\[\]|\n]*\]" + _DUR + ")",
    r"(?P<bar>:*\[?\|+\]?:*|::+)",
    r"(?P<note>[_^=]*[A-Ga-g][,']*" + _DUR + ")",
    r"(?P<rest>[zxZX]" + _DUR + ")",
    r"(?P<tuplet>\(\d+(?::\d*)*)",
    r"(?P<grace>\{[^}\n]*\})",
    r"(?P<deco>![^!\n]*!|\+[^+\n]*\+|[.~HLMOPSTuvJR])",
    r"(?P<annot>\"[^\"\n]*\")",
    r"(?P<space>[ \t]+)",
    r"(?P<newline>\r?\n)",
    r"(?P<cont>\\)",
    r"(?P<other>\S)",
]), re.M)
# The same pattern without named groups, for findall: it returns plain strings from a C loop, and a
# symbol's kind is recovered from the string itself (memoized, the set of distinct symbols is small).
# This keeps lexing cheap: several times faster than a finditer + m.lastgroup loop.
_ABC_FINDALL = re.compile(re.sub(r"\(\?P<\w+>", "(?:", _ABC_TOKEN.pattern), re.M)
_KIND = {}  # symbol string -> kind


def _kind(s):
    """Kind of one matched string (memoized). Field lines are only recognized as such at a line start,
    which findall already guaranteed; "A:" can never come out of the note rule, so this is unambiguous."""
    k = _KIND.get(s)
    if k is None:
        if len(s) > 1 and s[1] == ":" and (s[0].isalpha() or s[0] == "+"):
            k = "field"
        elif s[0].isdigit():  # a bare number is the volta after a bar (|1, :|2); durations stick to notes
            k = "volta"
        else:
            k = _ABC_TOKEN.fullmatch(s).lastgroup
            if k == "other":
                k = {"-": "tie", ")": "slur_end"}.get(s, k)
        if len(_KIND) < 100_000:  # bound the memo against adversarial input
            _KIND[s] = k
    return k


_NOTE_END = {"note", "rest", "chord", "tie", "slur_end"}  # a beam break can only follow one of these
_NO_SPACE_NEXT = {"bar", "volta", "field", "inline", "newline", "space", "comment", "cont", None}
_NORMALIZE = {"field", "chord", "grace", "volta", "newline", "comment", "cont"}


def abc_symbols(text):
    """Split ABC text into musical symbols (list[str]); see the table above. Deterministic and
    tokenizer-independent: the unit of SER."""
    toks = _ABC_FINDALL.findall(text)
    kinds = [_KIND.get(s) or _kind(s) for s in toks]
    out = []
    prev = None
    n = len(toks)
    for j, (s, kind) in enumerate(zip(toks, kinds)):
        if kind in _NORMALIZE:
            if kind in ("comment", "cont"):
                continue
            if kind == "field":
                s = s[:2] + s[2:].strip()
            elif kind == "volta":
                s = "[" + s.lstrip("[")
            elif kind == "newline":
                nxt = kinds[j + 1] if j + 1 < n else None
                if prev in (None, "field", "newline") or nxt in (None, "field", "newline"):
                    continue
                s = "\n"
            else:  # chord, grace: spaces inside do not matter
                s = "".join(s.split())
        elif kind == "space":
            nxt = kinds[j + 1] if j + 1 < n else None
            if prev not in _NOTE_END or nxt in _NO_SPACE_NEXT:
                continue
            s = " "
        out.append(s)
        prev = kind
    return out


def levenshtein(a, b):
    """Edit distance (unit-cost insert/delete/substitute) between two sequences of hashables.

    Bit-parallel algorithm of Myers (1999, "A fast bit-vector algorithm for approximate string matching
    based on dynamic programming") in Hyyro's formulation (2001) for global distance: one column of the
    DP matrix is held as two bit-vectors (vertical +1 / -1 deltas) in Python ints of len(a) bits, so a
    whole column costs ~15 int operations instead of len(a) Python-level steps."""
    if len(a) < len(b):
        a, b = b, a  # bit-vectors over the longer sequence, Python loop over the shorter
    # common prefix and suffix cost nothing: strip them (most of a good prediction)
    i, n = 0, min(len(a), len(b))
    while i < n and a[i] == b[i]:
        i += 1
    a, b = a[i:], b[i:]
    j, n = 0, len(b)
    while j < n and a[-1 - j] == b[-1 - j]:
        j += 1
    if j:
        a, b = a[:-j], b[:-j]
    m = len(a)
    if not b:
        return m
    peq = {}  # symbol -> bitmask of its positions in a
    bit = 1
    for c in a:
        peq[c] = peq.get(c, 0) | bit
        bit <<= 1
    mask, hi = bit - 1, bit >> 1
    pv, mv, dist = mask, 0, m  # column 0: D[i][0] = i, all vertical deltas +1
    for c in b:
        eq = peq.get(c, 0)
        xv = eq | mv
        xh = (((eq & pv) + pv) ^ pv) | eq
        ph = mv | (mask & ~(xh | pv))
        mh = pv & xh
        if ph & hi:
            dist += 1
        elif mh & hi:
            dist -= 1
        ph = (ph << 1) | 1  # | 1: the top row D[0][j] = j grows by one per column (global alignment)
        mh <<= 1
        pv = mask & (mh | ~(xv | ph))
        mv = ph & xv
    return dist


def score(preds, refs, tokenizer=None):
    """Corpus-level metrics of predicted vs reference ABC strings, as fractions (0.05 = 5%).

    ser     sum of symbol edit distances / sum of reference symbols (abc_symbols)
    cer     same over characters (whitespace and newlines included)
    bpe_ser same over tokenizer ids, LEGATO-style (None when no tokenizer is given)
    seq_acc fraction of predictions exactly equal to their reference
    n       number of pairs
    Corpus-level (total edits / total reference length) rather than a mean of per-sample rates, so short
    samples do not dominate. Rates can exceed 1 when predictions are much longer than the references."""
    if len(preds) != len(refs):
        raise ValueError(f"score: {len(preds)} predictions but {len(refs)} references")
    se = sn = ce = cn = te = tn = exact = 0
    for p, r in zip(preds, refs):
        rs = abc_symbols(r)
        sn += len(rs)
        cn += len(r)
        rt = tokenizer.encode(r) if tokenizer is not None else None
        tn += len(rt) if rt is not None else 0
        if p == r:
            exact += 1
            continue
        se += levenshtein(abc_symbols(p), rs)
        ce += levenshtein(p, r)
        if tokenizer is not None:
            te += levenshtein(tokenizer.encode(p), rt)
    return dict(ser=se / max(sn, 1), cer=ce / max(cn, 1),
                bpe_ser=te / max(tn, 1) if tokenizer is not None else None,
                seq_acc=exact / max(len(refs), 1), n=len(refs))


def corrupt(text, rate, rng):
    """A fake prediction for benchmarks and tests: each note or rest is substituted, deleted or doubled
    with probability `rate`; everything else (fields, bars, layout whitespace) is kept as written."""
    out = []
    for s in _ABC_FINDALL.findall(text):
        r = rng.random() if _kind(s) in ("note", "rest") else 1.0
        if r < rate / 3:
            out.append(rng.choice(["A", "c2", "z", "^f", "G,3"]))
        elif r < 2 * rate / 3:
            continue
        elif r < rate:
            out += [s, s]
        else:
            out.append(s)
    return "".join(out)


# the folk-tune collections of data/m21/prepare.py (its ABC_SOURCES; tests/test_generalize.py keeps them equal)
FOLK_SOURCES = ('oneills1850', 'ryansMammoth', 'airdsAirs', 'essenFolksong', 'miscFolk', 'nottingham-dataset')


def source_group(source):
    """A corpus row's source column -> its group: 'folk' ('oneills1850', 'transposed:oneills1850'), 'parts'
    (single parts of scores: 'part:bach', 'transposed:bach'), 'synth'; other corpora keep their own name."""
    kind, _, origin = (source or '').rpartition(':')
    if source == 'synth' or origin in FOLK_SOURCES:
        return source if source == 'synth' else 'folk'
    return 'parts' if kind in ('part', 'transposed') else source
