"""Test support shipped with the worker: the tiny local DeepSeek-V3 model (tiny.py) that tests,
benchmarks and `--model tiny` use. The production engine never imports it (engine/loading.py
imports it lazily, only for the model name "tiny")."""
