"""``loraclf plan``: the exact trainable-parameter plan of a recipe, from the model's config alone (no weights).

With ``--search --budget N`` it lists the strongest configurations that fit the budget instead (see
:mod:`loraclf.modeling.plan`).
"""

from __future__ import annotations

import dataclasses
import json

from loraclf.cli.args import add_recipe_flags, check_recipe, resolve_recipe
from loraclf.data.paths import check_data_path
from loraclf.utils.errors import UserError, say


def add_command(sub) -> None:
    """Register ``plan`` on an argparse subparsers object."""
    p = sub.add_parser("plan", help="exact trainable-parameter plan from the config alone (no weights)")
    add_recipe_flags(p, "plan")
    p.add_argument("--num-labels", type=int, help="classes (default: from --train, else the config's)")
    p.add_argument("--train", help="data file whose label count sets --num-labels")
    p.add_argument(
        "--search", action="store_true", help="list the strongest configurations that fit --budget"
    )
    p.add_argument("--top", type=int, default=12, help="rows of --search")
    p.add_argument(
        "--methods",
        help="with --search: adaptation methods to compare, comma separated (lora,dora,vera,ia3,…)",
    )
    p.add_argument(
        "--tapt",
        action="store_true",
        help="also count what trains in the TAPT stage (`loraclf tapt`: LoRA + the masked-LM head)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("overrides", nargs="*", help="key.sub=value recipe overrides")


def _check_args(args) -> None:
    """Everything that needs no model: numbers, the --train path, the recipe keys and values."""
    if args.num_labels is not None and args.num_labels < 2:
        raise UserError(f"--num-labels must be at least 2, got {args.num_labels}")
    if args.search and args.top < 1:
        raise UserError(f"--top must be at least 1 (rows of --search), got {args.top}")
    if args.train:
        check_data_path(args.train, "--train")
    check_recipe(args)


def cmd_plan(args) -> int:
    _check_args(args)
    # Reading the model config and data file needs transformers and pandas: loaded after the cheap checks.
    from loraclf.data.tables import load_texts
    from loraclf.modeling.backbones import load_config
    from loraclf.modeling.plan import check_budget, plan

    recipe = resolve_recipe(args)
    num_labels = args.num_labels
    if num_labels is None and args.train:
        _, label_map = load_texts(args.train, recipe.data, "--train")
        num_labels = len(label_map)
    if num_labels is None:
        num_labels = load_config(recipe.model.name, prefer_shipped=True).num_labels
    if num_labels < 2:
        raise UserError(f"--num-labels must be at least 2, got {num_labels}")
    if args.search:
        return _search(args, recipe, num_labels)
    p = plan(recipe, num_labels)
    stage = _tapt_stage(recipe) if args.tapt else None
    if args.json:
        print(json.dumps({**p.to_json(), "tapt": stage} if stage else p.to_json(), indent=1))
    else:
        print(format_plan(p, recipe) + (format_tapt(stage) if stage else ""))
    check_budget(p)
    return 0


def _tapt_stage(recipe) -> dict:
    from loraclf.toolbox.tapt import tapt_plan

    return tapt_plan(recipe)


def format_tapt(stage: dict) -> str:
    """The TAPT stage's lines under the plan table (its count is separate: LoRA is merged before the classifier)."""
    return (
        f"\n\nTAPT stage (loraclf tapt; merged into the backbone, not part of the classifier's count)\n"
        f"{'  lora (' + str(stage['targets']) + ' layers)':<24}{stage['lora']:>14,}\n"
        f"{'  masked-LM head':<24}{stage['head']:>14,}   transform + bias; decoder tied to the embeddings\n"
        f"{'trainable':<24}{stage['trainable']:>14,}\n"
        f"{'total':<24}{stage['total']:>14,}"
    )


def _search(args, recipe, num_labels: int) -> int:
    from loraclf.modeling.plan import search

    if not recipe.budget:
        raise UserError("--search needs --budget N (the trainable-parameter limit to search under)")
    if args.methods:
        return _search_methods(recipe, num_labels, args)
    found = search(recipe, num_labels, recipe.budget, top=args.top)
    if args.json:
        rows = [{"flags": c.flags(), "trainable": c.trainable, "adapters": c.adapters} for c in found]
        print(json.dumps(rows, indent=1))
        return 0
    print(
        f"Configurations of {recipe.model.name} ({num_labels} labels, head {recipe.model.head}) within "
        f"{recipe.budget:,} trainable parameters, ranked by parameters spent on adapters "
        "(more coverage and rank first):"
    )
    head = f" --head {recipe.model.head}" if recipe.model.head != "default" else ""
    for c in found:
        print(
            f"  {c.trainable:>10,}  adapters {c.adapters:>9,}   "
            f"loraclf train --model {recipe.model.name}{head} {c.flags()}"
        )
    if not found:
        print("  (none: the head alone exceeds the budget; use --head linear or a larger budget)")
    return 0


def _search_methods(recipe, num_labels: int, args) -> int:
    """``--search --methods a,b,…``: the strongest configuration of each method within the budget."""
    from loraclf.modeling.method_search import search_methods, why_none

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    found = search_methods(recipe, num_labels, recipe.budget, methods, top=args.top)
    # A method with no row says why (refused for this model or head, or too large even at its smallest).
    missing = {
        m: why_none(recipe, num_labels, recipe.budget, m)
        for m in dict.fromkeys(methods)
        if not any(c.method == m for c in found)
    }
    if args.json:
        print(json.dumps([dataclasses.asdict(c) for c in found], indent=1))
        for m, why in missing.items():
            say(f"plan --search: no {m} configuration: {why}")
        return 0
    print(
        f"Configurations of {recipe.model.name} ({num_labels} labels, head {recipe.model.head}) within "
        f"{recipe.budget:,} trainable parameters, by method, ranked by parameters spent on the method:"
    )
    head = f" --head {recipe.model.head}" if recipe.model.head != "default" else ""
    for c in found:
        print(
            f"  {c.method:<8}{c.trainable:>10,}  method params {c.adapters:>9,}   "
            f"loraclf train --model {recipe.model.name}{head} {c.flags}"
        )
    for m, why in missing.items():
        print(f"  {m:<8}    none   {why}")
    if not found:
        print("  (none fits: the head alone may exceed the budget; use --head linear or a larger budget)")
    return 0


def _method_line(a) -> str | None:
    """The method's settings line of the plan table (None for methods with no settings: head, full, BitFit)."""
    from loraclf.modeling.methods import get_method

    describe = get_method(a.method).describe
    return describe(a) if describe is not None else None


def format_plan(p, recipe) -> str:
    """The plan as a table: adapters per layer, biases, head, other, totals and the budget verdict."""
    a = recipe.adapter
    lines = [f"model    {p.model}   labels {p.num_labels}   head {recipe.model.head}   method {a.method}"]
    method_line = _method_line(a)
    lines += [method_line] if method_line else []
    lines += ["", f"{'part':<24}{'trainable':>14}"]
    for layer, n in sorted(p.adapters_per_layer.items()):
        kinds = p.kinds_per_layer.get(layer, {})
        named = ", ".join(
            f"{k} {v:,}" for k, v in sorted(kinds.items()) if k not in ("head", "bias", "other")
        )
        label = "  adapters layer " + str(layer) if layer >= 0 else "  adapters (no layer)"
        lines.append(f"{label:<24}{n:>14,}   {named}".rstrip())
    if p.adapters_per_layer:
        lines.append(f"{'adapters':<24}{p.adapters:>14,}")
    lines.append(f"{'biases':<24}{p.biases:>14,}")
    lines.append(f"{'head':<24}{p.head:>14,}")
    if p.other:
        lines.append(f"{'other (full fine-tune)':<24}{p.other:>14,}")
    lines.append(f"{'trainable':<24}{p.trainable:>14,}")
    lines.append(f"{'total':<24}{p.total:>14,}")
    lines.append(f"{'ratio':<24}{p.ratio:>14.4%}")
    if p.budget is not None:
        verdict = "fits" if p.trainable <= p.budget else "OVER BUDGET"
        lines.append(f"{'budget':<24}{p.budget:>14,}   {verdict} ({p.budget - p.trainable:+,})")
    return "\n".join(lines)


COMMANDS = {"plan": cmd_plan}
