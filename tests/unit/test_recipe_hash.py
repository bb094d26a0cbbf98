from pathlib import Path

from pyd.image.recipe import RecipeFile, read_recipe, recipe_hash
from pyd.resources import data_dir

PARAMS = {"arch": "x86_64", "suite": "trixie"}


def test_hash_ignores_listing_order() -> None:
    a = RecipeFile("a", False, b"1")
    b = RecipeFile("b", True, b"2")
    assert recipe_hash([a, b], PARAMS) == recipe_hash([b, a], PARAMS)


def test_hash_changes_with_content_exec_bit_name_and_params() -> None:
    base = recipe_hash([RecipeFile("build", True, b"x")], PARAMS)
    assert recipe_hash([RecipeFile("build", True, b"y")], PARAMS) != base
    assert recipe_hash([RecipeFile("build", False, b"x")], PARAMS) != base
    assert recipe_hash([RecipeFile("build2", True, b"x")], PARAMS) != base
    assert recipe_hash([RecipeFile("build", True, b"x")], {**PARAMS, "suite": "sid"}) != base


def test_read_recipe_skips_docs_and_python_droppings(tmp_path: Path) -> None:
    (tmp_path / "build").write_text("#!/bin/sh\n")
    (tmp_path / "build").chmod(0o755)
    (tmp_path / "README.md").write_text("# editing this must not rebuild the image\n")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "x.pyc").write_bytes(b"junk")
    files = read_recipe(tmp_path)
    assert [(f.path, f.executable) for f in files] == [("build", True)]


def test_real_recipe_has_its_parts() -> None:
    paths = {f.path for f in read_recipe(data_dir("guest-image"))}
    for needed in (
        "build",
        "packages.txt",
        "initrd/init",
        "overlay/etc/inittab",
        "overlay/usr/lib/pyd/seed",
        "overlay/usr/lib/pyd/datadisk",
    ):
        assert needed in paths
