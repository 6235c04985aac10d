import os
import sys

# make tests/apic_checker.py importable as a plain module from the test files
sys.path.insert(0, os.path.dirname(__file__))
