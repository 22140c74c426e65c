"""The training job behind `lgvit train`: recipe (config), optimizer, EMA, checkpoints, DDP and the report.

Entry point: `lgvit.training.loop.train(TrainConfig(...))`.
"""
