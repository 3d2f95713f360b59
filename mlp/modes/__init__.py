"""The modes of `main.py`, one module each: `train`, `eval`, `sweep`, `predict`,
`benchmark`. Each exposes `run(...)`; no mode imports another."""
