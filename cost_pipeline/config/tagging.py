"""The tagging schema: keys and their rules, the team registry, virtual tags, guardrail scope."""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from cost_pipeline.config.base import _Model
from cost_pipeline.lib.keys import fold_key


class TagKey(_Model):
    """One canonical tag of the schema and the rules its values must follow."""

    key: str
    column: str = Field(pattern=r"^[a-z_]+$")
    required: bool = True
    required_when: dict[str, str] | None = None
    allowed: list[str] | None = None
    pattern: str | None = None

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            re.compile(value)
        return value


def _default_tag_keys() -> list[TagKey]:
    return [
        TagKey(key="ml-team", column="team"),
        TagKey(key="ml-project", column="project", pattern=r"^[a-z0-9][a-z0-9-]{0,62}$"),
        TagKey(
            key="ml-workload-type",
            column="workload_type",
            allowed=["training", "inference", "data-processing", "notebook"],
        ),
        TagKey(key="ml-environment", column="environment", allowed=["dev", "staging", "prod"]),
        TagKey(
            key="ml-experiment-id",
            column="experiment_id",
            required=False,
            required_when={"ml-workload-type": "training"},
            pattern=r"^[a-z0-9][a-z0-9._-]{0,127}$",
        ),
    ]


class Team(_Model):
    slack_channel: str | None = None
    owners: list[str] = []


class VirtualTagRule(_Model):
    """Fill tags a line lacks from other columns; rules apply in order, first match wins per key.

    Conditions (all given must hold): ``account_ids`` (usage account), ``services`` (product code),
    ``resource_prefixes`` (resource id or bucket name prefix), ``tag_equals`` (raw provider tag →
    value; keys are matched with the same folding as schema keys). Values come from ``set``
    (constants) or ``set_from_tag`` (another raw tag's value, translated by ``value_map`` if given).
    A filled value is validated like a real tag and its provenance is the rule's name.
    """

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    set: dict[str, str] = {}
    set_from_tag: dict[str, str] = {}
    value_map: dict[str, str] | None = None
    account_ids: list[str] | None = None
    services: list[str] | None = None
    resource_prefixes: list[str] | None = None
    tag_equals: dict[str, str] | None = None

    @model_validator(mode="after")
    def _does_something(self) -> "VirtualTagRule":
        if not self.set and not self.set_from_tag:
            raise ValueError(f"virtual tag rule {self.name!r} sets nothing (give set or set_from_tag)")
        if not any([self.account_ids, self.services, self.resource_prefixes, self.tag_equals, self.set_from_tag]):
            raise ValueError(f"virtual tag rule {self.name!r} has no condition and would match every line")
        return self


class EnforcementConfig(_Model):
    """What the generated guardrail policies cover (``cost-pipeline policies``)."""

    aws_create_actions: dict[str, str] = {"ec2:RunInstances": "arn:aws:ec2:*:*:instance/*"}
    aws_tag_policy_enforced_for: list[str] = ["ec2:instance"]
    gcp_resource_types: list[str] = ["compute.googleapis.com/Instance"]


class TaggingConfig(_Model):
    keys: list[TagKey] = Field(default_factory=_default_tag_keys)
    aliases: dict[str, list[str]] = {}
    teams: dict[str, Team] = {}
    virtual_tags: list[VirtualTagRule] = []
    enforcement: EnforcementConfig = EnforcementConfig()
    untagged_warn_share: float = Field(default=0.15, ge=0, le=1)
    untagged_error_share: float = Field(default=0.40, ge=0, le=1)

    @model_validator(mode="after")
    def _team_key_present(self) -> "TaggingConfig":
        columns = [k.column for k in self.keys]
        if "team" not in columns:
            raise ValueError("tagging.keys must define the key whose column is 'team'")
        if len(set(columns)) != len(columns):
            raise ValueError("tagging.keys: two keys map to the same column")
        known = {k.key for k in self.keys}
        for where, used in [("aliases", self.aliases)] + [
            (f"virtual_tags[{r.name}]", {**r.set, **r.set_from_tag}) for r in self.virtual_tags
        ]:
            unknown = sorted(set(used) - known)
            if unknown:
                raise ValueError(f"tagging.{where} names key(s) not in the schema: {unknown}")
        if self.untagged_error_share < self.untagged_warn_share:
            raise ValueError("tagging.untagged_error_share must be >= untagged_warn_share")
        return self

    def key(self, name: str) -> TagKey:
        found = self.key_for(name)
        if found is None:
            raise KeyError(f"{name!r} is not a key of the tagging schema ({', '.join(k.key for k in self.keys)})")
        return found

    def key_for(self, name: str) -> TagKey | None:
        """The schema key a spelling means (``ml_team``, ``user:ml-team``, an alias), or None."""
        folded = fold_key(name)
        for k in self.keys:
            if folded in {fold_key(s) for s in [k.key, *self.aliases.get(k.key, [])]}:
                return k
        return None
