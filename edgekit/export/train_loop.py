"""The training loop: the model and its optimiser, the epochs with validation, saving the best
weights and the resume state after each epoch, and the report at the end."""

from __future__ import annotations

import errno
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgekit import bundle as bundle_mod
from edgekit.callbacks import Log
from edgekit.deps import require
from edgekit.errors import BundleError, UsageError
from edgekit.export.dataset import Split
from edgekit.export.train_data import (
    _collate,
    _device,
    _EpochSampler,
    _Images,
    _is_jetson,
    _meminfo_mib,
    _quiet_worker,
    cuda_overhead_mib,
    default_batch,
    default_workers,
)
from edgekit.export.train_run import (
    REPORT,
    RESUME,
    RUN_FILE,
    WEIGHTS,
    Interrupted,
    Progress,
    TrainError,
    TrainRequest,
    TrainResult,
    _noop,
    _save_resume,
    _save_weights,
    _state_dict_cpu,
    _write_json,
    weights_meta,
)
from edgekit.preprocess import Preprocess

# ---------------------------------------------------------------- the model


def _build_model(spec: Any, weights: str, n: int, size: int, log: Log) -> tuple[Any, Preprocess, str, bool]:
    """(model with an n-class head, the preprocessing its weights expect, what they are, pretrained)."""
    torch = require("torch", "training")
    from edgekit.zoo import weights as weights_mod

    head = weights_mod.CLASSIFIER[spec.name]
    if weights == "random":
        torch.manual_seed(0)
        return spec.builder(n, size), spec.preprocess(None, size), "random (untrained) weights", False
    model, loaded = weights_mod.build(spec, weights, size)
    layer = getattr(model, head)
    if loaded.num_classes != n:
        log(f"new classifier: {n} classes in place of the weights' {loaded.num_classes}")
        torch.manual_seed(0)
        setattr(model, head, torch.nn.Linear(layer.in_features, n))
    return model, spec.preprocess(loaded.source, size), loaded.description, True


def _param_groups(model: Any, head: str, lr: float, pretrained: bool) -> list[dict[str, Any]]:
    """The new classifier learns at lr; pretrained layers at a tenth of it, to keep what they know."""
    head_params = list(getattr(model, head).parameters())
    ids = {id(p) for p in head_params}
    body = [p for p in model.parameters() if id(p) not in ids]
    return [{"params": head_params, "lr": lr, "base_lr": lr},
            {"params": body, "lr": lr * (0.1 if pretrained else 1.0), "base_lr": lr * (0.1 if pretrained else 1.0)}]


def _lr_factor(progress: float, warmup: float) -> float:
    """Linear warm-up, then a cosine to zero; ``progress`` in epochs done / epochs."""
    if progress < warmup:
        return max(progress / warmup, 0.01)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - warmup) / max(1e-9, 1 - warmup))))


# ---------------------------------------------------------------- training


def _loop(out: Path, req: TrainRequest, info: dict[str, Any], spec: Any, split: Split, pre: Preprocess, log: Log,
          progress: Callable[[Progress], None], torch: Any) -> TrainResult:
    from edgekit.export.torch_onnx import wrap
    from edgekit.zoo import weights as weights_mod

    missing = split.missing()
    if missing:
        raise UsageError(f"{len(missing)} image(s) of the run's split are gone (e.g. {missing[0]}); put them back, "
                         "or train anew with --force")
    device = _device(req.device)
    jetson = _is_jetson(torch if device == "cuda" else None)
    amp = device == "cuda"
    head = weights_mod.CLASSIFIER[spec.name]
    resume = out / RESUME
    state: dict[str, Any] | None = None
    if req.resume and (resume.is_file() or resume.is_symlink()):
        try:
            state = torch.load(resume, map_location="cpu", weights_only=True)
            # the starting weights are not needed again (no download, no checkpoint file): the state has them all
            model, pretrained = spec.builder(len(split.classes), pre.height), bool(info.get("pretrained"))
            model.load_state_dict(state["model"])
            int(state["epoch"]), list(state["history"]), int(state["bad_epochs"]), dict(state["optimizer"])
        except Exception as exc:  # torch.load and load_state_dict raise many kinds; an empty file, an odd one
            why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
            raise UsageError(f"{resume} is damaged ({why}); train anew with edgekit train --force -o {out}") from exc
    else:
        if req.resume and info.get("epochs_done"):
            log(f"warning: {resume} is missing, so the {info['epochs_done']} finished epoch(s) cannot be continued: "
                "training starts again from the first epoch")
        model, _, _, pretrained = _build_model(spec, info["config"]["weights"], len(split.classes), pre.height,
                                               _noop)
    net = wrap(model, pre, float_input=False).to(device)
    if req.batch:
        batch, why = req.batch, f"batch {req.batch}"
    else:
        memory = (torch.cuda.mem_get_info()[0] / 2**20 if device == "cuda" and not jetson
                  else _meminfo_mib("MemAvailable"))
        params = sum(int(p.numel()) for p in model.parameters())
        batch, why, warn = default_batch(spec.name, pre.height, spec.input_size, device, jetson, memory, amp,
                                         params, cuda_overhead_mib(torch.version.cuda))
        if warn:
            log(f"warning: {warn}")
    workers = req.workers if req.workers is not None else default_workers(jetson)
    info["sizing"] = {"batch": batch, "workers": workers}  # what this machine chose; a resume elsewhere re-sizes
    where = torch.cuda.get_device_name(0) if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    log(f"training {spec.name} at {pre.height} px on {where}{', mixed precision' if amp else ''}: {why}, "
        f"{workers} image-reading process{'es' if workers != 1 else ''}")
    info["device"] = where
    opt = torch.optim.AdamW(_param_groups(model, head, req.lr, bool(pretrained)), weight_decay=1e-4)
    # torch.amp.GradScaler is 2.3+; NVIDIA's wheels for JetPack 5 (Python 3.8) stop at torch 2.1
    scaler = (torch.amp.GradScaler("cuda", enabled=amp) if hasattr(torch.amp, "GradScaler")
              else torch.cuda.amp.GradScaler(enabled=amp))
    start = 0
    history: list[dict[str, Any]] = []
    bad = 0
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        if amp and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start, history, bad = int(state["epoch"]), list(state["history"]), int(state["bad_epochs"])
        if not 0 <= start <= len(history) + 1:
            raise UsageError(f"{resume} is damaged (epoch {start}, {len(history)} epochs of history); train anew "
                             "with --force")
        log(f"resuming after epoch {start} of {req.epochs}")
    meta = weights_meta(out / WEIGHTS) if (out / WEIGHTS).is_file() else {}
    try:
        best = (float(meta["val_accuracy"]), int(meta["epoch"])) if "val_accuracy" in meta else (-1.0, 0)
    except (ValueError, KeyError):
        best = (-1.0, 0)
    # the resume state, not run.json, says what is done: a kill between the two writes leaves run.json behind
    info.update(epochs_done=start, history=history,
                best={"epoch": best[1], "val_accuracy": best[0]} if best[1] else None)
    train_files = [(split.train_root / r, c) for r, c in split.train]
    val_files = [(split.val_root / r, c) for r, c in split.val]
    # readers start once and live across epochs: each start forks this process (CUDA and all), which is
    # where boards run out of memory (errno 12 at fork). Pinned memory only on a desktop GPU: on a Jetson
    # it is RAM that cannot be swapped, for a copy that unified memory does not need.
    loader_args = {"batch_size": batch, "num_workers": workers, "collate_fn": _collate,
                   "worker_init_fn": _quiet_worker if workers else None,
                   "persistent_workers": workers > 0, "pin_memory": device == "cuda" and not jetson}
    val_loader = torch.utils.data.DataLoader(_Images(val_files, pre, False, req), shuffle=False, **loader_args)
    sampler = _EpochSampler(len(train_files), req.seed)
    loader = torch.utils.data.DataLoader(_Images(train_files, pre, True, req), sampler=sampler,
                                         drop_last=len(train_files) > batch, **loader_args)
    steps = max(1, math.ceil(len(train_files) / batch))
    t_run = time.perf_counter()
    seen_at_start = 0
    stop_reason = ""
    stop = _StopOnSignal()
    if req.patience and bad >= req.patience:  # killed while writing the report of an early stop
        start = req.epochs
        stop_reason = (f"stopped early after epoch {len(history)}: no better validation accuracy for "
                       f"{req.patience} epochs")
    try:
        for epoch in range(start, req.epochs):
            t0 = time.perf_counter()
            torch.manual_seed(req.seed * 100003 + epoch)  # dropout: the same after a resume
            sampler.epoch = epoch  # the shuffle and the views: the same after a resume
            net.train()
            tot_loss, correct, count, unreadable = 0.0, 0, 0, 0
            for i, (x, y, bad_images) in enumerate(loader):
                if stop.asked:
                    break
                for g in opt.param_groups:
                    g["lr"] = g["base_lr"] * _lr_factor((epoch + i / steps) / req.epochs, 1.0 / req.epochs
                                                        if req.epochs > 1 else 0.0)
                unreadable += bad_images
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                if len(y) < 2:
                    continue
                try:
                    with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=amp):
                        logits = net(x)
                        loss = torch.nn.functional.cross_entropy(logits, y, label_smoothing=0.1)
                    opt.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                except torch.cuda.OutOfMemoryError as exc:
                    raise TrainError(
                        f"out of GPU memory at batch {batch} ({spec.name}, {pre.height} px); resume with a smaller "
                        f"batch: edgekit train --resume -o {out} --batch {max(1, batch // 2)}") from exc
                if not math.isfinite(float(loss.detach())):
                    raise TrainError(f"the loss became {float(loss.detach())} in epoch {epoch + 1}: training "
                                     f"diverged; train anew with a lower --lr (now {req.lr:g}), e.g. "
                                     f"--lr {req.lr / 10:g} --force")
                tot_loss += float(loss.detach()) * len(y)
                correct += int((logits.argmax(1) == y).sum())
                count += len(y)
                elapsed = time.perf_counter() - t_run
                seen_at_start += len(y)
                rate = seen_at_start / max(elapsed, 1e-9)
                left = (req.epochs - epoch) * len(train_files) - (i + 1) * batch
                progress(Progress(epoch + 1, req.epochs, min((i + 1) * batch, len(train_files)), len(train_files),
                                  tot_loss / max(count, 1), correct / max(count, 1), rate,
                                  max(0.0, left / max(rate, 1e-9)) * 1.2))
            if stop.asked:
                raise KeyboardInterrupt
            if count == 0:
                raise UsageError(f"no readable training images in {split.train_root}; check the files")
            if unreadable and epoch == start:
                log(f"warning: {unreadable} training image(s) could not be read and were left out")
            vloss, vacc, _ = _validate(net, val_loader, device, amp, len(split.classes), torch)
            seconds = time.perf_counter() - t0
            row = {"epoch": epoch + 1, "train_loss": round(tot_loss / count, 5),
                   "train_accuracy": round(correct / count, 5),
                   "val_loss": round(vloss, 5), "val_accuracy": round(vacc, 5), "seconds": round(seconds, 2),
                   "images_per_s": round(count / seconds, 2)}
            history.append(row)
            # a kill after this epoch's best weights were written but before its state was: the same epoch again
            # is the same best, not a worse one
            improved = vacc > best[0] or best[1] == epoch + 1
            if improved:
                best = (vacc, epoch + 1)
                _save_weights(out / WEIGHTS, model, {"epoch": str(epoch + 1), "val_accuracy": repr(vacc),
                                                     "model": spec.name, "classes": str(len(split.classes))})
                bad = 0
                bundle_mod.pause_point("train.weights_saved")
            else:
                bad += 1
            _save_resume(out / RESUME, {"model": _state_dict_cpu(model), "optimizer": opt.state_dict(),
                                        "scaler": scaler.state_dict() if amp else {}, "epoch": epoch + 1,
                                        "history": history, "bad_epochs": bad})
            bundle_mod.pause_point("train.resume_saved")
            info.update(epochs_done=epoch + 1, history=history,
                        best={"epoch": best[1], "val_accuracy": best[0]})
            _write_json(out / RUN_FILE, info)
            log(f"epoch {epoch + 1}/{req.epochs}: loss {row['train_loss']:.3f}, train {row['train_accuracy']:.1%}, "
                f"validation {vacc:.1%} (loss {vloss:.3f}){' best' if improved else ''}, {seconds:.0f} s, "
                f"{row['images_per_s']:.0f} images/s")
            if stop.asked:  # asked during validation: this epoch is saved, then stop
                raise KeyboardInterrupt
            if req.patience and bad >= req.patience and epoch + 1 < req.epochs:
                stop_reason = (f"stopped early after epoch {epoch + 1}: no better validation accuracy for "
                               f"{req.patience} epochs")
                log(stop_reason)
                break
    except OSError as exc:
        if exc.errno != errno.ENOMEM:
            raise
        raise TrainError(_out_of_memory(out, workers, batch, f"cannot start an image-reading process ({exc})")) from exc
    except RuntimeError as exc:  # a reader died: SIGKILL is the kernel's OOM killer, anything else is not memory
        text = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        if "DataLoader worker" not in text:
            raise
        if "Killed" in text:
            raise TrainError(_out_of_memory(out, workers, batch, text)) from exc
        raise TrainError(f"an image-reading process ended ({text.rstrip(' .')}); the run is saved after its last "
                         f"finished epoch: edgekit train --resume -o {out} continues it") from exc
    except KeyboardInterrupt:
        done = info["epochs_done"]
        del loader, val_loader  # readers end now, in the normal way, not at the interpreter's exit
        raise Interrupted(f"{stop.what()}; the run is saved after epoch {done} of {req.epochs}: "
                          f"edgekit train --resume -o {out} continues it") from None
    finally:
        stop.restore()
    if best[1] == 0:
        raise TrainError("no epoch finished with a validation accuracy; nothing to keep")
    return _finish(out, info, model, net, val_loader, device, amp, split, stop_reason or
                   f"trained {info['epochs_done']} epochs", log, torch)


def _out_of_memory(out: Path, workers: int, batch: int, what: str) -> str:
    return (f"out of memory: {what}; the run is saved after its last finished epoch: resume with fewer readers and "
            f"a smaller batch, e.g. edgekit train --resume -o {out} --workers {max(0, min(1, workers - 1))} "
            f"--batch {max(1, batch // 2)} (on a Jetson also add swap and stop the desktop: sudo systemctl "
            "isolate multi-user.target)")


class _StopOnSignal:
    """Ctrl-C and SIGTERM (systemd, docker stop) end training at the next step, not at whatever instant
    the signal lands: a KeyboardInterrupt inside the data loader's machinery can leave a lock held and
    the process hung at exit. A second Ctrl-C stops at once."""

    def __init__(self) -> None:
        import signal
        import threading

        self.asked = 0
        self._old: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():  # signals are the main thread's only
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.asked:
            raise KeyboardInterrupt
        self.asked = signum

    def what(self) -> str:
        import signal

        return "stopped by SIGTERM" if self.asked == signal.SIGTERM else "interrupted"

    def restore(self) -> None:
        import signal

        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()


def _validate(net: Any, loader: Any, device: str, amp: bool, n: int, torch: Any) -> tuple[float, float, np.ndarray]:
    """(loss, accuracy, confusion matrix [true, predicted]) on the validation images."""
    net.eval()
    conf = np.zeros((n, n), np.int64)
    tot = 0.0
    with torch.no_grad():
        for x, y, _ in loader:
            x, y = x.to(device), y.to(device)
            if len(y) == 0:
                continue
            with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=amp):
                logits = net(x).float()
            tot += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
            np.add.at(conf, (y.cpu().numpy(), logits.argmax(1).cpu().numpy()), 1)
    count = int(conf.sum())
    if count == 0:
        raise UsageError("no readable validation images; check the files of the validation split")
    return tot / count, float(np.trace(conf)) / count, conf


def _finish(out: Path, info: dict[str, Any], model: Any, net: Any, val_loader: Any, device: str, amp: bool,
            split: Split, reason: str, log: Log, torch: Any) -> TrainResult:
    """The report, on the best weights: per-class accuracy, the confusion matrix, the curves."""
    st = require("safetensors.torch", "reading checkpoints")
    model.load_state_dict(st.load_file(str(out / WEIGHTS)))
    net.to(device)
    _, acc, conf = _validate(net, val_loader, device, amp, len(split.classes), torch)
    per = [{"class": name, "images": int(conf[c].sum()), "correct": int(conf[c, c]),
            "accuracy": round(float(conf[c, c]) / max(1, int(conf[c].sum())), 5)}
           for c, name in enumerate(split.classes)]
    from edgekit.export.train_report import write_report

    rep = out / REPORT
    rep.mkdir(exist_ok=True)
    try:
        write_report(rep, info["history"], conf, list(split.classes), per)
    except Exception as exc:  # the pictures are a convenience: a plotting library's quirk must not strand a run
        if isinstance(exc, BundleError):  # a full disk: say so, the run stays resumable
            raise
        log(f"warning: the report's pictures were not drawn ({type(exc).__name__}: {str(exc)[:160]}); the "
            "figures are in run.json")
    info.update(state="finished", stop_reason=reason, seconds=round(sum(h["seconds"] for h in info["history"]), 1),
                report={"val_accuracy": round(acc, 5), "per_class": per, "confusion": conf.tolist(),
                        "pictures": [f"{REPORT}/confusion.png", f"{REPORT}/curves.png"]},
                weights_sha256=bundle_mod.sha256(out / WEIGHTS))
    _write_json(out / RUN_FILE, info)
    (out / RESUME).unlink(missing_ok=True)  # a finished run is built, not continued
    log(f"best: epoch {info['best']['epoch']}, validation accuracy {acc:.1%}; report in {rep}")
    return TrainResult(out, info)
