"""Benchmarks, fuzzing and experiments: everything `ztfl bench` and `ztfl experiment` run."""
