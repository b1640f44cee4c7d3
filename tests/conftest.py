"""Pytest setup: make tests/helpers.py importable and keep absl quiet."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
