"""Experiment configs, one file per experiment, each with ``get_config()``.

Installed as ``lstm_flax.configs`` (pyproject maps this folder there), so
``lstm-flax --config=NAME`` finds ``NAME.py`` here from any directory; a
config that builds on another imports it as ``from lstm_flax.configs import
NAME``.
"""
