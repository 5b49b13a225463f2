"""The paper's experiments: the result log, gathering over seeds, the grid catalogue and reports."""
