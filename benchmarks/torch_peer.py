"""The PyTorch peer: the same joint U-Net as ``cervixnet.models.build_unet_joint``, in PyTorch.

Used by ``training_throughput.py`` to time PyTorch at its best on the same network, batch and
optimiser. Layer for layer it matches the Keras builder, with the label branch's options of
``build_unet_joint`` (default: the paper's head, ``classifier_features="bottleneck"``, average
pooling, dense 256 and 64 with dropout 0.5, the encoder trained by the label loss too):

- per encoder level, two 3x3 Conv (no bias) -> BatchNorm -> ReLU blocks, then 2x2 max-pool;
- a bottleneck of two such blocks at ``base * 2**depth`` filters;
- per decoder level, a 2x2 stride-2 transposed convolution (with bias), concatenation of the
  skip (upsampled first, as in Keras), two blocks;
- a 1x1 convolution with a sigmoid for the mask;
- global average and/or max pooling of each chosen feature map (``bottleneck``,
  ``encoder{i}``, ``decoder{i}``; detached first when the label loss must not train the
  encoder, Keras' ``StopGradient``), concatenated, ``Linear + ReLU + Dropout`` for each hidden
  width and ``Linear(1)`` with a sigmoid for the label.

The trainable parameter count equals the Keras model's (``training_throughput.py`` ends with
an error where they differ by more than 1 %). The losses are the paper's:
``0.5 * BCE + 0.5 * Dice`` on the mask and a class-weighted BCE on the label, weighted
1 : 0.8, computed in float32 under autocast; the optimiser is AdamW.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional


def _block(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels, eps=1e-3, momentum=0.01),  # Keras' defaults
        nn.ReLU(inplace=True),
    ]


_POOLINGS = {"avg": ("avg",), "max": ("max",), "avgmax": ("avg", "max")}


class JointUNet(nn.Module):
    """U-Net with a parallel classification branch (NCHW in and out).

    Args:
        in_channels: image channels (1 for ultrasound).
        base_filters: filters of the first level (64 in the paper).
        depth: number of pooling steps (4).
        units: hidden widths of the label branch.
        dropout: dropout after each hidden layer of the label branch (none if 0).
        features: feature maps the label branch pools, as ``build_unet_joint``'s
            ``classifier_features``: ``"bottleneck"``, ``"encoder{i}"`` (level ``i`` before
            pooling), ``"decoder{i}"`` (level ``i`` after its convolutions).
        pooling: ``"avg"``, ``"max"`` or ``"avgmax"`` (both, concatenated).
        trains_encoder: if False the pooled maps are detached, so that the label loss trains
            the label branch only.
    """

    def __init__(
        self,
        in_channels: int = 1,
        base_filters: int = 64,
        depth: int = 4,
        units: Sequence[int] = (256, 64),
        dropout: float = 0.5,
        features: str | Sequence[str] = "bottleneck",
        pooling: str = "avg",
        trains_encoder: bool = True,
    ) -> None:
        super().__init__()
        self.features = (features,) if isinstance(features, str) else tuple(features)
        self.poolings = _POOLINGS[pooling]
        self.trains_encoder = trains_encoder
        widths = {"bottleneck": base_filters * 2**depth}
        for level in range(1, depth + 1):
            widths[f"encoder{level}"] = widths[f"decoder{level}"] = base_filters * 2 ** (level - 1)
        unknown = [name for name in self.features if name not in widths]
        if unknown:
            raise ValueError(f"Unknown feature maps {unknown}; expected among {sorted(widths)}")
        self.encoders = nn.ModuleList()
        channels = in_channels
        for level in range(depth):
            filters = base_filters * 2**level
            self.encoders.append(
                nn.Sequential(*_block(channels, filters), *_block(filters, filters))
            )
            channels = filters
        bottleneck = base_filters * 2**depth
        self.bottleneck = nn.Sequential(
            *_block(channels, bottleneck), *_block(bottleneck, bottleneck)
        )
        channels = bottleneck
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level in reversed(range(depth)):
            filters = base_filters * 2**level
            self.ups.append(nn.ConvTranspose2d(channels, filters, 2, stride=2))
            self.decoders.append(
                nn.Sequential(*_block(2 * filters, filters), *_block(filters, filters))
            )
            channels = filters
        self.mask_head = nn.Conv2d(channels, 1, 1)
        head: list[nn.Module] = []
        width = sum(widths[name] for name in self.features) * len(self.poolings)
        for hidden in units:
            head += [nn.Linear(width, hidden), nn.ReLU(inplace=True)]
            head += [nn.Dropout(dropout)] if dropout > 0 else []
            width = hidden
        head.append(nn.Linear(width, 1))
        self.label_head = nn.Sequential(*head)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``images (B, C, H, W)`` -> ``(mask (B, 1, H, W), label (B, 1))``, both sigmoid."""
        skips = []
        maps: dict[str, torch.Tensor] = {}
        x = images
        for level, encoder in enumerate(self.encoders, start=1):
            x = encoder(x)
            skips.append(x)
            maps[f"encoder{level}"] = x
            x = functional.max_pool2d(x, 2)
        x = self.bottleneck(x)
        maps["bottleneck"] = x
        for level, up, decoder, skip in zip(
            range(len(skips), 0, -1), self.ups, self.decoders, reversed(skips), strict=True
        ):
            x = decoder(torch.cat([up(x), skip], dim=1))
            maps[f"decoder{level}"] = x
        pooled = []
        for name in self.features:
            source = maps[name] if self.trains_encoder else maps[name].detach()
            for pooling in self.poolings:
                pooled.append(source.mean(dim=(2, 3)) if pooling == "avg" else source.amax((2, 3)))
        label = torch.sigmoid(self.label_head(torch.cat(pooled, dim=1)))
        return torch.sigmoid(self.mask_head(x)), label


def parameter_count(model: nn.Module) -> int:
    """Trainable parameters (BatchNorm's running statistics are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def joint_loss(
    mask: torch.Tensor,
    label: torch.Tensor,
    mask_true: torch.Tensor,
    label_true: torch.Tensor,
    positive_weight: float = 9.0,
    alpha: float = 0.5,
    beta: float = 0.8,
) -> torch.Tensor:
    """The paper's loss in float32: ``alpha*BCE + (1-alpha)*Dice`` on the mask + ``beta`` x
    class-weighted BCE on the label, averaged over the batch."""
    eps = 1e-7
    mask, label = mask.float().clamp(eps, 1 - eps), label.float().clamp(eps, 1 - eps)
    bce = functional.binary_cross_entropy(mask, mask_true, reduction="none").mean(dim=(1, 2, 3))
    intersection = (mask * mask_true).sum(dim=(1, 2, 3))
    dice = 1 - (2 * intersection + 1e-6) / (
        mask.sum(dim=(1, 2, 3)) + mask_true.sum(dim=(1, 2, 3)) + 1e-6
    )
    label_bce = -(
        positive_weight * label_true * torch.log(label) + (1 - label_true) * torch.log(1 - label)
    ).squeeze(1)
    return (alpha * bce + (1 - alpha) * dice + beta * label_bce).mean()


def train_throughput(
    images: np.ndarray,
    masks: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    steps: int,
    base_filters: int = 64,
    device: str = "cpu",
    precision: str = "float32",
    channels_last: bool = True,
    compile_model: bool = False,
    warmup_steps: int = 3,
    threads: int | None = None,
    after_warmup: Callable[[], None] | None = None,
    head: dict | None = None,
) -> dict:
    """Times ``steps`` AdamW training steps of :class:`JointUNet` after ``warmup_steps``.

    Args:
        images, masks: ``(N, H, W, 1)`` float32 arrays (NHWC, converted here); labels ``(N, 1)``.
        batch_size: images per step; batches cycle through the ``N`` images.
        steps: timed steps.
        device: ``"cpu"`` or ``"cuda"``.
        precision: ``"float32"``, ``"bfloat16"`` or ``"float16"`` (autocast; float16 with a
            gradient scaler).
        channels_last: use the NHWC memory format (usually fastest with oneDNN and cuDNN).
        compile_model: wrap the model in ``torch.compile``.
        threads: ``torch.set_num_threads`` on CPU; None keeps PyTorch's default.
        after_warmup: called once between the warm-up and the timed steps (to mark a log).
        head: the label branch's keyword arguments of :class:`JointUNet` (``units``,
            ``dropout``, ``features``, ``pooling``, ``trains_encoder``); None: the paper's.

    Returns:
        A dict with ``images_per_second``, ``warmup_seconds`` (the warm-up steps' wall time,
        ``torch.compile``'s compilation included), ``parameters``, ``final_loss`` and the
        settings.
    """
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    model = JointUNet(in_channels=images.shape[-1], base_filters=base_filters, **(head or {}))
    model = model.to(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    parameters = parameter_count(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=5e-4)
    step_model = torch.compile(model) if compile_model else model
    dtype = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}[precision]
    scaler = torch.amp.GradScaler(device, enabled=precision == "float16")

    def to_device(array: np.ndarray, image_like: bool) -> torch.Tensor:
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        if image_like:
            tensor = tensor.permute(0, 3, 1, 2).contiguous(memory_format=memory_format)
        return tensor.to(device, non_blocking=True)

    n = len(images)
    batches = []
    for start in range(0, max(n - batch_size + 1, 1), batch_size):
        stop = start + batch_size
        batches.append(
            (
                to_device(images[start:stop], True),
                to_device(masks[start:stop], True),
                to_device(labels[start:stop], False),
            )
        )

    def step(index: int) -> torch.Tensor:
        x, y_mask, y_label = batches[index % len(batches)]
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(
            device_type=device, dtype=dtype or torch.float32, enabled=dtype is not None
        ):
            mask, label = step_model(x)
        loss = joint_loss(mask, label, y_mask, y_label)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return loss

    def synchronize() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    model.train()
    warmup_started = time.perf_counter()
    for index in range(warmup_steps):
        step(index)  # torch.compile compiles in the first one
    synchronize()
    warmup_seconds = time.perf_counter() - warmup_started
    if after_warmup is not None:
        after_warmup()
    started, cpu_started = time.perf_counter(), time.process_time()
    for index in range(steps):
        loss = step(index)
    synchronize()
    seconds = time.perf_counter() - started
    return {
        "images_per_second": batch_size * steps / seconds,
        "cpu_ms_per_image": 1000 * (time.process_time() - cpu_started) / (batch_size * steps),
        "warmup_seconds": round(warmup_seconds, 2),
        "parameters": parameters,
        "final_loss": float(loss.detach()),
        "device": device,
        "precision": precision,
        "channels_last": channels_last,
        "compiled": compile_model,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
