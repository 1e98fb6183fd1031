"""
training/checkpoint.py: everything a run writes to disk and reads back. Atomic writes (a file or a whole
directory; recover_dir finishes one a kill interrupted), checkpoint save / load / lookup / resume
(load_resume: an unreadable ckpt_last names the way out), and LoRA adapter files. Every script and
library that writes a file the user keeps goes through atomic_path / atomic_write / atomic_dir.

A checkpoint is a directory: model.safetensors (the weights), config.json (model_args, train_config,
iter_num, best_val_loss, lora, quant) and, for training runs, state.pt (optimizer, scaler, RNG states,
data position: what --init_from=resume needs). A run's out_dir holds ckpt_best/ and ckpt_last/ and a
copy of the tokenizer; reader/ is a checkpoint directory itself.

    python -m training.checkpoint save_adapter <run or checkpoint dir> adapter.safetensors
    python -m training.checkpoint load_adapter <run or checkpoint dir> adapter.safetensors <new checkpoint dir>

write a LoRA run's adapters alone (a few MB), or put saved adapters into a run's model and save that
as a new checkpoint (for sample.py --out_dir=...).
"""

import glob
import json
import os
import random
import sys
from dataclasses import asdict, fields

import numpy as np
import torch
import torch.distributed as dist
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import lora
from core.files import atomic_dir, atomic_path, atomic_write, recover_dir
from model import MusicTrOCRConfig, build_model

# -----------------------------------------------------------------------------
# lookup


def find_checkpoint(path, names=('ckpt_best', 'ckpt_last')):
    """The checkpoint of a run: path/ckpt_best, else path/ckpt_last (the first of `names` that holds
    a config.json), else `path` itself if it is a checkpoint directory (reader/). FileNotFoundError
    with one line otherwise."""
    for d in [os.path.join(path, n) for n in names] + [path]:
        if os.path.isfile(os.path.join(d, 'config.json')):
            return d
    looked = ', '.join(n + '/' for n in names)
    raise FileNotFoundError(f"no checkpoint in {path} (looked for {looked} and a config.json); "
                            f"train one with: python train.py --out_dir={path}")


def find_tokenizer(out_dir, meta, data_dir=None):
    """The tokenizer of a run: out_dir/tokenizer.model (train.py copies it there), else the one in
    data_dir (default: the run's own, from its config.json)."""
    candidates = [os.path.join(out_dir, 'tokenizer.model')]
    if os.path.basename(os.path.normpath(out_dir)).startswith('ckpt_'):  # --out_dir=<run>/ckpt_last
        candidates.append(os.path.join(os.path.dirname(os.path.normpath(out_dir)), 'tokenizer.model'))
    data_dir = data_dir or (meta.get('train_config') or {}).get('data_dir')
    if data_dir:
        candidates.append(os.path.join(data_dir, 'tokenizer.model'))
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"no tokenizer: looked for {' and '.join(candidates)}")

# -----------------------------------------------------------------------------
# checkpoints: <ckpt_dir>/{model.safetensors, config.json, state.pt}


def _unique_state_dict(model):
    """state_dict without aliases: the tied head and embedding are one tensor, and safetensors
    refuses to store a tensor twice. Returns ({name: tensor}, {alias: kept name})."""
    out, aliases, seen = {}, {}, {}
    for k, t in model.state_dict().items():
        key = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride())
        if t.numel() > 0 and key in seen:
            aliases[k] = seen[key]
            continue
        seen[key] = k
        out[k] = t
    return out, aliases


def save_checkpoint(ckpt_dir, raw_model, meta, state=None):
    """Write model.safetensors (raw_model's weights), config.json (meta; model_args filled in from
    raw_model.config if absent) and state.pt (optimizer/scaler/RNG/data position, if given) into
    ckpt_dir, atomically (atomic_dir)."""
    meta = dict(meta)
    meta.setdefault('model_args', asdict(raw_model.config))
    with atomic_dir(ckpt_dir) as tmp:
        tensors, _ = _unique_state_dict(raw_model)
        tensors = {k: v.detach().to('cpu').contiguous() for k, v in tensors.items()}
        save_file(tensors, os.path.join(tmp, 'model.safetensors'), metadata={'format': 'pt'})
        with open(os.path.join(tmp, 'config.json'), 'w') as f:
            json.dump(meta, f, indent=2)
        if state is not None:
            torch.save(state, os.path.join(tmp, 'state.pt'))


def read_meta(ckpt_dir):
    """config.json of a checkpoint as a dict; FileNotFoundError / ValueError with one line."""
    path = os.path.join(ckpt_dir, 'config.json')
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint at {ckpt_dir} (missing {path})")
    try:
        with open(path) as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} is unreadable ({'empty' if _empty(path) else e}){_fix(ckpt_dir)}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get('model_args'), dict):
        raise ValueError(f"{path} is not a checkpoint's config.json (no model_args){_fix(ckpt_dir)}")
    return meta


def _fix(ckpt_dir):
    """What to do about an unreadable checkpoint: its sibling in the run may be intact."""
    parent, name = os.path.split(os.path.normpath(ckpt_dir))
    other = {'ckpt_best': 'ckpt_last', 'ckpt_last': 'ckpt_best'}.get(name)
    if other and os.path.isdir(os.path.join(parent, other)):
        sib = os.path.join(parent, other)
        return f"; {sib} may be intact: use it (e.g. sample.py --out_dir={sib})"
    return "; replace it with a good copy, or retrain"


def _empty(path):
    return os.path.isfile(path) and os.path.getsize(path) == 0


def _mismatch(ckpt_dir, what):
    return ValueError(f"checkpoint {ckpt_dir} does not match this code: {what}")


def load_model(ckpt_dir, device='cpu'):
    """Rebuild the model a checkpoint was trained with and load its weights -> (model, meta).
    model.build_model rebuilds it from config.json, with pretrained=None (the weights come from the
    checkpoint, nothing is downloaded) and the plug-ins (meta['quant'], meta['lora']) applied as in
    training, so the module tree matches the saved one. Any difference in keys or shapes -> ValueError."""
    meta = read_meta(ckpt_dir)
    args = dict(meta['model_args'])
    unknown = sorted(set(args) - {f.name for f in fields(MusicTrOCRConfig)})
    if unknown:
        raise _mismatch(ckpt_dir, f"unknown model_args {unknown}")
    args['pretrained'] = None
    try:
        model = build_model(args, lora_args=meta.get('lora'), quant_args=meta.get('quant'))
    except (KeyError, ValueError, AssertionError, TypeError, AttributeError) as e:
        raise _mismatch(ckpt_dir, f"cannot build the model ({e})") from None

    path = os.path.join(ckpt_dir, 'model.safetensors')
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {ckpt_dir} has no model.safetensors")
    try:
        sd = load_file(path, device='cpu')
    except Exception as e:  # safetensors raises its own error types for truncated/corrupt files
        raise ValueError(f"{path} is unreadable ({'empty' if _empty(path) else e}){_fix(ckpt_dir)}") from None
    expected, _ = _unique_state_dict(model)
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    for keys, what in ((missing, 'missing key'), (unexpected, 'unexpected key')):
        if keys:
            more = f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""
            raise _mismatch(ckpt_dir, f"{what} '{keys[0]}'{more}")
    for k, t in expected.items():
        if tuple(sd[k].shape) != tuple(t.shape):
            raise _mismatch(ckpt_dir, f"shape of '{k}' is {tuple(sd[k].shape)} in the checkpoint, "
                                      f"{tuple(t.shape)} in the model")
    model.load_state_dict(sd, strict=False)  # strict in effect: keys checked above, aliases are tied
    model.to(device)
    return model, meta


def load_init(path, model_args, lora_args=None, quant_args=None):
    """Fine-tuning (train.py's init_weights): the weights of a run or checkpoint dir (reader/) as step 0
    of a new run, whose optimizer, schedule and step count start fresh (init_from='resume' continues a
    run exactly instead). The config must describe the same model -> model; else ValueError."""
    ckpt = find_checkpoint(path)
    model, meta = load_model(ckpt)
    why = resume_mismatch(meta, model_args, lora_args, quant_args)
    if why:
        raise ValueError(f"init_weights={path}: {ckpt} was trained with {why}; fine-tune with its model config")
    return model


def copy_tokenizer(src_dir, out_dir):
    """tokenizer.model (+ .vocab) of src_dir into out_dir, where sample.py looks for it."""
    for name in ('tokenizer.model', 'tokenizer.vocab'):
        if os.path.isfile(os.path.join(src_dir, name)):
            with open(os.path.join(src_dir, name), 'rb') as f:
                atomic_write(os.path.join(out_dir, name), f.read())


def resume_mismatch(meta, model_args, lora_args, quant_args):
    """None if a checkpoint's config.json describes the model of these arguments, else the first
    difference as 'key=theirs but the config says ours' (pretrained only mattered at step 0)."""
    theirs = dict(meta['model_args'], lora=meta.get('lora'), quant=meta.get('quant'))
    ours = dict(model_args, lora=lora_args, quant=quant_args)
    for k in ours:
        if k != 'pretrained' and theirs.get(k) != ours[k]:
            return f"{k}={theirs.get(k)!r} but the config says {ours[k]!r}"
    return None


def get_rng_state(cuda=False):
    """This process's random streams (python, numpy, torch, cuda), as state.pt keeps them per process."""
    return dict(python=random.getstate(), numpy=np.random.get_state(), torch=torch.get_rng_state(),
                cuda=torch.cuda.get_rng_state() if cuda else None)


def all_rng_states(cuda=False, ddp=False, world_size=1):
    """Every process's random streams, in rank order (a collective under DDP): state.pt keeps them all,
    so that each process of a resumed run continues its own."""
    mine = get_rng_state(cuda)
    rng = [None] * world_size if ddp else [mine]
    if ddp:
        dist.all_gather_object(rng, mine)
    return rng


def set_rng_state(rng, cuda=False):
    random.setstate(rng['python'])
    np.random.set_state(rng['numpy'])
    torch.set_rng_state(rng['torch'].cpu())
    if cuda and rng.get('cuda') is not None:
        torch.cuda.set_rng_state(rng['cuda'].cpu())


def load_checkpoint_state(ckpt_dir, device='cpu'):
    """state.pt (optimizer, scaler, RNG states, data position) as saved by save_checkpoint, or None."""
    path = os.path.join(ckpt_dir, 'state.pt')
    if not os.path.isfile(path):
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=False)  # our own file: RNG states are not tensors-only
    except Exception as e:  # truncated zip, garbage, pickle errors: torch raises many types
        why = 'empty' if _empty(path) else str(e).splitlines()[0].split('. ')[0] if str(e) else type(e).__name__
        raise ValueError(f"{path} is unreadable ({why})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a training state (a {type(state).__name__}, not a dict)")
    return state

def has_checkpoint(out_dir):
    """True if out_dir holds a checkpoint to resume (ckpt_last, an interrupted swap of it, or ckpt_best):
    init_from='auto' resumes then (or says why it cannot), and never starts over on top of one."""
    pre = glob.escape(os.path.join(out_dir, 'ckpt_last'))
    return any(os.path.exists(os.path.join(out_dir, n)) for n in ('ckpt_last', 'ckpt_best')) or \
        bool(glob.glob(pre + '.new-*') + glob.glob(pre + '.old-*'))


def load_resume(out_dir, device='cpu'):
    """(model, meta, state) of out_dir/ckpt_last, for init_from='resume'. An interrupted write of it is
    finished first (recover_dir). If it is missing or unreadable: ValueError, one line saying what is
    wrong and, when ckpt_best is intact, how to continue from that one instead."""
    ckpt_dir = os.path.join(out_dir, 'ckpt_last')
    fixed = recover_dir(ckpt_dir)
    if fixed:
        print(fixed)
    try:
        model, meta = load_model(ckpt_dir, device)
        state = load_checkpoint_state(ckpt_dir)
        if state is None:
            raise ValueError(f"{ckpt_dir} has no state.pt (optimizer and data position): it cannot be resumed")
        if not {'optimizer', 'scaler', 'rng', 'iter_num', 'best_val_loss'} <= set(state):
            raise ValueError(f"{ckpt_dir}/state.pt is not a training state (no optimizer / scaler / rng / iter_num)")
        return model, meta, state
    except (ValueError, FileNotFoundError) as e:
        why = str(e).replace(_fix(ckpt_dir), '')
    best = os.path.join(out_dir, 'ckpt_best')
    try:
        best_iter = read_meta(best)['iter_num']
        load_model(best)
        if load_checkpoint_state(best) is None:
            raise ValueError(best)
    except (ValueError, FileNotFoundError, KeyError):
        raise ValueError(f"{why}; there is no intact ckpt_best either: start over with --init_from=scratch "
                         f"(into a new out_dir to keep this one)") from None
    raise ValueError(f"{why}; {best} (iter {best_iter}) is intact: to continue from it, run "
                     f"`mv {ckpt_dir} {ckpt_dir}.bad && cp -r {best} {ckpt_dir}` and resume again")

# -----------------------------------------------------------------------------
# LoRA adapters on their own: {name: lora_A / lora_B} in a safetensors file, the settings in its metadata


def save_adapter(model, path):
    """Write the adapters (a few MB instead of the whole model) to a safetensors file, atomically."""
    sd = {k: v.detach().contiguous().cpu() for k, v in lora.lora_state_dict(model).items()}
    if not sd:
        raise ValueError("save_adapter: the model has no LoRA adapters")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(sd, tmp, metadata={"lora": json.dumps(lora.lora_config(model))})


def load_adapter(model, path):
    """Load adapters saved by save_adapter into a model that already went through apply_lora with the
    same settings. Mismatching names, shapes or rank/alpha => ValueError. Returns the metadata dict."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"adapter file not found: {path}")
    try:
        with safe_open(path, framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("lora", "null"))
        sd = load_file(path)
    except Exception as e:  # safetensors' own errors (truncated, garbage), bad JSON in the metadata
        raise ValueError(f"{path} is not a readable adapter file ({'empty' if _empty(path) else e}); "
                         f"write it again with: python -m training.checkpoint save_adapter <run> {path}") from None
    if meta is not None and not isinstance(meta, dict):
        raise ValueError(f"{path}: its 'lora' metadata is not a settings object; write it again with save_adapter")
    own = lora.lora_state_dict(model)
    if not own:
        raise ValueError("load_adapter: the model has no LoRA adapters; call apply_lora first")
    missing, unexpected = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
    if missing or unexpected:
        raise ValueError(f"adapter keys do not match the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    cfg = lora.lora_config(model)
    if meta and (meta.get("rank"), meta.get("alpha"), meta.get("rslora")) != (cfg["rank"], cfg["alpha"], cfg["rslora"]):
        raise ValueError(f"adapter was saved with {meta}, model has {cfg}")
    for k, v in sd.items():
        if v.shape != own[k].shape:
            raise ValueError(f"adapter tensor {k} has shape {tuple(v.shape)}, model expects {tuple(own[k].shape)}")
    if any(m.merged for _, m in lora.lora_modules(model)):
        raise RuntimeError("load_adapter: unmerge_lora(model) first")
    model.load_state_dict(sd, strict=False)
    return meta


def main(argv):
    if len(argv) < 3 or (argv[0], len(argv)) not in (('save_adapter', 3), ('load_adapter', 4)):
        raise ValueError("usage: python -m training.checkpoint save_adapter <run or checkpoint dir> <adapter.safetensors>, "
                         "or load_adapter <run or checkpoint dir> <adapter.safetensors> <new checkpoint dir>")
    ckpt = find_checkpoint(argv[1])
    model, meta = load_model(ckpt)
    if not meta.get('lora'):
        raise ValueError(f"{ckpt} was not trained with LoRA (lora_rank = 0): it has no adapters")
    if argv[0] == 'save_adapter':
        save_adapter(model, argv[2])
        print(f"wrote the {len(lora.lora_state_dict(model))} adapter tensors of {ckpt} to {argv[2]}")
    else:
        load_adapter(model, argv[2])
        save_checkpoint(argv[3], model, {k: v for k, v in meta.items() if k != 'model_args'})
        # the tokenizer: beside the checkpoint (a run's out_dir) or inside it (reader/)
        copy_tokenizer(os.path.dirname(os.path.abspath(ckpt)), argv[3])
        copy_tokenizer(ckpt, argv[3])
        print(f"wrote {argv[3]}: {ckpt} with the adapters of {argv[2]}")


if __name__ == '__main__':
    try:
        main(sys.argv[1:])
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        sys.exit(f"error: {e}")
