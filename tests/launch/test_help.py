"""``dfml run --help`` and ``dfml list --verbose``, generated from the config docstrings."""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from dataclasses import dataclass

import pytest

from dfml.data.config import PARTITIONS, PartitionConfig
from dfml.fault.config import CHAOS_MODES
from dfml.launch import help as helpgen
from dfml.launch.cli import main
from dfml.launch.options import SECTIONS, all_option_types, field_types, flag
from dfml.launch.registry import ALGORITHMS
from dfml.topology.config import TOPOLOGIES


def run_help(capsys, monkeypatch) -> str:
    monkeypatch.setenv("COLUMNS", "400")  # one line per flag where possible
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


def flag_blocks(text: str) -> dict[str, str]:
    """``--flag`` → its help text (continuation lines joined)."""
    blocks: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        start = re.match(r"^  (--[\w-]+)(?: \[?V\]?)?\s*(.*)$", line)
        if start:
            current = start[1]
            blocks[current] = start[2]
        elif current and line.startswith("    ") and line.strip():
            blocks[current] = f"{blocks[current]} {line.strip()}".strip()
        else:
            current = None
    return blocks


def test_every_config_field_is_documented():
    missing = helpgen.undocumented()
    listing = "\n".join(f"  {cls}: {', '.join(names)}" for cls, names in sorted(missing.items()))
    assert not missing, f"fields without an 'Attributes:' docstring entry:\n{listing}"


def test_an_undocumented_field_is_reported_where_it_is_declared():
    @dataclass(frozen=True)
    class Base:
        """Base knobs.

        Attributes:
            a: documented in the base.
        """

        a: int = 1
        b: int = 2

    @dataclass(frozen=True)
    class Child(Base):
        """Adds c, documents b (a is inherited).

        Attributes:
            c: documented in the child.
        """

        b: int = 3
        c: float = 0.5
        d: str = "x"

    assert helpgen.field_doc(Child, "a") == "documented in the base."
    missing = helpgen.undocumented([Base, Child])
    assert missing == {
        f"{Base.__module__}.{Base.__qualname__}": ["b"],
        f"{Child.__module__}.{Child.__qualname__}": ["d"],
    }


def test_attribute_section_parsing():
    doc = """Summary line.

    Attributes:
        alpha: first line
            continued, with :data:`PARTITIONS` and ``code``.
        beta (int): typed Google style.

        gamma: after a blank line.
    Returns:
        not an attribute: ignored.
    """
    assert helpgen.attribute_docs(doc) == {
        "alpha": "first line continued, with PARTITIONS and code.",
        "beta": "typed Google style.",
        "gamma": "after a blank line.",
    }
    assert helpgen.attribute_docs("No sections.") == {}
    assert helpgen.plain(":class:`~dfml.x.Thing` and :meth:`Algorithm.adapt`") == (
        "Thing and Algorithm.adapt"
    )


def test_every_flag_has_a_description_and_its_default(capsys, monkeypatch):
    blocks = flag_blocks(run_help(capsys, monkeypatch))
    bad = []
    for name in sorted(all_option_types()):
        text = blocks.get(f"--{flag(name)}", "")
        description = text.split(" (")[0]
        if "default " not in text or len(description) < 3 or "undocumented" in text:
            bad.append(f"  --{flag(name)}: {text or 'missing from dfml run --help'}")
    assert not bad, "flags without a description or default:\n" + "\n".join(bad)


def test_help_groups_by_concern(capsys, monkeypatch):
    text = run_help(capsys, monkeypatch)
    titles = [helpgen.GROUP_TITLES.get(k, k) for k in SECTIONS]
    for title in [*titles, helpgen.ALGORITHM_GROUP]:
        assert re.search(rf"^{re.escape(title)}:$", text, re.M), title
    assert "placement (resources):" in text and "training / evaluation:" in text
    groups = helpgen.option_groups()
    names = [o.name for g in groups for o in g.options]
    assert sorted(names) == sorted(all_option_types())  # every option exactly once
    assert len(names) == len(set(names))


def test_help_line_format_and_allowed_values(capsys, monkeypatch):
    blocks = flag_blocks(run_help(capsys, monkeypatch))
    alpha = helpgen.field_doc(PartitionConfig, "alpha").rstrip(".")
    assert blocks["--alpha"] == f"{alpha} (float, default {PartitionConfig.alpha})"
    assert f"(str, default ring; one of {', '.join(TOPOLOGIES)})" in blocks["--topology"]
    assert f"one of {', '.join(PARTITIONS)})" in blocks["--partition"]
    assert f"one of {', '.join(CHAOS_MODES)})" in blocks["--chaos-mode"]
    assert "(ints, comma-separated, default 0,1,5)" in blocks["--pers-steps"]
    assert "(int or none, default none)" in blocks["--local-only-epochs"]
    assert "(bool, default true)" in blocks["--personalized-eval"]
    assert "one of gossip, server" in blocks["--aggregation"]
    assert blocks["--mu"].endswith("[used by: fedprox]")


def test_knob_defaults_that_differ_by_algorithm_are_listed():
    option = helpgen.algorithm_option("inner_steps")
    defaults = {
        a: helpgen.format_default(helpgen.default_of(cls.Config, "inner_steps"))
        for a, cls in ALGORITHMS.items()
        if "inner_steps" in field_types(cls.Config)
    }
    main_default = Counter(defaults.values()).most_common(1)[0][0]
    assert f"default {main_default}" in option.help
    for algo, default in defaults.items():
        if default != main_default:
            assert f"{algo}: {default}" in option.help


def test_used_by_is_computed_from_the_config_classes():
    for option in next(
        g for g in helpgen.option_groups() if g.title == helpgen.ALGORITHM_GROUP
    ).options:
        users = [a for a, cls in ALGORITHMS.items() if option.name in field_types(cls.Config)]
        listed = re.findall(r"\[used by: ([^\]]+)\]", option.help)
        named = {a.strip() for chunk in listed for a in chunk.split(",")}
        if named == {"all algorithms"}:
            named = set(ALGORITHMS)
        assert named == set(users), option.name


def test_clustering_knobs_say_they_apply_with_cluster_by_labels():
    group = next(g for g in helpgen.option_groups() if g.title == helpgen.ALGORITHM_GROUP)
    marked = {o.name for o in group.options if "any algorithm with --cluster-by labels" in o.help}
    assert marked == {"clusters", "cluster_threshold", "label_vector"}
    run = next(g for g in helpgen.option_groups() if g.title == "run")
    assert "one of none, labels" in next(o.help for o in run.options if o.name == "cluster_by")


def test_compression_knobs_say_they_apply_to_any_gossip_algorithm():
    group = next(g for g in helpgen.option_groups() if g.title == helpgen.ALGORITHM_GROUP)
    helps = {o.name: o.help for o in group.options}
    marked = {n for n, h in helps.items() if "any gossip algorithm with --compressor" in h}
    assert marked == {"compressor", "compression", "levels"}
    assert "one of none, topk, randk, qsgd, sign" in helps["compressor"]
    assert "[used by: choco-sgd]" in helps["consensus_lr"]


def test_choices_name_real_fields():
    for (cls, name), values in helpgen.CHOICES.items():
        assert name in {f.name for f in dataclasses.fields(cls)}, (cls, name)
        assert values and all(isinstance(v, str) for v in values)


def test_percent_in_a_doc_does_not_break_argparse(monkeypatch, capsys):
    monkeypatch.setattr(helpgen, "_description", lambda cls, name: "share in % of clients")
    text = run_help(capsys, monkeypatch)
    assert "share in % of clients" in text


def test_list_verbose_one_line_per_algorithm(capsys):
    assert main(["list", "--verbose"]) == 0
    out = capsys.readouterr().out.splitlines()
    lines = [line.strip() for line in out if line.startswith("  ")]
    assert [line.split(":")[0] for line in lines] == sorted(ALGORITHMS)
    for line, name in zip(lines, sorted(ALGORITHMS), strict=True):
        assert f"[config: {ALGORITHMS[name].Config.__name__}]" in line
    fedprox = next(line for line in lines if line.startswith("fedprox:"))
    assert "Li et al., MLSys 2020" in fedprox
    assert any(line.startswith("datasets: ") for line in out)


def test_list_plain_is_unchanged_and_top_level_verbose_still_works(capsys):
    assert main(["-v", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("algorithms: ") and "fedprox" in out[0]
