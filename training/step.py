"""
training/step.py: one optimizer step of MusicTrOCR training, and the precision it runs under. train.py's loop
calls train_step once per iteration; bench_vram.py measures the memory and speed of the very same call.

    ctx, scaler = amp_context(device_type, dtype)     # autocast + GradScaler, or fp32 on a CPU
    loss, last = train_step(model, optimizer, scaler, ctx, batches, accum, grad_clip, teacher, ...)

Mixed precision follows nanoGPT: bf16 autocast where the GPU has it, else fp16 with loss scaling
(GradScaler, Micikevicius et al. 2018); a CPU trains in fp32 (its autocast is slow and buys nothing).
"""

import resource
from contextlib import nullcontext

import torch



def resolve_dtype(device_type, dtype):
    """The dtype a run really uses: fp32 on a CPU; bf16 falls back to fp16 on pre-Ampere GPUs."""
    if device_type == 'cpu':
        return 'float32'
    if dtype == 'bfloat16' and not torch.cuda.is_bf16_supported():
        return 'float16'
    return dtype


def amp_context(device_type, dtype):
    """(autocast context, GradScaler) for a resolved dtype. The scaler is a no-op unless fp16."""
    if device_type == 'cpu' or dtype == 'float32':
        return nullcontext(), torch.amp.GradScaler(device_type, enabled=False)
    ptdtype = {'bfloat16': torch.bfloat16, 'float16': torch.float16}[dtype]
    return (torch.autocast(device_type=device_type, dtype=ptdtype),
            torch.amp.GradScaler(device_type, enabled=(dtype == 'float16')))


def peak_mem_mb(device_type):
    """Peak CUDA memory allocated by this process, or (CPU) its peak resident set size, in MiB."""
    if device_type == 'cuda':
        return torch.cuda.max_memory_allocated() / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def share_batch(batch_size, accum, world_size):
    """(batch_size, accumulation steps per process, None or a note) for world_size DDP processes sharing
    one optimizer step of batch_size x accum (global) micro-batches. If world_size does not divide accum
    (the seed's 8 x 4 = 32 on 8 GPUs) the step keeps its images, as world_size micro-batches of
    batch_size * accum / world_size; ValueError if even that does not divide."""
    if accum % world_size == 0:
        return batch_size, accum // world_size, None
    global_batch = batch_size * accum
    if global_batch % world_size != 0:
        raise ValueError(f"{world_size} processes cannot share batch_size {batch_size} x gradient_accumulation_steps "
                         f"{accum} = {global_batch} images per step; make one of them a multiple")
    return global_batch // world_size, 1, (
        f"{world_size} processes do not divide gradient_accumulation_steps={accum}: running batch_size="
        f"{global_batch // world_size} x {world_size} accumulation steps instead (the same {global_batch} images per step)")


def train_step(model, optimizer, scaler, ctx, batches, accum=1, grad_clip=1.0, teacher=None, kd_loss=None,
               ddp=False, zero_grad=True, skip_nonfinite=False):
    """One optimizer step over `accum` micro-batches drawn from the iterator `batches`, each a tuple
    (images (B,3,H,W), idx (B,T), targets (B,T), widths (B,)) on the training device. Each micro-batch's
    loss is divided by accum, so the gradients add up to those of the mean over the whole step. With a
    `teacher` the loss is kd_loss(logits, teacher_logits, targets) on the same batch (train.py passes
    distill.kd_loss with its alpha and temperature). The global gradient
    norm is clipped at grad_clip (0 = off). skip_nonfinite: if the gradients hold an inf/NaN, no update
    is made and the loss returned is NaN (fp16 is left to its GradScaler, which skips overflows itself).
    Returns (the step's loss, a 0-dim tensor; the last micro-batch)."""
    loss_accum = None
    for micro_step in range(accum):
        batch = next(batches)
        images, idx, targets, widths = batch
        if ddp:
            # in DDP training we only need to sync gradients at the last micro step.
            # the official way to do this is with model.no_sync() context manager, but
            # that context manager only toggles this variable
            model.require_backward_grad_sync = (micro_step == accum - 1)
        with ctx:
            logits, loss = model(images, idx, targets, widths)  # logits (B,T,V)
            if teacher is not None:
                with torch.no_grad():
                    teacher_logits, _ = teacher(images, idx, widths=widths)  # (B,T,V)
                loss = kd_loss(logits, teacher_logits, targets)
            loss = loss / accum  # scale the loss to account for gradient accumulation
        # backward pass, with gradient scaling if training in fp16
        scaler.scale(loss).backward()
        if loss_accum is None:
            loss_accum = torch.zeros((), device=loss.device)
        loss_accum += loss.detach()
    check = skip_nonfinite and not scaler.is_enabled()
    if grad_clip != 0.0:
        scaler.unscale_(optimizer)
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    elif check:
        norm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
    # the norm, after DDP's all-reduce, is the same on every rank: all ranks skip the same steps
    if check and not torch.isfinite(norm):
        optimizer.zero_grad(set_to_none=True)  # one bad batch must not poison the weights (or Adam's moments)
        return loss_accum.fill_(float('nan')), batch
    # step the optimizer and scaler if training in fp16
    scaler.step(optimizer)
    scaler.update()
    if zero_grad:  # flush the gradients as soon as we can, no need for this memory anymore
        optimizer.zero_grad(set_to_none=True)
    return loss_accum, batch
