"""
distill.py: knowledge distillation (Hinton, Vinyals & Dean 2015, arXiv:1503.02531) for nanoOMR.

A big trained model (the teacher, e.g. ConvNeXt-T) teaches a small one (the student, e.g. MobileViT-S).
Besides the one-hot ground truth, the student is trained to match the teacher's whole next-token
distribution, softened by a temperature T: the "dark knowledge" of which wrong tokens are almost
right (a quarter note that could be an eighth, a sharp that could be a natural) is a much richer
signal per example than the label alone.

    loss = alpha * CE(student, ground truth)
         + (1 - alpha) * T^2 * KL( softmax(teacher / T) || softmax(student / T) )

both averaged over the non-pad positions, under teacher forcing (both models read the same
ground-truth prefix `idx`, so their distributions are comparable position by position). The T^2 factor
keeps the soft term's gradients the same size as T changes (they scale as 1/T^2, Hinton et al. sec. 2).

There is no training loop here: train.py runs its one loop, and when `teacher_dir` is set it calls
    teacher = distill.load_teacher(teacher_dir, device)               # once
    logits, _ = model(images, idx, targets, widths)                   # student, (B, T, V)
    with torch.no_grad(): t_logits, _ = teacher(images, idx, widths=widths)
    loss = distill.kd_loss(logits, t_logits, targets, distill_alpha, distill_T)
Teacher and student must share the tokenizer (same data_dir): vocab size and special ids are checked.
"""

import torch.nn.functional as F

from training.checkpoint import find_checkpoint, load_model


def load_teacher(ckpt_dir, device="cpu"):
    """A trained run (out-convnext_tiny) or checkpoint dir (out-convnext_tiny/ckpt_best) -> frozen model,
    eval mode. A run dir gives its ckpt_best/, else its ckpt_last/ (checkpoint.find_checkpoint)."""
    teacher, _ = load_model(find_checkpoint(ckpt_dir), device="cpu")
    teacher.requires_grad_(False)
    return teacher.to(device).eval()


def check_compatible(teacher_config, student_config):
    """Same vocabulary and special ids, else the logits do not describe the same tokens: ValueError."""
    for k in ("vocab_size", "pad_id", "bos_id", "eos_id"):
        t, s = getattr(teacher_config, k), getattr(student_config, k)
        if t != s:
            raise ValueError(f"teacher and student tokenizers differ ({k}: teacher {t}, student {s}); "
                             "distill on the dataset (and tokenizer) the teacher was trained on")


def kd_loss(student_logits, teacher_logits, targets, alpha, T, ignore_index=-1):
    """student_logits, teacher_logits (B, T, V); targets (B, T) with ignore_index at pad positions.
    Returns alpha * CE + (1 - alpha) * T^2 * KL(teacher_T || student_T), each a mean over non-pad positions."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} differ: teacher and student need the same tokenizer")
    if not 0.0 <= alpha <= 1.0 or T <= 0:
        raise ValueError(f"need 0 <= distill_alpha <= 1 and distill_T > 0, got alpha={alpha}, T={T}")
    V = student_logits.size(-1)
    s = student_logits.float().reshape(-1, V)  # (N, V), N = B*T; fp32 for the log-softmaxes
    y = targets.reshape(-1)                    # (N,)
    ce = F.cross_entropy(s, y, ignore_index=ignore_index)
    if alpha == 1.0:
        return ce  # the teacher does not contribute at all
    keep = y != ignore_index
    s = s[keep]                                                   # (n, V) real positions only
    t = teacher_logits.detach().float().reshape(-1, V)[keep]      # (n, V)
    log_p_s = F.log_softmax(s / T, dim=-1)
    log_p_t = F.log_softmax(t / T, dim=-1)
    # KL(p_t || p_s) = sum_v p_t (log p_t - log p_s); 'batchmean' = sum / n = mean over real positions
    kl = F.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean")
    return alpha * ce + (1.0 - alpha) * T * T * kl
