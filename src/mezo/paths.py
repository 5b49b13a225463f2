"""Where the checkout is: the scripts (mezo.sh, finetune.sh), data/ and result/ live at its root.

The package is installed editable from src/ (requirements.txt ends with `-e .`), so the root is two
levels above this package.
"""
import os

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
