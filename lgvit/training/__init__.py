"""The training engine behind `lgvit train`: recipe (config), loop, epoch and evaluation (engine),
optimizer and schedule, checkpoints, EMA, DDP and the report.

Entry point: `lgvit.training.loop.train(TrainConfig(...))`. A flag's path: `config.py` (the field)
-> `loop.py` (what the run builds from it) -> `engine.py` (how each batch uses it).
"""
