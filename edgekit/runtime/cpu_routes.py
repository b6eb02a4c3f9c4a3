"""The CPU paths a bundle can take (backend and precision), a measured trial of one, and the choice
among them with the sentence that explains it: data only, shared by the measurement
(cpu_choice) and its cache (cpu_cache)."""

from __future__ import annotations

from dataclasses import dataclass

NAMES = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}
PRECISIONS = ("fp32", "int8-cpu", "bf16")


@dataclass(frozen=True)
class Route:
    backend: str  # "onnxruntime" or "openvino"
    precision: str  # "fp32", "int8-cpu" or "bf16"

    @property
    def model(self) -> str:
        """The bundle's ONNX file it runs: bf16 is OpenVINO's hint on the FP32 model."""
        return "fp32" if self.precision == "bf16" else self.precision

    @property
    def name(self) -> str:
        return f"{NAMES[self.backend]} {self.precision}"


@dataclass(frozen=True)
class Trial:
    route: Route
    startup_s: float
    ms: float | None  # median per call at ``batch``; None when it failed its check
    rel_error: float  # against ONNX Runtime FP32 on the photographs
    cosine: float
    top1_equal: int
    images: int
    failed: str = ""  # why it was left out


@dataclass(frozen=True)
class Choice:
    route: Route
    trials: tuple[Trial, ...]
    batch: int
    threads: int
    cpu: str
    measured_at: str
    cached: bool

    def why(self, notes: list[str]) -> str:
        best = next(t for t in self.trials if t.route == self.route)
        if len(self.trials) == 1:
            text = (f"{self.route.name} as asked; checked against ONNX Runtime FP32 on {best.images} photographs "
                    f"(relative error {best.rel_error:.1e}, cosine {best.cosine:.4f})")
        else:
            others = ", ".join(f"{t.route.name} {t.ms:.1f}" if t.ms is not None else f"{t.route.name} left out "
                               f"({t.failed})" for t in self.trials if t.route != self.route)
            timed = sum(t.ms is not None for t in self.trials)
            text = (f"{self.route.name}, the fastest of {timed} gated CPU paths measured on this CPU "
                    f"(batch {self.batch}, {self.threads} threads): {best.ms:.1f} ms; {others} ms")
        when = "cached measurement of " if self.cached else "measured "
        text += f" [{self.cpu}; {when}{self.measured_at}]"
        return text + "".join(f"; {n}" for n in notes)
