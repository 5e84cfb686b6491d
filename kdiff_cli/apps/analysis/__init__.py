"""Analyses and figures: the paper's 1-D toy (sec. 3.1) and Figure 5."""
