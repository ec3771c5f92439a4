"""Knowledge-distillation losses (Hinton et al. 2015; Guo et al. 2018)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DistillationLoss", "distillation_loss"]


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_probs: torch.Tensor,
    hard_labels: torch.Tensor | None = None,
    *,
    temperature: float = 5.0,
    alpha: float = 0.0,
    class_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Soft-label distillation loss with an optional hard-label term.

    ``T**2 * KL(teacher || student)`` at temperature ``T`` (summed over classes, averaged
    over the batch and, for voxel-wise outputs, over voxels), plus
    ``alpha * CE(student, hard_labels)`` over the labeled rows (or voxels). The ``T**2``
    factor keeps the gradient size independent of ``T``.

    Parameters
    ----------
    student_logits : torch.Tensor of shape (n, n_classes) or (n, n_classes, D, H, W)
        Raw student outputs (per volume, or per voxel for segmentation).
    teacher_probs : torch.Tensor of the same shape
        Teacher probabilities at temperature ``T``: ``softmax(teacher_logits / T)``.
    hard_labels : torch.Tensor of shape (n,) or (n, D, H, W), default=None
        Class indices; ``-1`` marks unlabeled rows (voxels), which the hard term ignores.
    temperature : float, default=5.0
        Softmax temperature ``T``.
    alpha : float, default=0.0
        Weight of the hard-label cross-entropy term (the paper uses 0).
    class_weight : torch.Tensor of shape (n_classes,), default=None
        Weight of each row (voxel) by its hard label's class, in both terms: the KL term
        becomes the weighted mean ``sum(w * KL) / sum(w)`` (unlabeled rows weigh 1) and the
        cross-entropy uses ``weight=class_weight``. ``None``: all rows weigh the same.

    Returns
    -------
    torch.Tensor
        Scalar loss.
    """
    student_logits = student_logits.float()
    log_student = F.log_softmax(student_logits / temperature, dim=1)
    # KL summed over classes (dim 1), then averaged over rows and, for voxel-wise outputs,
    # over voxels: for (n, K) logits this is PyTorch's "batchmean".
    divergence = F.kl_div(log_student, teacher_probs.float(), reduction="none").sum(dim=1)
    if class_weight is None or hard_labels is None:
        loss = divergence.mean() * temperature**2
    else:
        class_weight = class_weight.to(device=divergence.device, dtype=divergence.dtype)
        labels = hard_labels.long()
        weights = torch.where(labels >= 0, class_weight[labels.clamp(min=0)], 1.0)
        loss = (weights * divergence).sum() / weights.sum() * temperature**2
    if alpha > 0 and hard_labels is not None:
        labeled = hard_labels >= 0
        if bool(labeled.any()):
            hard = F.cross_entropy(
                student_logits, hard_labels.long(), weight=class_weight, ignore_index=-1
            )
            loss = loss + alpha * hard
    return loss


class DistillationLoss(nn.Module):
    """Module form of :func:`distillation_loss`, usable as a skorch criterion.

    Parameters
    ----------
    temperature : float, default=5.0
        Softmax temperature ``T``.
    alpha : float, default=0.0
        Weight of the hard-label cross-entropy term.
    class_weight : torch.Tensor of shape (n_classes,), default=None
        Per-class weights of the rows (voxels); see :func:`distillation_loss`.
    """

    def __init__(
        self,
        temperature: float = 5.0,
        alpha: float = 0.0,
        class_weight: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.temperature = temperature
        self.alpha = alpha
        # A buffer, as CrossEntropyLoss's weight: it moves with the criterion to the device.
        self.register_buffer("class_weight", class_weight)

    def forward(
        self,
        student_logits: torch.Tensor,
        teacher_probs: torch.Tensor,
        hard_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Compute the loss; see :func:`distillation_loss`."""
        return distillation_loss(
            student_logits,
            teacher_probs,
            hard_labels,
            temperature=self.temperature,
            alpha=self.alpha,
            class_weight=self.class_weight,
        )
