"""Real darknet output and real Open Images rows, copied from the team's shared fixtures."""
from pathlib import Path

FIXTURES_ROOT = Path(__file__).resolve().parent.parent / "fixtures"
DARKNET_FIXTURES = FIXTURES_ROOT / "darknet"
OPENIMAGES_FIXTURES = FIXTURES_ROOT / "openimages"
