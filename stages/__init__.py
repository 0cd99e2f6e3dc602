"""Thin DVC entry points: parse arguments, load params.yaml once, call ``clipbench.pipeline.<stage>.run``."""
