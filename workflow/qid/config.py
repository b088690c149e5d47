"""Load a study config (`load`): JSON-schema validation, the rules a schema cannot say, and the
schema's defaults filled in. The one loader of the Snakefile and of every `qid` command.

Every failure is a `ConfigError` with one line naming the culprit (config key, method, bit width
or path), raised before any job runs. The schema ships inside the package (qid/schema), and each
method's options come from the method registry (qid.quantize.METHODS).
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from qid import QidError
from qid.quantize import METHODS, Option
from qid.schedule import schedule_problem

# Inside the package, so that an installed (not editable) qid finds it; config/schema links here.
SCHEMA = "schema/config.schema.yaml"


class ConfigError(QidError):
    pass


REQUIRED_BY_SOURCE = {
    "train": ["training"],
    "hub": ["repo", "tokens_per_step"],
    "local": ["path", "tokens_per_step"],
}


def _where(path: Any) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _properties(node: dict, root: dict) -> set[str]:
    """The keys a schema node allows: its own properties and those of the node it $refs."""
    keys = set(node.get("properties", {}))
    if "$ref" in node:
        target = root
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        keys |= _properties(target, root)
    return keys


@cache
def load_schema() -> dict:
    """The config schema, each method's options added from the registry: `methods.<method>`
    allows `bits`, `threads` and that method's options only. Cached: do not modify it."""
    text = resources.files("qid").joinpath(SCHEMA).read_text(encoding="utf-8")
    schema = yaml.safe_load(text)
    methods = schema["properties"]["methods"]
    common = methods["additionalProperties"]
    methods["properties"] = {name: _method_item(common, m.options) for name, m in METHODS.items()}
    # A name the registry lacks takes any method's options, so that check_semantics names the
    # unknown method rather than one of its options.
    every = {k: v for m in METHODS.values() for k, v in m.options.items()}
    methods["additionalProperties"] = _method_item(common, every)
    return schema


def schema_key(*keys: str) -> dict:
    """The schema of a config key, e.g. ("fit", "likelihood"): the one home of the choices and
    the default a CLI option shares with the config."""
    node = load_schema()
    for key in keys:
        node = node["properties"][key]
    return node


def _method_item(common: dict, options: dict[str, Option]) -> dict:
    """The schema of a method's block: the `common` keys plus `options` (no `default`: the
    backends apply it, so a config's options, and the cells' settings, stay as written)."""
    item = copy.deepcopy(common)
    for name, option in options.items():
        item["properties"][name] = {**option.schema, "description": option.description}
    return item


def method_schema(method: str) -> dict:
    """The schema of `method`'s config block (for a name the registry lacks, any method's)."""
    methods = load_schema()["properties"]["methods"]
    return methods["properties"].get(method, methods["additionalProperties"])


@dataclass(frozen=True)
class SchemaProblem:
    """The first thing wrong with an instance: where, what jsonschema says, and for a key the
    schema does not allow, that key and the keys allowed there."""

    path: list
    message: str
    unknown: str | None = None
    allowed: tuple[str, ...] = ()


def schema_problem(instance: Any, node: dict, root: dict) -> SchemaProblem | None:
    """`instance` against the schema `node` of the schema `root` (whose definitions it may
    $ref); None when valid."""
    import jsonschema  # here: the CLI reads the schema's defaults without validating anything

    validator = jsonschema.Draft202012Validator({**node, "definitions": root["definitions"]})
    error = jsonschema.exceptions.best_match(validator.iter_errors(instance))
    if error is None:
        return None
    path = list(error.absolute_path)
    if error.validator in ("additionalProperties", "unevaluatedProperties"):
        allowed = tuple(sorted(_properties(error.schema, root)))
        unknown = sorted(set(error.instance) - set(allowed))[0]
        return SchemaProblem([*path, unknown], error.message, unknown, allowed)
    if error.validator == "uniqueItems":
        return SchemaProblem(path, _listed_twice(error.instance, error.schema) or error.message)
    return SchemaProblem(path, error.message)


def _listed_twice(items: list, node: dict) -> str | None:
    """Name the first repeated item ("bit width 4 is listed twice") rather than jsonschema's
    whole list ("[2, 4, 4] has non-unique elements"); the items' `title` says what one is."""
    repeated = [item for i, item in enumerate(items) if item in items[:i]]
    if not repeated:
        return None
    title = node.get("items", {}).get("title")
    return f"{title + ' ' if title else ''}{repeated[0]!r} is listed twice"


def check_schema(config: dict) -> None:
    schema = load_schema()
    problem = schema_problem(config, schema, schema)
    if problem is None:
        return
    if problem.unknown is not None:
        raise ConfigError(
            f"config key {_where(problem.path)!r} is not allowed "
            f"(misspelled? allowed here: {', '.join(problem.allowed)})"
        )
    raise ConfigError(f"config key {_where(problem.path)!r}: {problem.message}")


def check_semantics(config: dict) -> None:
    for name, spec in config["methods"].items():
        if name not in METHODS:
            raise ConfigError(
                f"config key 'methods.{name}': unknown quantization method {name!r} "
                f"(known: {', '.join(sorted(METHODS))})"
            )
        for bits in spec["bits"]:
            if bits not in METHODS[name].bits:
                raise ConfigError(
                    f"config key 'methods.{name}.bits': method {name!r} does not support "
                    f"{bits}-bit weights (supported: {', '.join(map(str, METHODS[name].bits))})"
                )
    for suite, spec in config["suites"].items():
        for method in spec.get("methods", []):
            if method not in config["methods"]:
                raise ConfigError(
                    f"config key 'suites.{suite}.methods': method {method!r} is not configured "
                    f"under 'methods' (configured: {', '.join(config['methods'])})"
                )
        steps = spec["steps"]
        if sorted(set(steps)) != steps:
            raise ConfigError(f"config key 'suites.{suite}.steps' must be increasing and unique")
        training = spec.get("training")
        for key in REQUIRED_BY_SOURCE[spec["source"]]:
            if key not in spec:
                raise ConfigError(
                    f"config key 'suites.{suite}.{key}' is required for source {spec['source']}"
                )
        if training and training["warmup_steps"] >= steps[0]:
            raise ConfigError(
                f"config key 'suites.{suite}.training.warmup_steps' ({training['warmup_steps']}) "
                f"must end before the first checkpoint step {steps[0]}: checkpoints inside "
                "warmup give spurious QiD"
            )
        for size, arch in spec["sizes"].items():
            if spec["source"] != "train":
                continue
            missing = [k for k in ("hidden_size", "num_layers", "num_heads") if k not in arch]
            if missing:
                raise ConfigError(
                    f"config key 'suites.{suite}.sizes.{size}.{missing[0]}' is required for "
                    "source train"
                )
            if arch["hidden_size"] % arch["num_heads"]:
                raise ConfigError(
                    f"config key 'suites.{suite}.sizes.{size}': hidden_size "
                    f"{arch['hidden_size']} is not divisible by num_heads {arch['num_heads']}"
                )
    if problem := schedule_problem(config):  # qid.schedule: WSD's decay, published schedules
        raise ConfigError(problem)
    check_group_sizes(config)
    check_context(config)
    check_bitnet(config)
    check_data(config)
    fit = config["fit"]
    if fit["method"] not in config["methods"]:
        raise ConfigError(f"config key 'fit.method': {fit['method']!r} is not under 'methods'")
    if fit["eval_set"] not in config["eval_sets"]:
        raise ConfigError(f"config key 'fit.eval_set': {fit['eval_set']!r} is not an eval set")


def check_group_sizes(config: dict) -> None:
    """Every method's group size (and bit widths) against every layer width it would meet, where
    the config fixes the widths (suites trained here); hub and local checkpoints are checked by
    their first job, before any evaluation (qid.quantize.preflight)."""
    from qid.grid import suite_methods
    from qid.quantize import check_widths
    from qid.quantize.layers import neox_layers

    for suite, spec in config["suites"].items():
        if spec["source"] != "train":
            continue
        for size, arch in spec["sizes"].items():
            layers = neox_layers(arch["hidden_size"], arch.get("intermediate_size"))
            for method in suite_methods(config, suite):
                block = config["methods"][method]
                try:
                    check_widths(
                        method, block["bits"], block, layers, f"suite {suite!r} size {size!r}"
                    )
                except QidError as err:
                    raise ConfigError(str(err)) from None


def check_context(config: dict) -> None:
    """`evaluate.context` within the positions of every suite trained here (its
    `training.context`: qid.checkpoints.model_config); hub and local checkpoints are checked by
    their fetch job (qid.fetch.check_context). Beyond them a rotary model extrapolates silently
    and a learned-position one fails."""
    context = config["evaluate"]["context"]
    for suite, spec in config["suites"].items():
        if spec["source"] == "train" and context > spec["training"]["context"]:
            raise ConfigError(
                f"config key 'evaluate.context': {context} tokens is beyond the "
                f"{spec['training']['context']} positions of the models of suite {suite!r} "
                f"(suites.{suite}.training.context)"
            )


def check_bitnet(config: dict) -> None:
    """The `bitnet` block names a suite of the config and sizes of that suite."""
    spec = config.get("bitnet")
    if spec is None:
        return
    suite = config["suites"].get(spec["suite"])
    if suite is None:
        raise ConfigError(
            f"config key 'bitnet.suite': {spec['suite']!r} is not a suite "
            f"(suites: {', '.join(config['suites'])})"
        )
    for size in spec["sizes"]:
        if size not in suite["sizes"]:
            raise ConfigError(
                f"config key 'bitnet.sizes': {size!r} is not a size of suite {spec['suite']!r} "
                f"(sizes: {', '.join(suite['sizes'])})"
            )


def check_data(config: dict) -> None:
    """Each text source holds the keys its source reads; the training corpus's keys are there
    when something is built from it (a trained suite, the heldout source, corpus calibration)."""
    from qid.sources import calibration_problem, eval_set_problem, needs_corpus_split

    data, calibration = config["data"], config["data"]["calibration"]
    for name, spec in config["eval_sets"].items():
        if problem := eval_set_problem(name, spec):
            raise ConfigError(problem)
    if problem := calibration_problem(calibration):
        raise ConfigError(problem)
    users = {
        f"suite {name!r} (source train)": ("corpus", "heldout_fraction", "tokenizer")
        for name, spec in config["suites"].items()
        if spec.get("source") == "train"
    }
    for name, spec in config["eval_sets"].items():
        if needs_corpus_split(spec):
            users[f"eval set {name!r} (source heldout)"] = ("corpus", "heldout_fraction")
    if needs_corpus_split(calibration):
        users["calibration (source corpus, the default)"] = ("corpus", "heldout_fraction")
    for user, keys in users.items():
        for key in keys:
            if key not in data:
                raise ConfigError(f"config key 'data.{key}' is required by {user}")


def check_sample_sizes(config: dict) -> None:
    """Eval sets and calibration ask no more texts (or characters) than their sources offer,
    where that is cheap to know (the package corpora, a parquet file's row count): otherwise
    their job fails at run time. Calibration is checked only where a method calibrates (it is
    built only then); its n_samples and length are filled in by then."""
    from qid.texts import calibration_size_problem, eval_set_size_problem

    data, seed = config["data"], config["seed"]
    for name, spec in config["eval_sets"].items():
        if problem := eval_set_size_problem(name, spec, data, seed):
            raise ConfigError(problem)
    if any(METHODS[m].calibration for m in config["methods"]):
        if problem := calibration_size_problem(data["calibration"], data, seed):
            raise ConfigError(problem)


def recommended_calibration(config: dict):
    """The calibration the configured methods' libraries recommend (the largest of them), or
    None when no configured method calibrates."""
    from qid.quantize import Calibration

    wanted = [METHODS[m].recommended for m in config["methods"] if METHODS[m].recommended]
    if not wanted:
        return None
    return Calibration(max(c.n_texts for c in wanted), max(c.length for c in wanted))


def fill_calibration(config: dict) -> list[str]:
    """Fill `data.calibration`'s n_samples and length, where not given, with what the libraries
    recommend; warn when the calibration given holds fewer tokens than that, in studies of real
    models (hub or local suites: a suite trained here is tiny, and its budget is the user's)."""
    spec = config["data"]["calibration"]
    recommended = recommended_calibration(config)
    if recommended is None:
        spec.setdefault("n_samples", 1)
        spec.setdefault("length", 1)
        return []
    spec.setdefault("n_samples", recommended.n_texts)
    spec.setdefault("length", recommended.length)
    real = any(s["source"] != "train" for s in config["suites"].values())
    if real and spec["n_samples"] * spec["length"] < recommended.n_texts * recommended.length:
        methods = ", ".join(m for m in config["methods"] if METHODS[m].recommended)
        return [
            f"config keys 'data.calibration.n_samples' x 'data.calibration.length': "
            f"{spec['n_samples']} x {spec['length']} tokens is less calibration than the "
            f"{recommended.n_texts} x {recommended.length} the libraries of {methods} recommend; "
            "calibrated methods may lose to RTN"
        ]
    return []


def check_config(config: dict) -> dict:
    """Validate `config` (one-line ConfigError) and fill the calibration defaults; warnings
    go to stderr."""
    import sys

    check_schema(config)
    check_semantics(config)
    warnings = fill_calibration(config)
    check_sample_sizes(config)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return config


def read_config_file(path: str | Path) -> dict:
    """A config file's mapping, or a one-line ConfigError naming the file (and, for a YAML
    error, the line and column): PyYAML's own message names neither file nor line on one line."""
    path = Path(path)
    if not path.is_file():
        where = "" if path.is_absolute() else f" (working directory {Path.cwd()})"
        raise ConfigError(f"config file {str(path)!r} not found{where}")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {str(path)!r}{_yaml_problem(err)}") from None
    if config is not None and not isinstance(config, dict):
        raise ConfigError(
            f"config file {str(path)!r} holds a {type(config).__name__}, not a mapping of config "
            "keys"
        )
    return config or {}


def _yaml_problem(err: yaml.YAMLError) -> str:
    """', line L, column C: problem (while ...)' of a YAML error, on one line."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err)
    where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    context, start = getattr(err, "context", None), getattr(err, "context_mark", None)
    if context and start:  # where the unclosed bracket or quote began
        context += f" at line {start.line + 1}, column {start.column + 1}"
    return f"{where}: {' '.join(problem.split())}" + (f" ({context})" if context else "")


def fill_defaults(config: dict) -> dict:
    """Fill in, in place, the schema's `default`s of the keys `config` (valid) leaves out, as
    Snakemake's `validate(config, schema)` did (jsonschema's extend-with-default recipe), each
    default a copy: the cached schema must not change."""
    import jsonschema

    base = jsonschema.Draft202012Validator
    properties = base.VALIDATORS["properties"]

    def with_defaults(validator, schemas, instance, schema):
        if validator.is_type(instance, "object"):
            for key, subschema in schemas.items():
                if "default" in subschema:
                    instance.setdefault(key, copy.deepcopy(subschema["default"]))
        yield from properties(validator, schemas, instance, schema)

    jsonschema.validators.extend(base, {"properties": with_defaults})(load_schema()).validate(
        config
    )
    return config


def load(source: str | Path | dict) -> dict:
    """A study config from a file or a mapping (checked and completed in place, as the
    Snakefile's `config`): validated (one-line ConfigError naming the key, warnings to stderr),
    the calibration size and then the schema's defaults filled in."""
    config = source if isinstance(source, dict) else read_config_file(source)
    check_config(config)
    return fill_defaults(config)


def config_hash(config: dict) -> str:
    """A short hash of the canonical config, stored with every result row for provenance.

    Leaves out what changes where and how jobs run but not their results."""
    science = {k: v for k, v in config.items() if k not in ("resources", "execution")}
    blob = json.dumps(science, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]
