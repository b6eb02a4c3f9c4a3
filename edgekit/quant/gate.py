"""How far a reduced-precision model strays from FP32: the figures behind the accuracy gate,
and the gate's verdict (:func:`judge`), which fails only on what the data show."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgekit.quant import stats


@dataclass(frozen=True)
class Agreement:
    images: int
    top1_agreement: float  # share of images whose top-1 class equals FP32's
    top5_overlap: float  # mean share of FP32's top-5 classes also in this model's top-5
    cosine: float  # mean cosine similarity of the logits
    max_abs_error: float
    nonfinite: int = 0  # images whose logits hold inf or NaN (an FP16 overflow): counted as disagreeing

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: a non-finite figure (an overflowed model) is written as null."""
        return {k: ((round(v, 6) if np.isfinite(v) else None) if isinstance(v, float) else v)
                for k, v in asdict(self).items()}


def agreement(ref: np.ndarray, got: np.ndarray) -> Agreement:
    ref = ref.astype(np.float64)
    got = got.astype(np.float64)
    bad = ~np.isfinite(got).all(axis=1)
    got = np.where(np.isfinite(got), got, 0.0)
    k = min(5, ref.shape[1])
    top1 = float(np.mean((ref.argmax(1) == got.argmax(1)) & ~bad))
    rk = np.argsort(-ref, axis=1)[:, :k]
    gk = np.argsort(-got, axis=1)[:, :k]
    overlap = float(np.mean([0.0 if b else len(set(x) & set(y)) / k for x, y, b in zip(rk, gk, bad)]))
    num = np.sum(ref * got, axis=1)
    den = np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1)
    cos = float(np.mean(np.where(bad, 0.0, num / np.maximum(den, 1e-12))))
    err = float("inf") if bad.any() else float(np.abs(ref - got).max())
    return Agreement(len(ref), top1, overlap, cos, err, int(bad.sum()))


def top1_matches(ref: np.ndarray, got: np.ndarray) -> np.ndarray:
    """Per image: same top-1 class as the reference, and finite logits."""
    same: np.ndarray = (ref.argmax(1) == np.where(np.isfinite(got), got, -np.inf).argmax(1)) \
        & np.isfinite(got).all(axis=1)
    return same


@dataclass(frozen=True)
class Judgement:
    """One reduced-precision model against FP32 on the same validation images."""

    precision: str
    figures: Agreement
    agreement: stats.Proportion  # top-1 agreement with FP32, tested against --min-agreement
    accuracy: stats.PairedDrop | None  # labelled top-1 accuracy against FP32's, when labels are known

    @property
    def failed(self) -> bool:
        return self.agreement.failed or (self.accuracy is not None and self.accuracy.failed)

    @property
    def undecided(self) -> bool:
        return not self.failed and (self.agreement.status == "undecided"
                                    or (self.accuracy is not None and self.accuracy.status == "undecided"))

    def summary(self) -> str:
        a = self.agreement
        text = (f"top-1 agreement {a.rate:.3f} (95% interval {a.low:.3f}-{a.high:.3f}, {a.k}/{a.n} images; "
                f"{_said(a.status)} >= {a.threshold:.10g})")
        if self.figures.nonfinite:
            text += f", {self.figures.nonfinite} image(s) with inf/NaN logits (overflow)"
        if self.accuracy is not None:
            d = self.accuracy
            text += (f", accuracy {d.accuracy:.3f} vs FP32 {d.ref_accuracy:.3f}: drop {100 * d.drop:.1f} points "
                     f"(95% interval {100 * d.low:.1f} to {100 * d.high:.1f}; {_said(d.status)} "
                     f"<= {100 * d.max_drop:g})")
        return text

    def advice(self) -> str:
        """What would settle an undecided result ('' when decided)."""
        notes = []
        a = self.agreement
        if a.status == "undecided" and a.threshold >= 1:
            notes.append(f"{self.precision}: no number of images can show agreement >= 1; the gate fails only "
                         "when an image disagrees")
        elif a.status == "undecided":
            more = (f"about {a.needed} validation images would tell" if a.needed
                    else "far more images would tell")
            floor = stats.fails_below(a.n, a.threshold)
            can = (f"with {a.n} images the gate fails only at {floor} or fewer agreeing" if floor >= 0
                   else f"{a.n} images cannot fail it")
            notes.append(f"{self.precision}: too few validation images to tell whether agreement is >= "
                         f"{a.threshold:.10g} ({a.k}/{a.n}; {can}); {more} (--val-data DIR)")
        d = self.accuracy
        if d is not None and d.status == "undecided":
            notes.append(f"{self.precision}: too few labelled images to tell whether accuracy drops by at most "
                         f"{100 * d.max_drop:g} points (drop {100 * d.drop:.1f}, 95% interval {100 * d.low:.1f} "
                         f"to {100 * d.high:.1f} on {d.n} images)")
        return "; ".join(notes)

    def to_dict(self) -> dict[str, Any]:
        a = self.agreement
        out = self.figures.to_dict()
        out["top1_agreement_95"] = [round(a.low, 6), round(a.high, 6)]
        out["agreement_test"] = {"min_agreement": a.threshold, "agreeing": a.k, "images": a.n,
                                 "p_value": float(f"{a.p_value:.6g}"), "status": a.status,
                                 "images_needed": a.needed}
        if self.accuracy is not None:
            d = self.accuracy
            out["accuracy"] = {"fp32": round(d.ref_accuracy, 6), "this": round(d.accuracy, 6),
                               "drop": round(d.drop, 6), "drop_95": [round(d.low, 6), round(d.high, 6)],
                               "lost": d.lost, "gained": d.gained, "max_drop": d.max_drop, "status": d.status}
        out["status"] = "fail" if self.failed else "undecided" if self.undecided else "pass"
        return out


def _said(status: str) -> str:
    return {"pass": "shown", "fail": "shown NOT", "undecided": "not shown either way"}[status]


def judge(precision: str, ref: np.ndarray, got: np.ndarray, min_agreement: float,
          labels: np.ndarray | None = None, max_drop: float = 0.01) -> Judgement:
    """The gate's verdict: fails only when the data show agreement below ``min_agreement``, or
    (with labels) an accuracy drop beyond ``max_drop``; undecided results pass and say so."""
    figures = agreement(ref, got)
    k = int(np.sum(top1_matches(ref, got)))
    test = stats.proportion_test(k, len(ref), min_agreement)
    acc = None
    if labels is not None:
        right = (np.where(np.isfinite(got), got, -np.inf).argmax(1) == labels) & np.isfinite(got).all(axis=1)
        acc = stats.paired_drop(list(ref.argmax(1) == labels), list(right), max_drop)
    return Judgement(precision, figures, test, acc)


def batching(man: Any) -> tuple[int, bool]:
    """(batch size, static?) for running a bundle's model: its static batch, else 8."""
    first = man.input.shape[0]
    return (first, True) if isinstance(first, int) else (8, False)


def run_all(runner: Any, images: np.ndarray, batch: int = 8, static: bool = False) -> np.ndarray:
    """Logits for all images, in batches (the last one padded for static-batch models)."""
    out = []
    for i in range(0, len(images), batch):
        chunk = images[i:i + batch]
        n = len(chunk)
        if static and n < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - n, 0)])
        out.append(runner.infer(chunk)[:n])
    return np.concatenate(out)
