"""The command's help screens: `kdiff deblur --help` shows the everyday options on one 80 x 24
screen, the research knobs in a second panel (as do `kdiff eval` and `kdiff train`)."""

import re


def test_everyday_options_fit_one_screen(cli, monkeypatch):
    """`kdiff deblur --help` at 80x24: usage and the everyday options before the research panel."""
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.delenv("TERMINAL_WIDTH", raising=False)
    r = cli("deblur", "--help", terminal_width=80)
    assert r.exit_code == 0
    lines = r.output.splitlines()
    assert max(len(line) for line in lines) <= 80
    research = next(i for i, line in enumerate(lines) if "Research options" in line)
    assert research <= 24, "\n".join(lines[:research])
    everyday, rest = "\n".join(lines[:research]), "\n".join(lines[research:])

    def has(text, option):  # an option's own row (not a mention in another's help)
        return re.search(rf"^\S\s{{1,4}}(\*\s+)?{option}(?![-\w])", text, re.M) is not None

    for option in ("--out", "--kernel", "--method", "--solver", "--quality", "--seed"):
        assert has(everyday, option) and not has(rest, option), option
    for option in ("--sampler", "--steps", "--samples", "--refine-steps", "--guidance-scale", "--tile"):
        assert has(rest, option) and not has(everyday, option), option
    for command in ("eval", "train"):
        assert "Research options" in cli(command, "--help", terminal_width=80).output
