"""Recipes: defaults, YAML loading, dotted overrides, validation messages, and every shipped recipe."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from loraclf.config import Recipe, apply_overrides, load_recipe, save_recipe, validate
from loraclf.modeling.methods import validate_recipe
from loraclf.utils.errors import UserError

REPO = Path(__file__).resolve().parents[2]
RECIPES = sorted((REPO / "recipes").glob("**/*.yaml"))


def test_default_recipe_validates():
    r = Recipe()
    assert validate(r) is r
    assert r.adapter.targets is None  # each method's default modules; LoRA's are query/value (test_methods)
    assert r.adapter.r == 8


def test_yaml_recipe_loads_nested_keys(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text(
        "model:\n  name: roberta-base\n  head: mlp\n"
        "adapter:\n  targets: [query, key]\n  r: 4\n  bias: lora_only\n"
        "data:\n  clean: {digits: true}\n"
        "train:\n  lr: 0.0002\n  epochs: 2\n"
        "budget: 1000000\n",
        encoding="utf-8",
    )
    r = validate(load_recipe(p))
    assert r.model.name == "roberta-base"
    assert r.model.head == "mlp"
    assert r.adapter.targets == ["query", "key"]
    assert r.adapter.r == 4
    assert r.adapter.bias == "lora_only"
    assert r.data.clean.digits is True
    assert r.data.clean.html is True  # untouched keys keep their defaults
    assert r.train.lr == pytest.approx(2e-4)
    assert r.train.epochs == 2.0
    assert r.budget == 1_000_000


def test_yaml_scientific_notation_is_a_float(tmp_path):
    # PyYAML reads `1e-4` (no dot) as a string; recipes write learning rates this way all the time.
    p = tmp_path / "r.yaml"
    p.write_text("train:\n  lr: 1e-4\n", encoding="utf-8")
    assert load_recipe(p).train.lr == pytest.approx(1e-4)


def test_saved_recipe_loads_back_equal(tmp_path):
    r = apply_overrides(Recipe(), ["adapter.layer_ranks=[4,8]", "train.lr=3e-4", "model.dropout=0"])
    save_recipe(r, tmp_path / "recipe.yaml")
    assert load_recipe(tmp_path / "recipe.yaml") == r


def test_missing_recipe_file_names_it(tmp_path):
    with pytest.raises(UserError, match=r"nope\.yaml"):
        load_recipe(tmp_path / "nope.yaml")


def test_invalid_yaml_names_file_and_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("train:\n  lr: [1, 2\n  epochs: 3\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"bad\.yaml.*line \d+"):
        load_recipe(p)


def test_unknown_key_suggests_the_closest(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("adapter:\n  dropuot: 0.1\ntrain:\n  lr: 0.001\n", encoding="utf-8")
    with pytest.raises(UserError) as exc:
        load_recipe(p)
    msg = str(exc.value)
    assert "adapter.dropuot" in msg
    assert 'did you mean "adapter.dropout"' in msg
    assert str(p) in msg


def test_unknown_top_level_key_suggests_the_closest(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("trian:\n  lr: 0.001\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"'trian'.*did you mean \"train\""):
        load_recipe(p)


@pytest.mark.parametrize(
    ("yaml_text", "key"),
    [
        ("adapter:\n  r: eight\n", "adapter.r"),
        ("train:\n  lr: fast\n", "train.lr"),
        ("train:\n  compile: maybe\n", "train.compile"),
        ("data:\n  clean:\n    html: 3\n", "data.clean.html"),
        ("adapter:\n  targets: {q: 1}\n", "adapter.targets"),
        ("model: roberta-base\n", "model"),
    ],
)
def test_wrong_type_names_the_key_path(tmp_path, yaml_text, key):
    p = tmp_path / "r.yaml"
    p.write_text(yaml_text, encoding="utf-8")
    with pytest.raises(UserError) as exc:
        load_recipe(p)
    msg = str(exc.value)
    assert key in msg
    assert "\n" not in msg


def test_apply_overrides_parses_values():
    r = apply_overrides(
        Recipe(),
        [
            "train.lr=1e-4",
            "adapter.targets=[q,v]",
            "model.dropout=null",
            "adapter.r=16",
            "train.compile=true",
            "data.clean.digits=true",
            "adapter.layer_ranks=8*2**(i//4)",
            "budget=1e6",
        ],
    )
    assert r.train.lr == pytest.approx(1e-4)
    assert isinstance(r.train.lr, float)
    assert r.adapter.targets == ["q", "v"]
    assert r.model.dropout is None
    assert r.adapter.r == 16
    assert r.train.compile is True
    assert r.data.clean.digits is True
    assert r.adapter.layer_ranks == "8*2**(i//4)"
    assert r.budget == 1_000_000
    assert isinstance(r.budget, int)


def test_apply_overrides_does_not_mutate_its_input():
    base = Recipe()
    apply_overrides(base, ["train.lr=1e-4", "adapter.targets=[q]"])
    assert base == Recipe()


def test_comma_list_and_layer_rank_list_overrides():
    r = apply_overrides(Recipe(), ["adapter.targets=query,key", "adapter.layer_ranks=[4,8,8]"])
    assert r.adapter.targets == ["query", "key"]
    assert r.adapter.layer_ranks == [4, 8, 8]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.lrr=1", ["train.lrr", 'did you mean "train.lr"']),
        ("trian.lr=1", ["trian", 'did you mean "train.lr"']),
        ("train.epoch=1", ["train.epoch", 'did you mean "train.epochs"']),
        ("epochs=1", ["epochs", 'did you mean "train.epochs"']),
        ("data.clean.htm=true", ["data.clean.htm", 'did you mean "data.clean.html"']),
    ],
)
def test_unknown_override_key_suggests_the_closest(override, expected):
    with pytest.raises(UserError) as exc:
        apply_overrides(Recipe(), [override])
    for part in expected:
        assert part in str(exc.value)


def test_override_without_equals_is_an_error():
    with pytest.raises(UserError, match="key=value"):
        apply_overrides(Recipe(), ["train.lr"])


def test_override_of_wrong_type_names_the_key():
    with pytest.raises(UserError, match=r"adapter\.r"):
        apply_overrides(Recipe(), ["adapter.r=eight"])


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("adapter.r=-1", "adapter.r"),
        ("adapter.r=0", "adapter.r"),
        ("adapter.alpha=-2", "adapter.alpha"),
        ("adapter.dropout=1.0", "adapter.dropout"),
        ("adapter.bias=some", "adapter.bias"),
        ("adapter.method=lora2", "adapter.method"),
        ("adapter.targets=[]", "adapter.targets"),
        ("adapter.layer_ranks=[4,0]", "adapter.layer_ranks"),
        ("train.lr=0", "train.lr"),
        ("train.batch_size=0", "train.batch_size"),
        ("train.epochs=0", "train.epochs"),
        ("train.warmup_ratio=1.5", "train.warmup_ratio"),
        ("train.scheduler=cosinus", "train.scheduler"),
        ("data.val_size=0", "data.val_size"),
        ("data.max_length=4", "data.max_length"),
        ("data.max_train_samples=1", "data.max_train_samples"),
        ("model.head=huge", "model.head"),
        ("budget=0", "budget"),
    ],
)
def test_validate_rejects_bad_values_naming_the_key(override, key):
    r = apply_overrides(Recipe(), [override])
    with pytest.raises(UserError) as exc:
        validate_recipe(r)  # the recipe checks plus the adaptation method's (modeling/methods/)
    assert key in str(exc.value)


def test_validate_suggests_a_choice():
    r = apply_overrides(Recipe(), ["train.scheduler=cosin"])
    with pytest.raises(UserError, match='did you mean "cosine"'):
        validate(r)


def test_layer_options_need_lora():
    r = apply_overrides(Recipe(), ["adapter.method=head", "adapter.layers=[0]"])
    with pytest.raises(UserError, match=r"adapter\.method"):
        validate_recipe(r)


def test_shipped_recipes_exist():
    assert len(RECIPES) > 0, "no recipes/**/*.yaml found"


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_shipped_recipe_loads_and_validates(path):
    r = validate(load_recipe(path))
    assert r.description, f"{path.name}: recipes describe themselves"
    first = path.read_text(encoding="utf-8").splitlines()[0]
    # The first line is the exact command that runs the recipe.
    assert first.startswith("# loraclf train --config recipes/")
    assert f"recipes/{path.relative_to(REPO / 'recipes').as_posix()}" in first


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_shipped_recipe_plan_fits_budget_and_matches_its_header(path):
    from loraclf.modeling.plan import plan

    r = validate(load_recipe(path))
    p = plan(r, 4)  # AG News: 4 classes
    if r.budget is not None:
        assert p.trainable <= r.budget
    # Header lines joined with a space, so a count whose words wrap onto the next comment line is still found.
    lines = path.read_text(encoding="utf-8").splitlines()
    header = " ".join(line.lstrip("#").strip() for line in lines if line.startswith("#"))
    stated = re.findall(r"(\d{1,3}(?:,\d{3})+|\d{4,}) trainable\s+parameters", header)
    assert stated, f"{path.name}: the header states no exact count ('N trainable parameters')"
    assert p.trainable == int(stated[0].replace(",", "")), (path.name, stated)
