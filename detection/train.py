"""Training an SSDLite detector: SGD + momentum, warm-up then cosine, checkpoints with resume.

`train(config)` runs in a run directory that holds everything the run needs to continue:

    config.json        the resolved configuration (a resumed run must match it): defaults that
                       depend on the data (`epochs: null`, `head: auto`) are resolved first
    head_proposal.json with `head: auto`, the fitted head and the matched shares (`head_fit`)
    data/              a dataset without a validation split: the train split and the val split
                       carved from it (`detection.data.carve`); `data` points here
    checkpoint.pt      model, optimizer, step, RNG state; written atomically every few minutes
                       and at the end of every epoch, so a killed run loses at most that much
    history.jsonl      one line per logged step and per evaluation
    model.pt           final weights (state dict only)
    eval_<split>.json  COCO metrics of the final model

Checkpoints are loaded with `torch.load(weights_only=True)`: a checkpoint is data, never code.
Under `torchrun` the same function trains with DistributedDataParallel (gloo on CPU, NCCL on
CUDA): every rank takes a disjoint shard of each epoch's permutation; only rank 0 writes.
Mixed precision (autocast + gradient scaling) is used on CUDA.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tdbnas.spaces.atomic import write_atomic, write_json_atomic

CHECKPOINT_FORMAT = "tdbnas.checkpoint"
CHECKPOINT_VERSION = 1
# Config fields that may differ between a run and its resumption (they change nothing learned).
RESUMABLE_CHANGES = {"workers", "progress", "checkpoint_minutes", "eval_images", "threads", "max_minutes", "device",
                     "stop_epochs"}


@dataclass
class TrainConfig:
    """Every knob of a training run; saved as config.json beside its outputs."""

    arch: str = "mobiledet-edgetpu"
    data: str = ""
    train_split: str = "train"
    val_split: str = "val"
    resolution: int = 160
    # How images of any size become the square input: "stretch" (resize; TF fixed_shape_resizer,
    # the MobileDets configs) or "letterbox" (keep the aspect ratio, pad). See data.transforms.
    resize: str = "stretch"
    width_multiplier: float = 1.0
    # None: `default_epochs(train images)`, 15 on 2,000+ images and more on smaller sets.
    epochs: float | None = None
    batch_size: int = 32
    lr: float = 0.2
    warmup_epochs: float = 1.0
    warmup_start_factor: float = 0.1
    min_lr_factor: float = 0.0
    momentum: float = 0.9
    nesterov: bool = False
    optimizer: str = "sgd"  # "sgd" (SGD + momentum, the MobileDets recipe) or "adamw" (betas 0.9/0.999)
    weight_decay: float = 4e-5
    grad_clip: float = 10.0
    # Exponential moving average of the weights (0: off). When on, evaluation and model.pt use
    # the averaged weights; the decay ramps up as min(ema_decay, (1 + step) / (10 + step)).
    ema_decay: float = 0.0
    # Zero the scale of the last batch norm of every residual branch, so each residual block
    # starts as the identity (Goyal et al. 2017): deep from-scratch networks train faster.
    zero_init_residual: bool = False
    # Batch-norm momentum for the whole network: the TF default (decay 0.99) needs thousands of
    # steps to settle; short runs evaluate better with faster-moving statistics.
    bn_momentum: float = 0.03
    # Augmentation (MobileDets: random horizontal flip + SSD random crop).
    random_crop: bool = True
    crop_min_area: float = 0.1  # smallest crop patch, as a fraction of the image (SSD: 0.1)
    horizontal_flip: bool = True
    vertical_flip: bool = False  # for images without an "up" (aerial, microscopy)
    # For small datasets: random crop, horizontal flip and SSD's photometric distortion on,
    # whatever the three settings above say.
    strong_augmentation: bool = False
    # A dataset with no validation split: this share of the training images is held out as one
    # (seeded by `seed`, written under <out>/data; 0: train without validation).
    val_fraction: float = 0.1
    # Head and loss (empty / defaults: the MobileDets settings). `head` overrides fields of
    # `SSDLiteHead`, e.g. {"min_scale": 0.1, "max_scale": 0.6} for the anchor scales (fractions of
    # the image's shorter side on the lowest and the highest map; MobileDets: 0.2 and 0.95), or
    # is "auto": anchors fitted to the training boxes (`detection.head_fit`), recorded as a dict.
    head: dict[str, Any] | str = field(default_factory=dict)
    match_threshold: float = 0.5
    classification_weight: float = 1.0
    localization_weight: float = 1.0
    seed: int = 0
    workers: int = 1
    threads: int | None = None
    channels_last: bool = True
    # torch.compile the training forward pass (compilation time counts as training time).
    compile: bool = False
    amp: bool = True
    eval_every_epochs: float = 0.0
    eval_images: int | None = None
    checkpoint_minutes: float = 5.0
    log_every_steps: int = 20
    max_minutes: float | None = None
    # Stop after this many epochs of the `epochs`-long schedule (None: train to the end). The
    # cosine is not shortened: a truncated run is the first part of the full one, and a later
    # run of the same directory with a larger value (or None) continues it. Successive halving
    # trains every candidate this way and continues only the best.
    stop_epochs: float | None = None
    # Time-budgeted schedule: the cosine ends after this many minutes of training time, or at
    # `epochs`, whichever comes first (with `max_minutes` equal, training stops there). Use it
    # when a run has a wall-clock budget and throughput varies (shared machines).
    schedule_minutes: float | None = None
    device: str = "auto"
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training settings {unknown}; known: {sorted(known)}")
        return cls(**data)


#: Image presentations of the measured recipe (15 epochs of the 2,000-image built-in set): a
#: smaller set gets as many (more epochs), up to MAX_DEFAULT_EPOCHS.
DEFAULT_EPOCHS, DEFAULT_PRESENTATIONS, MAX_DEFAULT_EPOCHS = 15.0, 30_000, 200.0


def default_epochs(num_images: int) -> float:
    """The training length when none is given: 15 epochs, more on sets under 2,000 images."""
    return float(min(MAX_DEFAULT_EPOCHS, max(DEFAULT_EPOCHS, math.ceil(DEFAULT_PRESENTATIONS / max(1, num_images)))))


def augmentation(config: TrainConfig):
    from tdbnas.detection.data import Augmentation, CropSettings
    from tdbnas.detection.data.transforms import PhotometricSettings

    strong = config.strong_augmentation
    return Augmentation(flip_probability=0.5 if config.horizontal_flip or strong else 0.0,
                        crop=CropSettings(min_area=config.crop_min_area) if config.random_crop or strong else None,
                        vertical_flip_probability=0.5 if config.vertical_flip else 0.0,
                        photometric=PhotometricSettings() if strong else None)


def head_settings(config: TrainConfig, num_classes: int):
    """The SSDLite head of a run: MobileDets defaults with the configured anchor scales."""
    from tdbnas.spaces.head import head_from_settings

    if not isinstance(config.head, dict):
        raise ValueError(f"head must be a mapping of SSDLiteHead settings or 'auto' (fitted to the training data "
                         f"when the run starts), got {config.head!r}")
    return head_from_settings(config.head, num_classes)


def with_validation_split(config: TrainConfig, out_dir: str | Path) -> TrainConfig:
    """A dataset with only a training split gets a validation split carved from it (written under
    <out>/data, seeded by `seed`); `data` then points there. Anything else is left as it is."""
    from tdbnas.detection.data.carve import carve_validation, needs_validation_split

    if not (config.data and config.val_split and config.val_fraction > 0) or \
            not needs_validation_split(config.data, config.train_split, config.val_split):
        return config
    root = carve_validation(config.data, Path(out_dir) / "data", train_split=config.train_split,
                            val_split=config.val_split, fraction=config.val_fraction, seed=config.seed)
    return replace(config, data=str(root))


def resolve_for_data(config: TrainConfig, train_set, arch) -> tuple[TrainConfig, Any]:
    """The settings that depend on the training data, resolved: `epochs: None` by the set's size,
    `head: auto` by fitting the anchors to its boxes (`head_fit.propose_head`, from the default
    head, on `arch`). Returns the config and the head proposal (None without `auto`)."""
    if config.epochs is None:
        config = replace(config, epochs=default_epochs(len(train_set)))
    if config.head != "auto":
        return config, None
    from tdbnas.detection.head_fit import input_boxes, propose_head

    boxes, _ = input_boxes(train_set, config.resolution, config.resize)
    base = head_settings(replace(config, head={}), train_set.num_classes)
    proposal = propose_head(boxes, base, arch, config.resolution, seed=config.seed)
    return replace(config, head=proposal.settings), proposal


def zero_init_residual_branches(model: nn.Module) -> int:
    """Zero the last BN scale of every residual branch (blocks with `residual` and `project`)."""
    count = 0
    for module in model.modules():
        project = getattr(module, "project", None)
        if getattr(module, "residual", False) and isinstance(getattr(project, "bn", None), nn.BatchNorm2d):
            nn.init.zeros_(project.bn.weight)
            count += 1
    return count


class WeightEMA:
    """Exponential moving average of a model's parameters; buffers (BN statistics) are copied."""

    def __init__(self, model: nn.Module, decay: float):
        import copy

        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for param in self.model.parameters():
            param.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        ema_params = list(self.model.parameters())
        params = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema_params, params, 1 - decay)
        for ema_buffer, buffer in zip(self.model.buffers(), model.buffers()):
            ema_buffer.copy_(buffer)


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class _Distributed:
    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: torch.device) -> _Distributed:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(dist.get_rank(), world)

    def slowest(self, seconds: float) -> float:
        """The largest of every rank's `seconds`: ranks that share one training clock compute the
        same time-scheduled learning rate and stop at the same step (else one waits forever in
        the next all-reduce)."""
        if self.world <= 1:
            return seconds
        import torch.distributed as dist

        device = "cuda" if dist.get_backend() == "nccl" else "cpu"  # NCCL reduces GPU tensors only
        value = torch.tensor([seconds], dtype=torch.float64, device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return float(value)


def learning_rate(config: TrainConfig, step: int, steps_per_epoch: int, train_seconds: float = 0.0) -> float:
    """Linear warm-up from `warmup_start_factor * lr`, then cosine decay to `min_lr_factor * lr`.

    With `schedule_minutes`, the cosine's progress is the larger of the step fraction and the
    training-time fraction (both measured after the warm-up's share), so it ends on time."""
    total = max(1, round(config.epochs * steps_per_epoch))
    warmup = min(total, round(config.warmup_epochs * steps_per_epoch))
    if step < warmup:
        fraction = step / max(1, warmup)
        return config.lr * (config.warmup_start_factor + (1 - config.warmup_start_factor) * fraction)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if config.schedule_minutes:
        share = warmup / total
        elapsed = train_seconds / (config.schedule_minutes * 60)
        progress = max(progress, min(1.0, (elapsed - share) / max(1e-9, 1 - share)))
    floor = config.min_lr_factor
    return config.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on conv weights only (TF's l2 regulariser on kernels), not on BN or biases."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim > 1 else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def epoch_order(num_samples: int, seed: int, epoch: int, dist: _Distributed) -> list[int]:
    """The sample order of one epoch: a seeded permutation, sharded across ranks."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(num_samples, generator=generator).tolist()
    return order[dist.rank::dist.world]


class Trainer:
    """Holds the model, data and optimizer of one run; `run()` trains (resuming if possible)."""

    def __init__(self, config: TrainConfig, out_dir: str | Path, *, model: nn.Module | None = None,
                 train_set=None, val_set=None):
        from tdbnas.detection.data import build_dataset
        from tdbnas.detection.loss import DetectionLoss, LossSettings
        from tdbnas.detection.model import SSDLite
        from tdbnas.spaces import resolve_arch

        self.out = Path(out_dir)
        if config.threads:
            torch.set_num_threads(config.threads)
        self.device = _resolve_device(config.device)
        self.dist = _Distributed.from_env(self.device)
        torch.manual_seed(config.seed)
        if train_set is None:
            config = with_validation_split(config, self.out)
            train_set = build_dataset(config.data, config.train_split, size=config.resolution, train=True,
                                      augmentation=augmentation(config), resize=config.resize)
        arch = model.arch if model is not None and hasattr(model, "arch") else None
        if config.head == "auto" and arch is None:
            arch = resolve_arch(config.arch)
        config, self.head_proposal = resolve_for_data(config, train_set, arch)
        self.config = config
        self.train_set = train_set
        self.val_set = val_set
        if self.val_set is None and config.val_split:
            self.val_set = build_dataset(config.data, config.val_split, size=config.resolution, train=False,
                                         resize=config.resize)
        if model is None:
            model = SSDLite(resolve_arch(config.arch), num_classes=self.train_set.num_classes,
                            head=head_settings(config, self.train_set.num_classes),
                            width_multiplier=config.width_multiplier)
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = config.bn_momentum
        if config.zero_init_residual:
            zero_init_residual_branches(model)
        self.model = model.to(self.device)
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        settings = LossSettings(match_threshold=config.match_threshold,
                                classification_weight=config.classification_weight,
                                localization_weight=config.localization_weight)
        self.loss = DetectionLoss(model.anchors(config.resolution), model.num_classes,
                                  model.head_spec.background_class, settings).to(self.device)
        groups = _param_groups(self.model, config.weight_decay)
        if config.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum,
                                             nesterov=config.nesterov)
        elif config.optimizer == "adamw":
            self.optimizer = torch.optim.AdamW(groups, lr=config.lr)
        else:
            raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {config.optimizer!r}")
        self.ema = WeightEMA(self.model, config.ema_decay) if config.ema_decay > 0 else None
        self.use_amp = config.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.step, self.epoch_float = 0, 0.0
        self.train_seconds = 0.0
        self.ddp_model: nn.Module = self.model
        if self.dist.world > 1:
            self.ddp_model = self.wrap_distributed(self.model)
        if config.compile:
            self.ddp_model = torch.compile(self.ddp_model)

    @property
    def eval_model(self) -> nn.Module:
        """The weights evaluated and saved as model.pt: the EMA when on, else the model."""
        return self.ema.model if self.ema is not None else self.model

    def wrap_distributed(self, model: nn.Module) -> nn.Module:
        """The model as DDP sees it (subclasses training a subset of the parameters per step,
        such as a supernet, pass `find_unused_parameters=True`)."""
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model)

    # ---- paths ---------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.out / "checkpoint.pt"

    @property
    def steps_per_epoch(self) -> int:
        per_rank = math.ceil(len(self.train_set) / self.dist.world)
        return max(1, per_rank // self.config.batch_size)  # drop_last: equal batches on every rank

    @property
    def total_steps(self) -> int:
        return max(1, round(self.config.epochs * self.steps_per_epoch))

    @property
    def stop_step(self) -> int:
        """The step this run stops at: the end of the schedule, or `stop_epochs` into it."""
        if self.config.stop_epochs is None:
            return self.total_steps
        return min(self.total_steps, max(1, round(self.config.stop_epochs * self.steps_per_epoch)))

    # ---- checkpoints ---------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        if not self.dist.is_main:
            return
        state = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "step": self.step,
                 "train_seconds": self.train_seconds, "model": self.model.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                 **({"ema": self.ema.model.state_dict()} if self.ema is not None else {}),
                 "torch_rng": torch.get_rng_state(), "config": json.dumps(asdict(self.config))}
        write_atomic(self.checkpoint_path, lambda handle: torch.save(state, handle))

    def load_checkpoint(self) -> bool:
        if not self.checkpoint_path.exists():
            return False
        state = load_checkpoint(self.checkpoint_path)
        saved = json.loads(state["config"])
        changed = {k for k in saved if k not in RESUMABLE_CHANGES and saved[k] != asdict(self.config).get(k)}
        if changed:
            details = ", ".join(f"{k}: {saved[k]!r} -> {asdict(self.config)[k]!r}" for k in sorted(changed))
            raise ValueError(f"{self.checkpoint_path} was written with different settings ({details}); "
                             "use a new output directory, or the original settings to resume")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            self.ema.model.load_state_dict(state.get("ema", state["model"]))
        torch.set_rng_state(state["torch_rng"])
        self.step, self.train_seconds = int(state["step"]), float(state["train_seconds"])
        return True

    def _log(self, record: dict[str, Any]) -> None:
        if self.dist.is_main:
            with open(self.out / "history.jsonl", "a") as handle:
                handle.write(json.dumps(record) + "\n")

    # ---- the loop ------------------------------------------------------------------------
    def _batches(self, epoch: int, skip: int) -> Iterator[tuple[torch.Tensor, list[dict[str, Any]]]]:
        from torch.utils.data import DataLoader

        from tdbnas.detection.data import collate_detection

        order = epoch_order(len(self.train_set), self.config.seed, epoch, self.dist)
        order = order[: self.steps_per_epoch * self.config.batch_size][skip * self.config.batch_size:]
        loader = DataLoader(_EpochView(self.train_set, order, self.config.seed, epoch),
                            batch_size=self.config.batch_size, shuffle=False, drop_last=True,
                            num_workers=self.config.workers, collate_fn=collate_detection,
                            persistent_workers=False)
        yield from loader

    def train_step(self, images: torch.Tensor, targets: list[dict[str, Any]]) -> dict[str, float]:
        lr = self.set_learning_rate()
        images, boxes, labels = self.prepare_batch(images, targets)
        self.optimizer.zero_grad(set_to_none=True)
        losses, _ = self.forward_loss(images, boxes, labels)
        self.scaler.scale(losses["loss"]).backward()
        self.apply_gradients()
        return {"loss": float(losses["loss"].detach()), "classification": float(losses["classification"]),
                "localization": float(losses["localization"]), "lr": lr}

    # ---- the pieces of a step (a supernet step runs several paths between zero_grad and the update)
    def set_learning_rate(self) -> float:
        lr = learning_rate(self.config, self.step, self.steps_per_epoch, self.train_seconds)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def prepare_batch(self, images: torch.Tensor, targets: list[dict[str, Any]]):
        images = images.to(self.device, non_blocking=True)
        if self.config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, [t["boxes"] for t in targets], [t["labels"] for t in targets]

    def forward_loss(self, images: torch.Tensor, boxes, labels) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The detection losses of the model's forward pass, and its class logits."""
        with torch.autocast(self.device.type, enabled=self.use_amp):
            box_deltas, class_logits = self.ddp_model(images)
        return self.loss(box_deltas, class_logits, boxes, labels), class_logits

    def apply_gradients(self) -> None:
        """Clip, step the optimizer (and the EMA), advance the step counter."""
        self.scaler.unscale_(self.optimizer)
        if self.config.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.model, self.step)
        self.step += 1

    def evaluate(self, max_images: int | None = None) -> dict[str, Any]:
        from tdbnas.detection.evaluate import evaluate_model

        return evaluate_model(self.eval_model, self.val_set, batch_size=self.config.batch_size,
                              progress=self.config.progress, max_images=max_images)

    def run(self) -> dict[str, Any]:
        config = self.config
        self.out.mkdir(parents=True, exist_ok=True)
        resumed = self.load_checkpoint()
        if self.dist.is_main:
            write_json_atomic(self.out / "config.json", asdict(config))
            if self.head_proposal is not None:
                write_json_atomic(self.out / "head_proposal.json", self.head_proposal.to_json())
        self._log({"event": "resume" if resumed else "start", "step": self.step, "total_steps": self.total_steps,
                   "train_images": len(self.train_set), "world": self.dist.world})
        stop_step = self.stop_step
        progress = _progress_bar(stop_step, self.step, config.progress and self.dist.is_main)
        last_checkpoint = time.monotonic()
        eval_steps = round(config.eval_every_epochs * self.steps_per_epoch) if config.eval_every_epochs else 0
        window_images, window_start = 0, time.perf_counter()
        stopped_early = False
        self.model.train()
        while self.step < stop_step:
            epoch, skip = divmod(self.step, self.steps_per_epoch)
            # The training clock runs while a batch is fetched and stepped (a data loader that
            # cannot keep up costs training time); evaluation and checkpoints are off the clock.
            started = time.perf_counter()
            for images, targets in self._batches(epoch, skip):
                metrics = self.train_step(images, targets)
                self.train_seconds = self.dist.slowest(self.train_seconds + time.perf_counter() - started)
                window_images += images.shape[0] * self.dist.world
                if not math.isfinite(metrics["loss"]):
                    self.save_checkpoint()
                    raise RuntimeError(f"training diverged at step {self.step} (loss {metrics['loss']}); "
                                       f"lower --lr (now {config.lr}) or raise --warmup-epochs")
                if self.step % config.log_every_steps == 0 or self.step == self.total_steps:
                    elapsed = time.perf_counter() - window_start
                    rate = window_images / max(elapsed, 1e-9)
                    self._log({"event": "train", "step": self.step, "epoch": self.step / self.steps_per_epoch,
                               "images_per_s": round(rate, 2), "train_seconds": round(self.train_seconds, 1),
                               **{k: round(v, 5) for k, v in metrics.items()}})
                    progress.set_postfix(loss=f"{metrics['loss']:.3f}", img_s=f"{rate:.1f}", lr=f"{metrics['lr']:.3g}")
                    window_images, window_start = 0, time.perf_counter()
                progress.update(1)
                if eval_steps and self.step % eval_steps == 0 and self.step < self.total_steps and self.val_set:
                    self._evaluate_and_log(config.eval_images)
                    self.model.train()
                end_of_epoch = self.step % self.steps_per_epoch == 0
                if end_of_epoch or time.monotonic() - last_checkpoint > config.checkpoint_minutes * 60:
                    self.save_checkpoint()
                    last_checkpoint = time.monotonic()
                if config.max_minutes and self.train_seconds > config.max_minutes * 60:
                    stopped_early = True
                    break
                if self.step >= stop_step:
                    break
                started = time.perf_counter()
            if stopped_early:
                break
        progress.close()
        self.save_checkpoint()
        summary: dict[str, Any] = {"steps": self.step, "train_seconds": round(self.train_seconds, 1),
                                   "stopped_early": stopped_early, "epochs": self.step / self.steps_per_epoch}
        if self.dist.is_main:
            write_atomic(self.out / "model.pt", lambda handle: torch.save(self.eval_model.state_dict(), handle))
            if self.val_set is not None:
                summary["eval"] = self._evaluate_and_log(config.eval_images, final=True)
        return summary

    def _evaluate_and_log(self, max_images: int | None, final: bool = False) -> dict[str, Any]:
        result = self.evaluate(max_images)
        metrics = result["metrics"]
        self._log({"event": "eval", "step": self.step, "epoch": self.step / self.steps_per_epoch,
                   "train_seconds": round(self.train_seconds, 1), "eval_seconds": result["seconds"], **metrics})
        if final:
            payload = {k: v for k, v in result.items() if k != "results"}
            payload.update(split=self.config.val_split, arch=self.config.arch, step=self.step)
            write_json_atomic(self.out / f"eval_{self.config.val_split}.json", payload)
        return {k: v for k, v in result.items() if k != "results"}


class _EpochView(torch.utils.data.Dataset):
    """The samples of one epoch in order; seeds each sample's augmentation from (seed, epoch,
    index), so a resumed or distributed run augments exactly as an uninterrupted one."""

    def __init__(self, dataset, order: list[int], seed: int, epoch: int):
        self.dataset, self.order, self.seed, self.epoch = dataset, order, seed, epoch

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, position: int):
        index = self.order[position]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        return self.dataset.get(index, rng=rng) if hasattr(self.dataset, "get") else self.dataset[index]


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A training checkpoint, loaded as data only (`weights_only=True`), format-checked."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise ValueError(f"{path} is not a readable tdbnas checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a tdbnas training checkpoint (no '{CHECKPOINT_FORMAT}' header)")
    if state.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path} has checkpoint version {state.get('version')}; this tdbnas reads "
                         f"version {CHECKPOINT_VERSION}")
    return state


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Model weights from a checkpoint.pt or a model.pt (state dict), loaded as data only."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"{path} is not a readable weights file ({type(exc).__name__}: {exc})") from exc
    if isinstance(state, dict) and state.get("format") == CHECKPOINT_FORMAT:
        return state["model"]
    if isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values()):
        return state
    raise ValueError(f"{path} holds neither a tdbnas checkpoint nor a state dict")


def _progress_bar(total: int, initial: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="step", disable=not enabled, dynamic_ncols=True)


def train(config: TrainConfig, out_dir: str | Path) -> dict[str, Any]:
    return Trainer(config, out_dir).run()
