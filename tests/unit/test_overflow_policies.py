"""The overflow policies have one owner, planner.OVERFLOW_FRACTIONS: the CRD's enum, the chart's
values schema, the chart's default and the CLI help are checked against it."""

from __future__ import annotations

import json
import pathlib

import yaml

from poolwarden import cli, planner

CHART = pathlib.Path(__file__).resolve().parents[2] / "charts" / "poolwarden"


def crd_versions():
    for path in sorted((CHART / "crds").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                for version in doc["spec"]["versions"]:
                    yield path.name, version


def test_the_policies_are_the_fractions_keys():
    assert planner.OVERFLOW_POLICIES == tuple(planner.OVERFLOW_FRACTIONS)
    assert planner.OVERFLOW_FRACTIONS["none"] == 0  # none keeps the whole share pooled


def test_the_crd_enum_is_the_planners():
    versions = list(crd_versions())
    assert versions, f"no CustomResourceDefinition under {CHART / 'crds'}"
    for name, version in versions:
        spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
        overflow = spec["properties"]["consumers"]["items"]["properties"]["overflow"]
        assert tuple(overflow["enum"]) == planner.OVERFLOW_POLICIES, (name, version["name"])
        assert overflow.get("default", "none") in planner.OVERFLOW_POLICIES


def test_the_values_schema_enum_and_the_default_are_the_planners():
    schema = json.loads((CHART / "values.schema.json").read_text())
    overflow = schema["properties"]["app"]["properties"]["overflow"]
    assert tuple(overflow["enum"]) == planner.OVERFLOW_POLICIES
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["app"]["overflow"] in planner.OVERFLOW_POLICIES


def test_the_cli_help_lists_the_policies_from_the_planner(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # argparse wraps at the terminal's width
    assert f"overflow={'|'.join(planner.OVERFLOW_POLICIES)}" in cli.CONSUMER_HELP
    help_text = cli.build_parser()._subparsers._group_actions[0].choices["plan"].format_help()
    assert "|".join(planner.OVERFLOW_POLICIES) in " ".join(help_text.split())
