"""
training/evaluation.py: score a model on one split, the way train.py does at every eval and at the end.
The loss on fixed batches (teacher forcing) and the greedy transcriptions of fixed images, scored by
metrics.py (SER, CER, BPE-SER, sequence accuracy), in total and per engraving font; with a CTC head
the CTC best-path transcriptions are scored too. Under DDP every process does its share and all of
them return the same numbers.
"""

import numpy as np
import torch
import torch.distributed as dist

import data
from core import metrics
from training import runlog


@torch.no_grad()
def evaluate(m, ds, loss_batches, decode_batches, collate_fn, tokenizer, ctx, device, max_new_tokens,
             num_workers=0, seed=0, ddp=False, rank=0, world_size=1):
    """m: the plain model; loss_batches / decode_batches: lists of index lists (data.eval_batches).
    Returns (loss, scores dict, list of (index, prediction, reference, ctc prediction or None)).
    scores['by_font'] has the same metrics per font (and 'by_kind' per excerpt kind, where the corpus
    has one), scores['ctc'] those of the CTC decodings."""

    def loader(batches):  # this process's share
        return torch.utils.data.DataLoader(ds, batch_sampler=batches[rank::world_size], collate_fn=collate_fn,
                                           num_workers=num_workers, generator=torch.Generator().manual_seed(seed))

    m.eval()
    # fork_rng: whatever eval draws from the global RNGs is given back, so that training continues
    # with the same random stream whether or not (and how often) it was evaluated
    cuda = str(device).startswith('cuda')
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if cuda else []):
        loss_sum = torch.zeros(2, device=device, dtype=torch.float64)  # (sum of batch losses, number of batches)
        for batch in loader(loss_batches):
            images, idx, targets, widths = data.to_device(batch, device)
            with ctx:
                _, loss = m(images, idx, targets, widths)
            loss_sum += torch.tensor([loss.item(), 1.0], device=device, dtype=torch.float64)
        rows = []
        for batch in loader(decode_batches):
            images, _, _, widths = data.to_device(batch, device)
            with ctx:
                out = m.generate(images, max_new_tokens=max_new_tokens, widths=widths)
                out_ctc = m.ctc_decode(images, widths) if m.config.ctc_weight > 0 else [None] * len(out)
            rows += [(i, tokenizer.decode(o), t, None if c is None else tokenizer.decode(c))
                     for i, o, t, c in zip(batch['index'].tolist(), out, batch['text'], out_ctc)]
    if ddp:
        dist.all_reduce(loss_sum)
        everyone = [None] * world_size
        dist.all_gather_object(everyone, rows)
        rows = sorted(r for part in everyone for r in part)
    m.train()
    loss = (loss_sum[0] / loss_sum[1]).item() if loss_sum[1] > 0 else float('nan')
    scores = score_rows(rows, tokenizer) if rows else {}
    for name, col in (('by_font', ds.fonts), ('by_kind', getattr(ds, 'kinds', None))):  # kind: data/m21_poly's a/b/c
        groups = sorted({col[r[0]] for r in rows if col[r[0]]}) if rows and col else []
        if groups:
            scores[name] = {g: score_rows([r for r in rows if col[r[0]] == g], tokenizer) for g in groups}
    return loss, scores, rows


def score_rows(rows, tokenizer=None):
    """metrics.score of evaluate()'s rows; with a CTC head, the CTC decodings scored too, as ['ctc']."""
    sc = metrics.score([r[1] for r in rows], [r[2] for r in rows], tokenizer)
    if rows[0][3] is not None:
        sc['ctc'] = metrics.score([r[3] for r in rows], [r[2] for r in rows], tokenizer)
    return sc


def holdout_scores(rows, ds, font, tokenizer=None, n_boot=1000, seed=0):
    """The held-out-font experiment: scores of the rows in `font` against those of all the others, and
    the ratio of their SERs (unseen / seen) with a 95% bootstrap interval. The bootstrap resamples
    excerpts (rows grouped by their label), so on a test split engraved in every font (prepare.py
    --test_all_fonts) each draw keeps an excerpt's five renderings together: a paired comparison."""
    held = lambda i: font in (ds.fonts[i], ds.groups[i])  # a font, an engraver or a source group (core.metrics.source_group)
    groups = dict(seen_fonts=[r for r in rows if not held(r[0])], holdout_font=[r for r in rows if held(r[0])])
    out = {k: dict(score_rows(rs, tokenizer), n=len(rs)) for k, rs in groups.items() if rs}
    if len(out) < 2:
        return out
    labels = sorted({r[2] for r in rows})
    at = {t: i for i, t in enumerate(labels)}
    rng = np.random.default_rng(seed)
    draws = rng.integers(len(labels), size=(n_boot, len(labels)))
    weights = np.stack([np.bincount(d, minlength=len(labels)) for d in draws])  # (n_boot, excerpts)
    for col, key in ((1, 'ratio'), (3, 'ratio_ctc')):
        if rows[0][col] is None:
            continue
        # per excerpt and side: symbol edits and reference symbols, (2, excerpts) each
        edits, length = np.zeros((2, len(labels))), np.zeros((2, len(labels)))
        for r in rows:
            side, ref = int(held(r[0])), metrics.abc_symbols(r[2])
            edits[side, at[r[2]]] += metrics.levenshtein(metrics.abc_symbols(r[col]), ref) if r[col] != r[2] else 0
            length[side, at[r[2]]] += len(ref)
        ser = (weights @ edits.T) / np.maximum(weights @ length.T, 1)  # (n_boot, 2): seen, unseen
        ratio = ser[:, 1] / np.maximum(ser[:, 0], 1e-9)
        point = (edits[1].sum() / max(length[1].sum(), 1)) / max(edits[0].sum() / max(length[0].sum(), 1), 1e-9)
        out[key] = dict(value=float(point), ci95=[float(np.percentile(ratio, 2.5)), float(np.percentile(ratio, 97.5))])
    return out


# -----------------------------------------------------------------------------
# the lines train.py prints


def better_decoding(record):
    """'ctc' when an eval record's CTC best path scored a lower val SER than the attention decoder, else
    'attention' (also when either was not measured). Checkpoints store it as 'decode', which
    sample.py --decode=auto follows: CTC leads early in training, the attention decoder later."""
    ser, ctc = (record or {}).get('val_ser'), (record or {}).get('val_ser_ctc')
    return 'ctc' if ser is not None and ctc is not None and ctc < ser else 'attention'


def eval_record(it, epoch, window, val_loss, scores, samples_seen, lr, mfu, peak_mem_mb, elapsed_s):
    """One eval's record in log.jsonl: the mean train loss and the speed over the window of steps since
    the last eval, and the val scores (the attention decoder's, then the CTC head's)."""
    ctc = scores.get('ctc', {})
    return dict(iter=it, epoch=epoch, train_loss=window['loss'] / window['n'] if window['n'] else None,
                val_loss=val_loss, val_ser=scores.get('ser'), val_cer=scores.get('cer'),
                val_bpe_ser=scores.get('bpe_ser'), val_seq_acc=scores.get('seq_acc'), val_ser_ctc=ctc.get('ser'),
                val_seq_acc_ctc=ctc.get('seq_acc'), samples_seen=samples_seen, lr=lr,
                samples_per_sec=window['samples'] / window['time'] if window['time'] else None, mfu=mfu,
                peak_mem_mb=peak_mem_mb, elapsed_s=elapsed_s)


def final_record(weights, weights_iter, n_samples, test_loss, scores, log_path, **run):
    """final_eval.json: the test split's scores with the checkpoint `weights`, the run's mean speed over
    its evals (log.jsonl), and what describes the run (`run`, in order)."""
    speeds = [r['samples_per_sec'] for r in runlog.read_jsonl(log_path) if r.get('samples_per_sec')]
    out = dict(split='test', weights=weights, weights_iter=weights_iter, n_samples=n_samples, test_loss=test_loss)
    out.update((k, scores.get(k)) for k in ('ser', 'cer', 'bpe_ser', 'seq_acc', 'ctc', 'by_font', 'by_kind'))
    out.update(holdout_font=run.pop('holdout_font'), best_val_loss=run.pop('best_val_loss'), iters=run.pop('iters'),
               samples_per_sec=sum(speeds) / len(speeds) if speeds else None)
    return {**out, **run}


def pct(x):
    return f"{100 * x:.2f}%" if x is not None else "n/a"


def eval_report(record, rows):
    """One eval of log.jsonl (+ the first decoded image, reference and prediction) as train.py prints it."""
    train_str = f"{record['train_loss']:.4f}" if record['train_loss'] is not None else "n/a"
    ctc_str = (f", CTC SER {pct(record['val_ser_ctc'])}, seq acc {pct(record['val_seq_acc_ctc'])}"
               if record['val_ser_ctc'] is not None else "")
    out = (f"eval {record['iter']}: train loss {train_str}, val loss {record['val_loss']:.4f}, "
           f"val SER {pct(record['val_ser'])}, CER {pct(record['val_cer'])}, "
           f"seq acc {pct(record['val_seq_acc'])}{ctc_str} ({len(rows)} images)")
    if rows:
        out += f"\n  ref:  {rows[0][2][:120]!r}\n  pred: {rows[0][1][:120]!r}"
    return out


def test_report(final, out_dir):
    """final_eval.json as train.py prints it at the end: the test scores, CTC's and the held-out font's."""
    out = [f"test ({final['n_samples']} images, {final['weights']} @ iter {final['weights_iter']}): loss "
           f"{final['test_loss']:.4f}, SER {pct(final['ser'])}, CER {pct(final['cer'])}, seq acc "
           f"{pct(final['seq_acc'])} -> {out_dir}/final_eval.json"]
    if final['ctc']:
        out.append(f"test, CTC greedy decoding: SER {pct(final['ctc']['ser'])}, CER {pct(final['ctc']['cer'])}, "
                   f"seq acc {pct(final['ctc']['seq_acc'])}")
    h = final.get('holdout', {})
    for k in ('seen_fonts', 'holdout_font'):
        if k in h:
            sc = h[k]
            out.append(f"test, {'held-out font ' + final['holdout_font'] if k == 'holdout_font' else 'the other fonts'} "
                       f"({sc['n']} images): SER {pct(sc['ser'])}, seq acc {pct(sc['seq_acc'])}"
                       + (f"; CTC SER {pct(sc['ctc']['ser'])}" if 'ctc' in sc else ""))
    for k, name in (('ratio', 'attention'), ('ratio_ctc', 'CTC')):
        if k in h:
            out.append(f"test, unseen / seen SER, {name}: {h[k]['value']:.2f}x "
                       f"(95% bootstrap interval {h[k]['ci95'][0]:.2f}-{h[k]['ci95'][1]:.2f})")
    return '\n'.join(out)
