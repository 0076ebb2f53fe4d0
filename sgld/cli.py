"""``sgl-diffusion`` / ``sgld``: the SGLang-style command line (generate, serve).

A thin translator: each flag maps to one config key (sgld.config.options), ``--config``
files are read first and flags win, and the result is composed by Hydra exactly as
``python -m sgld.generate`` composes it. Importing this module does not import torch.
"""

from __future__ import annotations

import argparse
import logging
import sys
import textwrap
import time
from typing import Any, Sequence

from sgld.config import sglang_flags
from sgld.config.options import (
    BY_NAME, HTTP, MEMORY, MODEL, OPTIONS, OUTPUT, PARALLEL, PROMPT_SETS, SAMPLING, SERVER, Option,
)
from sgld.config.sglang_flags import BoolFlag
from sgld.errors import UserError
from sgld.logs import configure_logging

# --help headings in order: the engine's (SERVER) options by what they set, then one per other section.
HEADINGS = (MODEL, PARALLEL, MEMORY, "sampling parameters", PROMPT_SETS, "output options", "HTTP server")
SECTION_HEADINGS = {SAMPLING: "sampling parameters", OUTPUT: "output options", HTTP: "HTTP server"}


def heading(option: Option) -> str:
    """The --help heading an option is listed under."""
    return option.group if option.section == SERVER else SECTION_HEADINGS[option.section]


def takes(command: str, option: Option) -> bool:
    """Whether ``command`` (generate, serve or plan) takes ``option``."""
    if command in ("generate", "plan"):
        return option.section != HTTP
    return not option.generate_only


def models_epilog() -> str:
    """The names --model-path knows (sgld.variants), for the end of --help."""
    from sgld.variants import VARIANTS

    # Wrapped here, never at a name's hyphens, so each name can be copied whole (argparse leaves it as it is).
    fill = lambda text: textwrap.fill(text, width=79, break_on_hyphens=False, break_long_words=False)  # noqa: E731
    tiny = ", ".join(v.name for v in VARIANTS if v.tiny)
    released = ", ".join(v.name for v in VARIANTS if not v.tiny)
    return "\n".join((
        "models --model-path knows by name:",
        fill(f"  built-in tiny models (random weights, built offline on first use): {tiny}"),
        fill(f"  released models (from the Hugging Face cache, else downloaded): {released}"),
    ))


def _default_text(option: Option, defaults: Any) -> str:
    """The option's default as composed from conf/ with the default model."""
    from omegaconf import OmegaConf

    if option.name == "model_path":
        return "required"
    node_key = option.key
    parent, _, leaf = node_key.rpartition(".")
    node = OmegaConf.select(defaults, parent) if parent else defaults
    raw = node._get_node(leaf)._value() if node is not None else None  # noqa: SLF001
    if isinstance(raw, str) and raw.startswith("${model.sampling_defaults."):
        return "the model's own (conf/model/*.yaml)"
    value = OmegaConf.select(defaults, node_key)
    if option.value is not None:  # a switch of a choice key
        return "on" if value == option.value else "off"
    if option.name == "lora_weight_name":
        return "the folder's one .safetensors file"
    if option.key == "model.loras":
        return "none" if option.name == "lora_path" else "1.0" if option.name == "lora_scale" else \
            "transformer" if option.name == "lora_target" else "default (later ones: the file's stem)"
    if OmegaConf.is_list(value):  # a list of choices prints as their values (fp32 fp16), not enum reprs
        return " ".join(str(item) for item in value) or "same as --precision"
    return "unset" if value is None else str(value)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand, generated from the option table."""
    from sgld.config.compose import compose_config

    defaults = compose_config()
    parser = argparse.ArgumentParser(
        prog="sgl-diffusion",
        description="sgld: fast inference for diffusion image and video models.",
    )
    sub = parser.add_subparsers(dest="command", metavar="{generate,serve,plan}")
    sub.required = True
    epilog = models_epilog()
    raw = argparse.RawDescriptionHelpFormatter  # the epilog keeps its own lines
    gen = sub.add_parser("generate", help="run one generation and exit", description="Run one generation and exit.",
                         epilog=epilog, formatter_class=raw)
    serve = sub.add_parser("serve", help="start the OpenAI-compatible HTTP server", description="Start the HTTP server.",
                           epilog=epilog, formatter_class=raw)
    plan = sub.add_parser("plan", help="print the memory plan of a run without loading weights",
                          description="Print where each component would live, whether the DiT runs layer-wise and the "
                          "VAE tiles, and the predicted peak GPU memory, for generate's options; no weights load.",
                          epilog=epilog, formatter_class=raw)
    for command, p in (("generate", gen), ("serve", serve), ("plan", plan)):
        p.add_argument("--config", metavar="FILE", help="JSON or YAML file of options (same names, underscores); flags win over it")
        options = [option for option in OPTIONS if takes(command, option)]
        groups = {title: p.add_argument_group(title) for title in HEADINGS if any(heading(o) == title for o in options)}
        for option in options:
            _add_option(groups[heading(option)], option, _default_text(option, defaults))
        # SGLang's other flags (hidden from --help): mapped, accepted with a log line, or refused with the reason.
        sglang_flags.add_to_parser(p, command, {s for action in p._actions for s in action.option_strings})
    return parser


def _add_option(group: argparse._ArgumentGroup, option: Option, default: str) -> None:
    kwargs: dict[str, Any] = {"default": None, "help": f"{option.help} (default: {default})"}
    if option.type is bool:
        kwargs["action"] = BoolFlag  # --x, --x true|false (SGLang's spelling), --no-x
    else:
        kwargs["type"] = option.type
        kwargs["metavar"] = option.name.upper()
        if option.choices:
            kwargs["type"] = str.lower  # SGLang takes --log-level DEBUG
            kwargs["choices"] = option.choices
            kwargs["metavar"] = "{" + ",".join(option.choices) + "}"
        if option.many:
            kwargs["nargs"] = "+"
        if option.repeat:
            kwargs["action"] = "extend"
    if option.name == "seed":
        kwargs["nargs"] = "+"  # SGLang's spelling; more than one is refused with the reason (see parse)
    if option.several or option.name == "prompt":
        # SGLang's nargs='+': --image-path a b, --prompt "a fox" "a cat"; repeating the flag adds more.
        kwargs["nargs"] = "+"
        kwargs["action"] = "extend"
    if option.name == "prompt":
        kwargs["help"] += "; several prompts (--prompt A B, or the flag repeated) make one output each"
    aliases = ["--" + alias.replace("_", "-") for alias in option.aliases]
    group.add_argument(option.flag, *aliases, dest=option.name, **kwargs)


def collect_options(args: argparse.Namespace) -> dict[str, Any]:
    """Options from --config (if any) with the flags given on the command line on top."""
    from sgld.config.config_file import read_config_file

    options: dict[str, Any] = read_config_file(args.config) if args.config else {}
    for name, value in getattr(args, "sglang_options", {}).items():  # SGLang's flags, mapped (sgld's own win)
        if name == "vae_config" and isinstance(options.get(name), dict):
            value = {**options[name], **value}
        options[name] = value
    for option in OPTIONS:
        value = getattr(args, option.name, None)
        if value is not None:
            options[option.name] = value
    if not options.get("model_path"):
        raise UserError("--model-path is required (or model_path in the --config file)", param="model_path")
    return options


def cmd_generate(args: argparse.Namespace) -> int:
    """Compose the run, generate once, report where the output went."""
    from sgld.run_config import run_config_from_options

    prompts = args.prompt or []
    args.prompt = prompts[0] if prompts else None
    run = run_config_from_options(collect_options(args))
    configure_logging(run.log_level)  # a --config file may set it
    from sgld.batch import is_prompt_set
    from sgld.runner import run_generation, run_prompt_set

    start = time.perf_counter()
    if is_prompt_set(run) or len(prompts) > 1:
        if len(prompts) > 1 and run.sampling.prompts_file:
            raise UserError("give several --prompt values or --prompt-file, not both", param="prompt")
        if run.output.perf_dump_path:
            raise UserError("--perf-dump-path reports one generation; a prompt set writes summary.json instead",
                            param="perf_dump_path")
        summary = run_prompt_set(run, [{"prompt": p} for p in prompts] if len(prompts) > 1 else None)
        print(f"done in {time.perf_counter() - start:.1f} s: {summary['done']} of {summary['total']} outputs, "
              f"{summary['failed']} failed, in {run.output.path} (manifest.jsonl, summary.json)")
        return 1 if summary["failed"] else 0
    result = run_generation(run)
    elapsed = time.perf_counter() - start
    if result is None:  # a rank other than 0 under torchrun: rank 0 reports
        return 0
    from sgld.runner import describe_timings

    where = str(result.path) if result.path else "not saved (--no-save-output)"
    print(describe_timings(result))
    if run.output.perf_dump_path:
        from server.perf_log import write_benchmark_report

        stages = {name: seconds for name, seconds in result.timings.items() if name != "load"}
        report = write_benchmark_report(run.output.perf_dump_path, "generate", stages,
                                        elapsed - result.timings.get("load", 0.0))
        print(f"benchmark report: {report}")
    print(f"done in {elapsed:.1f} s: {where}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Compose the run and serve it over HTTP until interrupted."""
    from sgld.run_config import run_config_from_options

    if args.prompt and len(args.prompt) > 1:
        raise UserError("serve takes at most one --prompt (the default prompt of requests)", param="prompt")
    args.prompt = args.prompt[0] if args.prompt else None

    options = collect_options(args)
    for name in options:  # a --config file may hold generate's options; serve would ignore them silently
        option = BY_NAME.get(name)
        if option is not None and not takes("serve", option):
            raise UserError(f"{name} is an option of `generate` (prompt sets, output files), not of `serve`", param=name)
    run = run_config_from_options(options)
    from server.layout import data_parallel_options

    spread = data_parallel_options(options, run)  # N GPUs for a family that cannot split a request: N workers
    if spread is not None:
        run = run_config_from_options(spread)
    from sgld.runner import check_model_folder
    from server.main import serve

    check_model_folder(run)
    serve(run)
    return 0


def parse(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """Parse the command line as SGLang writes it (see sgld.config.sglang_flags); SGLang's flags become sgld
    options in ``args.sglang_options``. Flags neither knows are argparse's error, as before."""
    args, extras = parser.parse_known_args(sglang_flags.normalize_argv(list(argv)))
    components, unknown = sglang_flags.component_options(extras)
    if unknown:
        parser.error("unrecognized arguments: " + " ".join(unknown))
    given = {o.name: getattr(args, o.name) for o in OPTIONS if getattr(args, o.name, None) is not None}
    sglang = {dest: value for dest, value in vars(args).items() if dest.startswith("sglang:")}
    mapped = sglang_flags.resolve(sglang, given)
    mapped.update({name: value for name, value in components.items() if name not in given})
    for name in [n for n in mapped if n in BY_NAME and not takes(args.command, BY_NAME[n])]:
        logging.getLogger("sgld").info("%s: no effect in %s (it is an option of serve)", BY_NAME[name].flag, args.command)
        del mapped[name]
    args.sglang_options = mapped
    if isinstance(args.seed, list):  # SGLang's --seed takes several (one per output); sgld's outputs count on from one
        if len(args.seed) > 1:
            raise UserError(f"sgld takes one --seed (got {len(args.seed)}): a prompt's outputs use seed, seed+1, ...",
                            param="seed")
        args.seed = args.seed[0]
    return args


def cmd_plan(args: argparse.Namespace) -> int:
    """Print the memory plan of the run the options describe (sgld.models.memory_plan); no weights load."""
    from sgld.models.memory_plan import plan_report
    from sgld.run_config import run_config_from_options

    args.prompt = args.prompt[0] if args.prompt else None
    print(plan_report(run_config_from_options(collect_options(args))))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``sgl-diffusion`` and ``sgld``: exit 0 on success, 2 on bad input."""
    configure_logging()
    try:
        parser = build_parser()
        args = parse(parser, sys.argv[1:] if argv is None else argv)
        configure_logging(args.log_level or args.sglang_options.get("log_level") or "info")
        handler = {"generate": cmd_generate, "serve": cmd_serve, "plan": cmd_plan}[args.command]
        return handler(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def entry() -> None:
    """The ``sgl-diffusion`` / ``sgld`` console script: ``main``, then the process ends without the interpreter's
    slow finalization (``sgld.fast_exit``)."""
    from sgld.fast_exit import run_and_exit

    run_and_exit(main)


if __name__ == "__main__":
    entry()
