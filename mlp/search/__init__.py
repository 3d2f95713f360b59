"""The search over a population of models trained vmapped in one program.

- `strategy`: what a strategy is (`Trial`, `Round`, `Report`, `Strategy`):
  an ask/tell state machine with no JAX program and no file.
- `grid`, `halving`, `hyperband`, `pbt`: the strategies, one file each;
  `budgets`: the rung and bracket arithmetic of halving and Hyperband.
- `population`: the one driver that trains any strategy's rounds (shape
  groups, chunks, devices and hosts, a program cache, checkpoints, resume).
- `from_config`: the strategy and members a sweep config asks for.
- `outputs`: each member's result, and the workdir's tables, summary,
  events, plots and report.
- `preflight`: the checks of a config that need neither JAX nor data,
  which `main.py` runs before it imports a mode.
- `single`: one model trained alone (`--mode=train`), on the same engine.
- `api`: the public entry points (`search`, `run`, `train`).
"""
