import sys
from pathlib import Path

_TESTS = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(_TESTS / "fault"))  # fault_helpers
sys.path.insert(0, str(_TESTS / "algorithms"))  # client_contexts
