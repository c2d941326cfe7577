"""`tuneforge convert-config LF.yaml > tuneforge.yaml`: a LLaMA-Factory training YAML as a tuneforge config.

The config goes to stdout. Every option that is not carried over is listed with its reason, on stderr and as a
comment block at the top of the output; "not needed" marks options that change nothing in tuneforge. The output
is checked with tuneforge's own config loader before it is printed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["HELP", "NAME", "add_parser", "render", "run", "unmapped_lines"]

NAME = "convert-config"
HELP = "convert a LLaMA-Factory training YAML into a tuneforge config (stdout)"


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(NAME, help=HELP, description=__doc__)
    parser.add_argument("config", help="LLaMA-Factory training YAML (model_name_or_path, stage, dataset, ...)")
    parser.set_defaults(handler=run)


def _shown(value: Any) -> str:
    """A value as one short line of YAML."""
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()
    text = " ".join(text.split())
    return text if len(text) <= 60 else text[:57] + "..."


def unmapped_lines(options: dict[str, Any], unmapped: list[tuple[str, str]]) -> list[str]:
    """One line per option not carried over: `option: value -- reason`."""
    return [f"{key}: {_shown(options[key])} -- {reason}" for key, reason in unmapped]


def render(source: str, config: dict[str, Any], options: dict[str, Any], unmapped: list[tuple[str, str]]) -> str:
    """The output file: a comment block naming the source and every option not carried over, then the config."""
    import yaml

    lines = [f"# tuneforge config converted from {source} (LLaMA-Factory) by `tuneforge convert-config`."]
    if unmapped:
        lines.append(f"# LLaMA-Factory options not carried over ({len(unmapped)}):")
        lines += [f"#   {line}" for line in unmapped_lines(options, unmapped)]
    else:
        lines.append("# Every LLaMA-Factory option was carried over.")
    body = yaml.safe_dump(config, sort_keys=False, allow_unicode=True, default_flow_style=False)
    return "\n".join(lines) + "\n" + body


def run(args: argparse.Namespace) -> int:
    from tuneforge.config.llamafactory_yaml import convert_llamafactory, read_llamafactory_yaml
    from tuneforge.config.load import config_from_dict
    from tuneforge.errors import UserError

    path = Path(args.config)
    options = read_llamafactory_yaml(path)
    config, unmapped = convert_llamafactory(options)
    import tuneforge.methods  # noqa: F401  (registers the method and adapter parameters the output is checked with)

    try:
        config_from_dict(config, f"{path} (converted)")
    except UserError as err:
        raise UserError(f"{err} (fix that option in {path}, or edit the converted config by hand)") from None
    sys.stdout.write(render(path.name, config, options, unmapped))
    if unmapped:  # plain lines, never wrapped or styled: they are meant to be read and grepped
        lines = [f"{len(unmapped)} LLaMA-Factory option(s) of {path} not carried over:"]
        lines += [f"  {line}" for line in unmapped_lines(options, unmapped)]
        sys.stderr.write("\n".join(lines) + "\n")
    return 0
