"""
tests/test_data.py: the runtime data engine (data.py): tokenizer round trip, metrics, dataset, collate,
width bucketing, augmentation and the error messages. CPU only, a few seconds on top of the shared
`tiny_corpus` fixture (tests/conftest.py), which prepares real music21 tunes once per session.
"""
import io
import os
import pickle
import random

import numpy as np
import pytest
import torch
from PIL import Image

import data
from core import images, metrics


def all_transcriptions(data_dir):
    return [t for s in ("train", "val", "test") for t in data.load_split(data_dir, s)["transcription"]]


@pytest.fixture(scope="module")
def tok(tiny_corpus):
    return data.Tokenizer(os.path.join(tiny_corpus, "tokenizer.model"))


# -----------------------------------------------------------------------------
# tokenizer

TRICKY = [
    "L:1/8\nK:G\n|: A2  B c |\n\n",      # double space, trailing blank line
    "  leading spaces and trailing  ",
    "\n",
    "",
    "tab\there",
    "\r\n windows line end",
    "K:D\n\"Ré ♯ ♭ 𝄞 日本\" A|]",         # unicode (mostly unseen: byte fallback)
]


def test_tokenizer_round_trip_all_splits(tiny_corpus, tok):
    texts = all_transcriptions(tiny_corpus)
    assert len(texts) > 20
    bad = [t for t in texts if tok.decode(tok.encode(t)) != t]
    assert bad == []
    for t in TRICKY:
        assert tok.decode(tok.encode(t)) == t, repr(t)
    # the special ids are distinct, outside the text, and dropped by decode
    assert len({tok.pad_id, tok.bos_id, tok.eos_id}) == 3
    ids = tok.encode(texts[0])
    assert not {tok.pad_id, tok.bos_id, tok.eos_id} & set(ids)
    assert tok.decode([tok.bos_id] + ids + [tok.eos_id, tok.pad_id, tok.pad_id]) == texts[0]
    assert tok.decode(ids + [tok.vocab_size + 5]) == texts[0]  # out-of-range ids from a padded output layer


def test_train_tokenizer_small_corpus_and_newlines(tmp_path, capsys):
    texts = ["M:6/8\nL:1/8\nK:G\n|: efe d2B A2A | E2A A2A Bcd :|", "K:D\nabc  def|]\n"] * 5
    path = data.train_tokenizer(texts, str(tmp_path / "tokenizer"), vocab_size=4096)
    assert path == str(tmp_path / "tokenizer.model")
    assert sorted(os.listdir(tmp_path)) == ["tokenizer.model", "tokenizer.vocab"]  # no temp files left
    out = capsys.readouterr().out
    t = data.Tokenizer(path)
    assert f"using {t.vocab_size}" in out and t.vocab_size < 4096  # shrank instead of failing
    for s in texts + TRICKY:
        assert t.decode(t.encode(s)) == s, repr(s)
    # a newline is always exactly one token of its own
    nl = t.encode("\n")
    assert len(nl) == 1 and nl[0] in t.encode("K:G\nabc")
    with pytest.raises(ValueError):
        data.train_tokenizer(["", ""], str(tmp_path / "empty"))


# -----------------------------------------------------------------------------
# metrics


def test_abc_symbols_hand_example():
    s = 'M:6/8\nL:1/8\nK:G\n|: efe d2B | [C E G]2 {ga}f (3abc !trill!d2- d>e "Am"~f [K:D] :|2 z2 x/ ^c\'2 _B,/2|]'
    assert metrics.abc_symbols(s) == [
        "M:6/8", "L:1/8", "K:G", "|:", "e", "f", "e", " ", "d2", "B", "|", "[CEG]2", " ", "{ga}", "f", " ",
        "(3", "a", "b", "c", " ", "!trill!", "d2", "-", " ", "d", ">", "e", " ", '"Am"', "~", "f", "[K:D]",
        ":|", "[2", "z2", " ", "x/", " ", "^c'2", " ", "_B,/2", "|]"]
    # beam-break spaces count only between notes; layout whitespace and comments do not
    assert metrics.abc_symbols("K:G\n A  B |  c % comment\n") == ["K:G", "A", " ", "B", "|", "c"]
    # a line break inside the body is a symbol, the one ending a header field is not
    assert metrics.abc_symbols("K:G\nAB|\ncd|") == ["K:G", "A", "B", "|", "\n", "c", "d", "|"]
    assert metrics.abc_symbols("") == []


REF = "L:1/8\nK:G\nA2 Bc d2|]"  # 9 symbols: L:1/8 K:G A2 ' ' B c ' ' d2 |]


def test_ser_exact_values():
    assert len(metrics.abc_symbols(REF)) == 9
    # a prediction that differs only in layout (a doubled space, a comment) has the same symbols: SER 0,
    # while CER counts the characters (and seq_acc the string)
    m = metrics.score(["L:1/8\nK:G\nA2  Bc d2|] % end"], [REF])
    assert (m["ser"], m["seq_acc"]) == (0.0, 0.0) and m["cer"] == pytest.approx(7 / len(REF))
    assert metrics.score(["L:1/8\nK:G\nA2 Bc e2|]"], [REF])["ser"] == pytest.approx(1 / 9)   # substitution
    assert metrics.score(["L:1/8\nK:G\nA2 B^c d2|]"], [REF])["ser"] == pytest.approx(1 / 9)  # accidental: still 1
    assert metrics.score(["L:1/8\nK:G\nA2 Bcc d2|]"], [REF])["ser"] == pytest.approx(1 / 9)  # insertion
    assert metrics.score(["L:1/8\nK:G\nA2 B d2|]"], [REF])["ser"] == pytest.approx(1 / 9)    # deletion
    # corpus level: total edits / total reference symbols, not a mean of per-sample rates
    m = metrics.score(["L:1/8\nK:G\nA2 Bc e2|]", "K:G\nAB|"], [REF, "K:G\nAB|"])
    assert m["ser"] == pytest.approx(1 / 13) and m["seq_acc"] == 0.5 and m["n"] == 2
    assert m["bpe_ser"] is None
    with pytest.raises(ValueError):
        metrics.score(["a"], [])


def test_cer_and_bpe_ser_exact(tok):
    m = metrics.score(["abd d", "xy"], ["abc d", "xy"])
    assert m["cer"] == pytest.approx(1 / 7)            # one substitution over 5 + 2 reference chars
    m = metrics.score(["abc  d"], ["abc d"])
    assert m["cer"] == pytest.approx(1 / 5)            # a doubled space is a real (insertion) error
    p, r = "L:1/8\nK:G\nA2 Bc e2|]", REF
    m = metrics.score([p], [r], tok)
    want = metrics.levenshtein(tok.encode(p), tok.encode(r)) / len(tok.encode(r))
    assert m["bpe_ser"] == pytest.approx(want) and m["bpe_ser"] > 0
    m = metrics.score([r + "\n"], [r], tok)  # a trailing line break: no symbol, one character
    assert (m["ser"], m["cer"]) == (0.0, pytest.approx(1 / len(r)))


def test_levenshtein_matches_dp():
    def dp(a, b):
        prev = list(range(len(b) + 1))
        for i, x in enumerate(a, 1):
            cur = [i]
            for j, y in enumerate(b, 1):
                cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
            prev = cur
        return prev[-1]
    rng = random.Random(0)
    for _ in range(300):
        a = [rng.randrange(4) for _ in range(rng.randrange(0, 90))]
        b = [rng.randrange(4) for _ in range(rng.randrange(0, 90))]
        assert metrics.levenshtein(a, b) == dp(a, b)
    assert metrics.levenshtein("kitten", "sitting") == 3
    assert metrics.levenshtein("", "abc") == 3 and metrics.levenshtein("abc", "abc") == 0


def test_metric_score_on_800_noisy_samples(tiny_corpus, tok):
    """score() on 800 real labels with ~5% of their notes edited (metrics.corrupt): corpus-level rates,
    total edits over total reference symbols, in proportion to the notes edited. How long it takes is
    bench_data.py's 'metrics real' line (a benchmark's figure: a wall-clock bound fails on a busy machine)."""
    texts = all_transcriptions(tiny_corpus)
    refs = [texts[i % len(texts)] for i in range(800)]
    rng = random.Random(0)
    preds = [metrics.corrupt(r, 0.05, rng) for r in refs]
    m = metrics.score(preds, refs, tok)
    ref_syms = [metrics.abc_symbols(r) for r in refs]
    n_sym = sum(map(len, ref_syms))
    edits = sum(metrics.levenshtein(metrics.abc_symbols(p), rs) for p, rs in zip(preds, ref_syms))
    assert m["n"] == 800 and m["ser"] == pytest.approx(edits / n_sym, rel=1e-12)  # not a mean of rates
    assert m["seq_acc"] == sum(p == r for p, r in zip(preds, refs)) / 800
    # one edit per corrupted note on average (a doubled note can also re-split its neighbours):
    # measured SER 3.37% against 5% of the notes and rests = 2.80% of the symbols
    noted = 0.05 * sum(metrics._kind(x) in ("note", "rest") for rs in ref_syms for x in rs) / n_sym
    assert 0.8 * noted < m["ser"] < 1.5 * noted, (m["ser"], noted)


# -----------------------------------------------------------------------------
# images, dataset, collate


def test_resize_keeps_aspect_and_caps_width():
    im = Image.new("L", (400, 100), 0)
    out = images.resize_to_height(im, 50, max_width=1000)
    assert out.size == (200, 50)
    # over-wide: scaled down uniformly to max_width, centred vertically on white
    im = Image.new("L", (1000, 50), 0)
    out = np.array(images.resize_to_height(im, 100, max_width=300))
    assert out.shape == (100, 300)
    assert (out[:40] == 255).all() and (out[-40:] == 255).all()   # 15 rows of ink, 42-43 white above/below
    assert (out[43:57] == 0).all()


def test_dataset_items(tiny_corpus, tok):
    ds = data.OMRDataset(tiny_corpus, "train", tok, img_height=64, max_width=512)
    raw = data.load_split(tiny_corpus, "train")
    assert len(ds) == len(raw)
    widths = ds.widths()
    for i in range(3):
        item = ds[i]
        x = item["image"]
        assert x.shape[:2] == (3, 64) and x.dtype == torch.float32 and x.shape[2] == widths[i] <= 512
        assert 0.0 <= x.min() < 0.5 and x.max() == 1.0           # dark ink on white paper
        assert torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])
        w, h = raw[i]["image"].size
        assert x.shape[2] == min(round(w * 64 / h), 512)          # aspect ratio kept
        assert item["ids"] == tok.encode(raw[i]["transcription"]) and item["text"] == raw[i]["transcription"]
        assert item["index"] == i
    # widths() (read from PNG headers, used for bucketing) agrees with the decoded images, cap included
    assert [ds[i]["image"].shape[2] for i in range(len(ds))] == widths.tolist()
    assert widths.max() == 512


def test_max_len_filter_keeps_row_index(tiny_corpus, tok):
    full = data.OMRDataset(tiny_corpus, "train", tok, img_height=32)
    lens = [len(tok.encode(t)) + 1 for t in data.load_split(tiny_corpus, "train")["transcription"]]
    cut = sorted(lens)[len(lens) // 2]
    ds = data.OMRDataset(tiny_corpus, "train", tok, img_height=32, max_len=cut)
    keep = [i for i, n in enumerate(lens) if n <= cut]
    assert 0 < len(ds) == len(keep) < len(full)
    assert [ds[k]["index"] for k in range(len(ds))][:5] == keep[:5]
    assert all(len(ds[k]["ids"]) + 1 <= cut for k in range(len(ds)))


def test_collate_shapes_padding_targets(tiny_corpus, tok):
    ds = data.OMRDataset(tiny_corpus, "train", tok, img_height=48, max_width=1024)
    items = [ds[i] for i in range(4)]
    b = data.Collate(tok.pad_id, tok.bos_id, tok.eos_id)(items)
    W = max(it["image"].shape[2] for it in items)
    T = max(len(it["ids"]) for it in items) + 1
    assert b["images"].shape == (4, 3, 48, W) and b["images"].dtype == torch.float32
    assert b["widths"].tolist() == [it["image"].shape[2] for it in items] and b["widths"].dtype == torch.int64
    assert b["idx"].shape == b["targets"].shape == (4, T)
    assert b["index"].tolist() == [0, 1, 2, 3] and b["text"] == [it["text"] for it in items]
    for k, it in enumerate(items):
        w, n = it["image"].shape[2], len(it["ids"])
        assert torch.equal(b["images"][k, :, :, :w], it["image"])
        assert (b["images"][k, :, :, w:] == 1.0).all()                      # white padding
        assert b["idx"][k].tolist() == [tok.bos_id] + it["ids"] + [tok.pad_id] * (T - 1 - n)
        assert b["targets"][k].tolist() == it["ids"] + [tok.eos_id] + [-1] * (T - 1 - n)
    # the function form with the contract's (batch, pad_id) signature gives the same batch
    b2 = data.collate(items, tok.pad_id)
    assert all(torch.equal(b[k], b2[k]) for k in ("images", "idx", "targets", "widths"))


def test_dataloader_with_distributed_sampler(tiny_corpus, tok):
    ds = data.OMRDataset(tiny_corpus, "train", tok, img_height=32)
    seen = []
    for rank in range(2):
        s = torch.utils.data.DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=0)
        dl = torch.utils.data.DataLoader(ds, batch_size=4, sampler=s, collate_fn=data.Collate(tok.pad_id))
        for b in dl:
            assert b["images"].shape[0] == b["idx"].shape[0] == len(b["text"])
            seen += b["index"].tolist()
    assert set(seen) == set(range(len(ds)))


def test_worker_batches_match_in_process(tiny_corpus, tok):
    # a worker builds the batch in shared memory; the result must equal the in-process collate
    ds = data.OMRDataset(tiny_corpus, "train", tok, img_height=32)
    c = data.Collate(tok.pad_id, tok.bos_id, tok.eos_id)
    b = next(iter(torch.utils.data.DataLoader(ds, batch_size=5, num_workers=1, collate_fn=c)))
    ref = c([ds[i] for i in range(5)])
    for k in ("images", "widths", "idx", "targets", "index"):
        assert torch.equal(b[k], ref[k]), k
    # only one gray channel crossed the process boundary: images is a stride-0 expand of it
    B, _, H, W = b["images"].shape
    assert b["images"].untyped_storage().nbytes() == B * H * W * 4 and b["images"].stride(1) == 0
    tok2 = pickle.loads(pickle.dumps(tok))  # spawn-started workers pickle it
    assert tok2.encode(ref["text"][0]) == tok.encode(ref["text"][0])


def test_augmentation(tiny_corpus, tok):
    plain = data.OMRDataset(tiny_corpus, "train", tok, img_height=48)
    assert plain.augment is False                               # off by default
    aug = data.OMRDataset(tiny_corpus, "train", tok, img_height=48, augment=True, seed=3)
    changed = 0
    for i in range(6):
        x, y = plain[i]["image"], aug[i]["image"]
        assert x.shape == y.shape and 0.0 <= y.min() and y.max() <= 1.0
        assert torch.equal(y, aug[i]["image"])                  # seeded: same (seed, epoch, index), same image
        changed += (x - y).abs().mean().item() > 1e-3
    assert changed >= 4                                         # each effect fires with p=1/2
    before = [aug[i]["image"].clone() for i in range(6)]
    aug.set_epoch(1)                                            # new draws each epoch
    assert sum(not torch.equal(before[i], aug[i]["image"]) for i in range(6)) >= 4


def test_shape_augmentation_keeps_staff_positions():
    # a staff of 5 one-pixel lines, 6 px apart, and a 2-px-wide stem: ink 1, paper 0
    ink = torch.zeros(1, 1, 48, 200)
    rows = [12, 18, 24, 30, 36]
    ink[..., rows, :] = 1.0
    ink[..., 10:40, 100:102] = 1.0
    seen_w, bolder, thinner = set(), 0, 0
    for s in range(40):
        g = torch.Generator().manual_seed(s)
        out = images.shape_augment(ink.clone(), g, max_width=210)
        assert out.shape[:3] == (1, 1, 48) and 180 <= out.shape[-1] <= 210  # height kept, width +-10%
        assert 0.0 <= out.min() and out.max() <= 1.0
        assert torch.equal(out, images.shape_augment(ink.clone(), torch.Generator().manual_seed(s), max_width=210))
        seen_w.add(out.shape[-1])
        # every staff line stays on its row: the profile's peaks do not move (a pitch would change)
        profile = out[0, 0, :, :90].mean(1)  # (48,), left of the stem
        for r in rows:
            band = profile[r - 3:r + 4]  # the line and its neighbourhood up to half a space away
            centre = (band * torch.arange(r - 3, r + 4)).sum() / band.sum()
            assert abs(centre.item() - r) < 0.5 and band.max() > 0.25, (s, r, centre)
        mass = out.sum().item() * 200 / out.shape[-1]
        bolder += mass > ink.sum().item() * 1.05
        thinner += mass < ink.sum().item() * 0.95
    assert len(seen_w) > 3 and bolder > 3 and thinner > 3  # widths and stroke weights really vary


def test_shape_augmentation_in_dataset(tiny_corpus, tok):
    light = data.OMRDataset(tiny_corpus, "train", tok, img_height=48, augment=True, seed=3)
    shaped = data.OMRDataset(tiny_corpus, "train", tok, img_height=48, augment=True, shape=True, seed=3,
                             max_width=400)
    differ = 0
    for i in range(6):
        y = shaped[i]["image"]
        assert y.shape[1] == 48 and y.shape[2] <= 400 and torch.equal(y, shaped[i]["image"])
        x = light[i]["image"]
        differ += x.shape != y.shape or (x - y).abs().mean().item() > 1e-3
    assert differ >= 4


# -----------------------------------------------------------------------------
# errors


def write_dataset(path, images):
    import datasets
    feat = datasets.Features({"image": datasets.Image(), "transcription": datasets.Value("string"),
                              "source": datasets.Value("string"), "tune_id": datasets.Value("string"),
                              "font": datasets.Value("string")})
    rows = [dict(image=im, transcription="K:G\nABc|]", source="test", tune_id=str(k), font="x")
            for k, im in enumerate(images)]
    split = datasets.Dataset.from_list(rows, features=feat)
    datasets.DatasetDict({"train": split}).save_to_disk(str(path))


def test_corrupt_image_names_index(tmp_path, tok):
    good, jpeg = io.BytesIO(), io.BytesIO()
    Image.new("L", (80, 20), 255).save(good, format="PNG")
    Image.new("L", (40, 20), 255).save(jpeg, format="JPEG")
    write_dataset(tmp_path / "d", [{"bytes": good.getvalue(), "path": None},
                                   {"bytes": jpeg.getvalue(), "path": None},
                                   {"bytes": b"\x89PNG\r\n\x1a\nthis is not a png", "path": None},
                                   {"bytes": b"not an image at all", "path": None}])
    ds = data.OMRDataset(str(tmp_path / "d"), "train", tok, img_height=32)  # header scan must not fail
    assert ds[0]["image"].shape == (3, 32, 128) and ds[1]["image"].shape == (3, 32, 64)
    assert ds.widths()[:2].tolist() == [128, 64]  # PNG header and PIL (JPEG) paths
    with pytest.raises(ValueError, match="corrupt image at index 2 of split 'train'"):
        ds[2]
    with pytest.raises(ValueError, match="corrupt image at index 3 of split 'train'"):
        ds[3]


def test_rgba_transparent_becomes_white(tmp_path, tok):
    im = Image.new("RGBA", (60, 30), (0, 0, 0, 0))  # fully transparent black: must read as white paper
    im.putpixel((5, 5), (0, 0, 0, 255))
    write_dataset(tmp_path / "d", [im])
    x = data.OMRDataset(str(tmp_path / "d"), "train", tok, img_height=30)[0]["image"]
    assert x.shape == (3, 30, 60) and x[0, 5, 5] == 0.0 and x[0, 20, 40] == 1.0


def test_missing_dataset_names_prepare_command(tmp_path, tok):
    with pytest.raises(FileNotFoundError, match=r"python data/m21/prepare.py --out_dir=.*quick --max_tunes=1000"):
        data.load_split(str(tmp_path / "quick"), "train")
    with pytest.raises(FileNotFoundError, match=r"python data/pdmx_synth/prepare.py"):
        data.OMRDataset(str(tmp_path / "pdmx_synth"), "train", tok)
    with pytest.raises(FileNotFoundError, match=r"create it with: python data/m21/prepare.py --out_dir=.*quick"):
        data.Tokenizer(str(tmp_path / "quick" / "tokenizer.model"))


def test_export_writes_the_split_images_and_labels(tiny_corpus, tmp_path):
    # python data.py --export=N: the quick start feeds these files to sample.py, so they must be the
    # dataset's own pixels and labels, byte for byte
    data.export(tiny_corpus, "train", 2, str(tmp_path))
    raw = data.load_split(tiny_corpus, "train")
    for i in range(2):
        with Image.open(tmp_path / f"train_{i}.png") as im:
            assert np.array_equal(np.asarray(im), np.asarray(raw[i]["image"]))
        assert (tmp_path / f"train_{i}.abc").read_text() == raw[i]["transcription"] + "\n"


def test_preprocess_is_what_the_dataset_returns(tiny_corpus, tok):
    # training (OMRDataset) and inference (sample.py) share images.preprocess
    ds = data.OMRDataset(tiny_corpus, "train", tok, img_height=48, max_width=300)
    raw = data.load_split(tiny_corpus, "train")
    arr = images.preprocess(raw[0]["image"], 48, 300)
    assert arr.shape[0] == 48 and arr.shape[1] <= 300
    assert torch.equal(ds[0]["image"][0], torch.from_numpy(arr).float() / 255.0)
