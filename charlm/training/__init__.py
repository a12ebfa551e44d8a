"""Training a model: `train(request, on_event)` is the one entry point, alone or under torchrun.

request.py      TrainRequest, checked as a whole and its corpus encoded -> RunPlan
run.py          train(): the process group, the plan, the lock, the signals; prepare() and build()
trainer.py      the rank-aware Trainer and its loop
types.py        TrainData, TrainResult, the event callback
auto.py         automatic configuration of a new run (autoconfig.py the rule, calibrate.py the speed)
state.py        the resume state in and out of checkpoints
distributed.py  only the torch.distributed hooks (RankInfo, the process group, collectives)
schedule.py     get_lr (warmup, stable, decay) and Plateau (lower the rate, then stop early)
compare.py      several cells trained on the same text and budget, side by side
"""

from charlm.training.distributed import RankInfo
from charlm.training.request import RunPlan, TrainRequest, plan_run
from charlm.training.run import build, prepare, stop_on_signals, train
from charlm.training.trainer import TrainData, Trainer, TrainResult

__all__ = [
    "RankInfo",
    "RunPlan",
    "TrainData",
    "TrainRequest",
    "TrainResult",
    "Trainer",
    "build",
    "plan_run",
    "prepare",
    "stop_on_signals",
    "train",
]
