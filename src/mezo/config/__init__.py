"""run.py's command line: the argument dataclasses, their ranges and the parser."""
