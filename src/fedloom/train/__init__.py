"""Local training: the client-side loop and the hooks FL algorithms plug into."""

from fedloom.train.local import (
    LocalTrainer,
    LocalTrainResult,
    TrainHook,
    adapter_parameters,
    cosine_lr,
    draw_examples,
    dynamic_steps,
)

__all__ = [
    "LocalTrainResult",
    "LocalTrainer",
    "TrainHook",
    "adapter_parameters",
    "cosine_lr",
    "draw_examples",
    "dynamic_steps",
]
