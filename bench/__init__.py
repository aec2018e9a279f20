"""Benchmarks of the notifier service against baselines measured in the same run.

Entry point: ``python -m bench.run`` (see ``bench/README.md``).
"""
