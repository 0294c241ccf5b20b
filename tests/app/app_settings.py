"""Constants shared by the page tests (a module, since ``conftest`` names are ambiguous)."""

APP = "../../app.py"  # AppTest resolves it relative to this folder
TIMEOUT = 120  # seconds per script run: first model loads take a while on a busy CPU
TINY_ROWS = 10  # the tiny CSV's test split has exactly 10 rows
