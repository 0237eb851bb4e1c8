"""What the test modules share besides fixtures (those stay in tests/conftest.py).

tests/ is on sys.path ([tool.pytest.ini_options] pythonpath), so a test imports these as
`from helpers.cli import run_ifexp`; no test module imports from another."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
