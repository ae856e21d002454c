"""Specs in: YAML read safely, validated against the installed plugins, every problem
reported at once, each on one line: the key path, the bad value, what is allowed, and
close matches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from facerecon.core.errors import FaceReconError, did_you_mean
from facerecon.core.registry import Registry, failures, registry
from facerecon.core.spec import HOST_KEYS, RESERVED_LABELS, Spec, term_labels
from facerecon.tracking.store import NAME_LIMIT, safe_name

#: Bytes one image of a batch costs per input pixel and channel: 4 for the float32 input,
#: times the face model's activations kept for the gradient and the optimizer's state.
#: Measured for dlib-resnet at 150x150: peak RSS grows 7.7 MB per batch element (batch 1
#: vs 65, 3 Adam steps), 28x the 270 KB input; 32x leaves room for a deeper model.
BYTES_PER_INPUT_VALUE = 4 * 32

#: The share of physical memory one run's batch may take.
MEMORY_SHARE = 0.5


#: The most characters of one value an error line shows.
SHOWN = 200


def shown(value: Any, limit: int = SHOWN) -> str:
    """``repr(value)`` cut to about ``limit`` characters, built piece by piece: a value
    whose whole repr is huge (a YAML alias bomb, a cycle) is never expanded."""
    out: list[str] = []
    size = 0

    def emit(text: str) -> bool:  # true once enough is written
        nonlocal size
        out.append(text)
        size += len(text)
        return size > limit

    def walk(item: Any) -> bool:
        if isinstance(item, dict):
            if emit("{"):
                return True
            for i, (key, inner) in enumerate(item.items()):
                if (i and emit(", ")) or walk(key) or emit(": ") or walk(inner):
                    return True
            return emit("}")
        if isinstance(item, list | tuple | set | frozenset):
            start, end = {list: "[]", tuple: "()"}.get(type(item), "{}")
            if emit(start):
                return True
            for i, inner in enumerate(item):
                if (i and emit(", ")) or walk(inner):
                    return True
            return emit(end)
        if isinstance(item, str | bytes):
            return emit(repr(item[: limit + 1]))
        try:
            return emit(repr(item)[: limit + 1])
        except ValueError:  # an int past Python's digit limit for str()
            return emit(f"<{type(item).__name__}>")

    if walk(value):
        return "".join(out)[:limit] + "..."
    return "".join(out)


def _part(part: Any) -> str:
    text = str(part)
    return text if len(text) <= 60 else text[:60] + "..."


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{_part(part)}" if out else _part(part))
    return out or "(top level)"


_close = did_you_mean


def _allowed_keys(model: type[BaseModel], extra: set[str] = frozenset()) -> list[str]:
    return sorted(set(model.model_fields) - {"base_dir"} | set(extra))


def _model_at(loc: tuple[Any, ...], root: type[BaseModel]) -> type[BaseModel] | None:
    """The pydantic model that owns the key at ``loc`` (for listing allowed keys)."""
    model: Any = root
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if isinstance(model, type) else None
        if field is None:
            return None
        ann = field.annotation
        args = getattr(ann, "__args__", ())
        model = next(
            (a for a in (ann, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None
        )
        if model is None:
            return None
    return model


#: pydantic's bound errors: the context key of the bound, and the words before it
_BOUNDS = {
    "greater_than": ("gt", "greater than"),
    "greater_than_equal": ("ge", "greater than or equal to"),
    "less_than": ("lt", "less than"),
    "less_than_equal": ("le", "less than or equal to"),
}


def _format(
    err: dict[str, Any],
    prefix: tuple[Any, ...],
    model: type[BaseModel] | None,
    extra_keys: set[str] = frozenset(),
) -> str:
    loc = prefix + tuple(err["loc"])
    value = err.get("input")
    if err["type"] == "extra_forbidden":
        owner = (
            model
            if len(err["loc"]) == 1
            else _model_at(tuple(err["loc"]), model)
            if model
            else None
        )
        allowed = (
            _allowed_keys(owner, extra_keys if len(err["loc"]) == 1 else set()) if owner else []
        )
        key = str(loc[-1])
        return (
            f"{_path(loc)}: unknown key {shown(key)}; allowed: {', '.join(allowed)}"
            f"{_close(key, allowed)}"
        )
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] in _BOUNDS and isinstance(bound := err["ctx"][_BOUNDS[err["type"]][0]], float):
        # pydantic writes 3.4e38 out in 39 digits
        msg = f"Input should be {_BOUNDS[err['type']][1]} {bound:g}"
    got = "" if err["type"] == "missing" else f" (got {shown(value)})"
    expected = err.get("ctx", {}).get("expected")
    hint = (
        _close(value, [e.strip(" '") for e in expected.replace(" or ", ",").split(",")])
        if isinstance(expected, str)
        else ""
    )
    return f"{_path(loc)}: {msg}{got}{hint}"


def _plugin_refs(raw: dict[str, Any]) -> list[tuple[tuple[Any, ...], str, Any]]:
    """Every (key path, kind, raw entry) that names a plugin, read from the raw spec."""
    refs: list[tuple[tuple[Any, ...], str, Any]] = []
    for key in ("model", "solver", "parameterization"):
        if key in raw:
            refs.append(((key,), key, raw[key]))
    transforms = raw.get("transforms")
    if isinstance(transforms, dict) and isinstance(transforms.get("chain"), list):
        chain = transforms["chain"]
        refs.extend((("transforms", "chain", i), "transform", t) for i, t in enumerate(chain))
    loss = raw.get("loss")
    if isinstance(loss, dict):
        if "metric" in loss:
            refs.append((("loss", "metric"), "metric", loss["metric"]))
        regs = loss.get("regularizers")
        if isinstance(regs, list):
            refs.extend((("loss", "regularizers", i), "regularizer", r) for i, r in enumerate(regs))
    return refs


def check_plugin(loc: tuple[Any, ...], kind: str, entry: Any, reg: Registry) -> list[str]:
    """The problems of one plugin entry (``{name: ..., **params}``) at key path ``loc``: an
    unknown name or parameter, or a bad value, each one line with the valid choices."""
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        return []  # the host model reports the shape problem
    name = entry["name"]
    names = reg.names(kind)
    if name not in names:
        broken = "".join(f"; note: {why}" for why in failures.values())
        return [
            f"{_path(loc + ('name',))}: unknown {kind} {shown(name)}; choose from "
            f"{', '.join(names)}{_close(name, names)}{broken}"
        ]
    params_model = reg.get(kind, name).Params
    params = {k: v for k, v in entry.items() if k not in HOST_KEYS[kind]}
    try:
        params_model.model_validate(params)
    except ValidationError as exc:
        return [_format(e, loc, params_model, HOST_KEYS[kind]) for e in exc.errors()]
    return []


def validate(raw: Any, *, base_dir: Path = Path("."), reg: Registry | None = None) -> Spec:
    """Validate raw spec data; raise one :class:`FaceReconError` listing every problem."""
    if not isinstance(raw, dict):
        raise FaceReconError(f"(top level): a spec is a mapping of keys, got {type(raw).__name__}")
    reg = reg or registry()
    problems: list[str] = []
    spec: Spec | None = None
    try:
        spec = Spec.model_validate({**raw, "base_dir": base_dir})
    except ValidationError as exc:
        problems += [_format(e, (), Spec) for e in exc.errors()]
    problems += _check_name(raw)
    for loc, kind, entry in _plugin_refs(raw):
        problems += check_plugin(loc, kind, entry, reg)
    if spec is not None and not spec.guides:
        for i, r in enumerate(spec.loss.regularizers):
            if r.name == "guide":
                problems.append(
                    f"loss.regularizers[{i}]: regularizer 'guide' needs at least "
                    "one entry under `guides`"
                )
        if spec.init.kind == "guide":
            problems.append("init.kind: 'guide' needs at least one entry under `guides`")
    if spec is not None:
        problems += _check_judges(spec, reg)
        problems += _check_pixel_space(spec, reg)
        problems += _check_labels(spec)
        problems += _check_guided(spec)
        if spec.restarts > 1 and spec.init.kind != "noise" and spec.init.noise == 0:
            problems.append(
                f"init.noise: 0 with restarts: {spec.restarts} and init.kind: "
                f"{spec.init.kind!r} would solve identical copies; give noise > 0 or restarts: 1"
            )
        problems += _check_files(spec)
        problems += _check_embeddings(spec, reg)
        problems += _check_memory(spec, reg)
    if problems:
        raise FaceReconError(problems[0], lines=sorted(set(problems), key=problems.index))
    assert spec is not None
    _fill_plugin_defaults(spec, reg)
    return spec


def _check_name(raw: dict[str, Any]) -> list[str]:
    """The name is a folder name (``evaluations/<name>``, ``unsaved-runs/<name>-<time>``):
    one that stays inside the folder it is put in, as :func:`safe_name` makes them."""
    name = raw.get("name")
    if not isinstance(name, str) or safe_name(name) == name:
        return []  # the host model reports a missing or non-string name
    return [
        f"name: not usable as a folder name (evaluations/<name>) (got {shown(name)}); "
        f"allowed: 1 to {NAME_LIMIT} letters, digits, '_', '.' or '-', not starting "
        f"with '.' (did you mean {safe_name(name)!r}?)"
    ]


def _check_labels(spec: Spec) -> list[str]:
    """Two terms under one label would overwrite each other in results and MLflow."""
    problems, first = [], {}
    for i, label in enumerate(term_labels(spec.loss.regularizers)):
        where = f"loss.regularizers[{i}]"
        if label in RESERVED_LABELS:
            problems.append(
                f"{where}.label: {shown(label)} is reserved for the objective's own results "
                f"({', '.join(RESERVED_LABELS)}); give the term another `label`"
            )
        elif label in first:
            problems.append(
                f"{where}.label: {shown(label)} is already the label of loss.regularizers"
                f"[{first[label]}]; give each term its own `label`"
            )
        first.setdefault(label, i)
    return problems


def _check_guided(spec: Spec) -> list[str]:
    """A guided generator is checked here, not after the model has loaded."""
    generator = spec.solver.params.get("generator")
    if not isinstance(generator, dict) or generator.get("kind") != "guided":
        return []
    if generator.get("nearest") is not None:
        if spec.guides:
            return [
                "solver.generator.nearest: the generator makes each template's guide; "
                "remove `guides` from the spec"
            ]
        return []
    if spec.guides:
        return []
    return [
        "solver.generator.kind: 'guided' needs at least one entry under `guides` "
        "(or solver.generator.nearest)"
    ]


def _check_source(where: str, source: str, base_dir: Path, what: str = "file") -> list[str]:
    """A photo, folder, video or embedding file exists; ``builtin:`` by name (never fetched)."""
    from facerecon.faces import photos as faces  # imports skimage: only when a spec is checked

    if source.startswith("builtin:"):
        name = source.removeprefix("builtin:")
        return [] if faces.builtin_known(name) else [f"{where}: {faces.unknown_builtin(name)}"]
    path = Path(source).expanduser()
    path = path if path.is_absolute() else base_dir / path
    return [] if path.exists() else [f"{where}: {path}: {what} not found (got {shown(source)})"]


def _check_files(spec: Spec) -> list[str]:
    """Every file the spec names exists, so a typo is reported before anything runs."""
    base, problems = spec.base_dir, []
    for i, t in enumerate(spec.targets):
        if t.image is not None:
            problems += _check_source(f"targets[{i}].image", t.image, base)
        if t.embedding is not None:
            problems += _check_source(
                f"targets[{i}].embedding", t.embedding, base, "embedding file"
            )
        if t.photo is not None:
            problems += _check_source(f"targets[{i}].photo", t.photo, base)
        for j, other in enumerate(t.same_person):
            problems += _check_source(f"targets[{i}].same_person[{j}]", other, base)
    for i, g in enumerate(spec.guides):
        problems += _check_source(f"guides[{i}].image", g.image, base)
    if spec.init.image is not None:
        problems += _check_source("init.image", spec.init.image, base)
    return problems


def _check_embeddings(spec: Spec, reg: Registry) -> list[str]:
    """Every embedding file fits the model's embedding size and holds usable rows (as the
    run will read it), so `validate` does not say ok to a file the run refuses."""
    import numpy as np

    from facerecon.faces.embeddings import check_rows, numeric, read_npy

    name = spec.model.name
    size = (
        getattr(reg.get("model", name), "embedding_size", None)
        if name in reg.names("model")
        else None
    )
    problems = []
    for i, t in enumerate(spec.targets):
        if t.embedding is None:
            continue
        path = Path(t.embedding).expanduser()
        path = path if path.is_absolute() else spec.base_dir / path
        if not path.is_file():
            continue  # a missing file is reported by _check_files
        where = f"targets[{i}].embedding"
        try:
            data = read_npy(path)
            rows = np.atleast_2d(numeric(data, str(path)))
            if isinstance(size, int) and (rows.ndim != 2 or rows.shape[1] != size):
                problems.append(
                    f"{where}: {path}: embedding of shape {tuple(data.shape)}; model "
                    f"{name!r} makes {size}-d embeddings (shape ({size},) or (N, {size}))"
                )
                continue
            check_rows(rows, str(path))
        except FaceReconError as exc:
            problems.append(f"{where}: {exc}")
    return problems


def _physical_memory() -> int:
    """This machine's physical memory in bytes."""
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _embedding_rows(spec: Spec) -> int:
    """Target rows: one per photo, one per row of an embedding file (its header only)."""
    import numpy as np

    rows = 0
    for t in spec.targets:
        count = 1
        if t.embedding is not None:
            path = Path(t.embedding).expanduser()
            try:
                shape = np.load(path if path.is_absolute() else spec.base_dir / path, "r").shape
                count = shape[0] if len(shape) == 2 else 1
            except Exception:  # a missing or broken file is reported elsewhere
                pass
        rows += count
    return rows


def batch_bytes(spec: Spec, input_size: int, per_element: int = 0) -> tuple[int, int]:
    """(images the model sees per step, estimated bytes) of a spec's batch: targets x
    guides x restarts x transform samples, each ``input_size``^2 x 3 values at
    :data:`BYTES_PER_INPUT_VALUE`, and ``per_element`` bytes (the parameterization's) per
    batch element. A folder of guides counts as one guide."""
    elements = _embedding_rows(spec) * max(len(spec.guides), 1) * spec.restarts
    images = elements * spec.transforms.samples
    return images, images * input_size**2 * 3 * BYTES_PER_INPUT_VALUE + elements * per_element


def _check_memory(spec: Spec, reg: Registry) -> list[str]:
    """A batch that cannot fit is refused now, not by a numpy allocation error later."""
    if spec.model.name not in reg.names("model"):
        return []  # reported as an unknown plugin
    size = getattr(reg.get("model", spec.model.name), "input_size", None)
    if not isinstance(size, int):
        return []
    name = spec.parameterization.name
    per_element = 0
    if name in reg.names("parameterization"):
        per_element = reg.get("parameterization", name).bytes_per_image
    images, need = batch_bytes(spec, size, per_element)
    total = _physical_memory()
    limit = total * MEMORY_SHARE
    if need <= limit:
        return []
    gb = 1024**3
    generator = f"; {per_element / gb:.1f} GB per element for parameterization {name!r}"
    return [
        f"restarts: a batch of {images} images ({_embedding_rows(spec)} target(s) x "
        f"{max(len(spec.guides), 1)} guide(s) x {spec.restarts} restart(s) x "
        f"{spec.transforms.samples} transform sample(s)) at {size}x{size} px needs about "
        f"{need / gb:.1f} GB ({BYTES_PER_INPUT_VALUE} bytes per input value, activations "
        f"and optimizer state included{generator if per_element else ''}); the limit is "
        f"{limit / gb:.1f} GB "
        f"({MEMORY_SHARE:.0%} of this machine's {total / gb:.1f} GB); lower restarts, "
        f"targets, guides or transforms.samples (got {spec.restarts})"
    ]


def _check_judges(spec: Spec, reg: Registry) -> list[str]:
    problems = []
    models = reg.names("model")
    for i, name in enumerate(spec.judges.models or []):
        if name not in models:
            problems.append(
                f"judges.models[{i}]: unknown model {shown(name)}; choose from "
                f"{', '.join(models)}{_close(name, models)}"
            )
    detector, detectors = spec.judges.detector, reg.names("detector")
    if detector is not None and detector not in detectors:
        problems.append(
            f"judges.detector: unknown detector {shown(detector)}; choose from "
            f"{', '.join(detectors) or '(none installed)'}, or null{_close(detector, detectors)}"
        )
    return problems


def _check_pixel_space(spec: Spec, reg: Registry) -> list[str]:
    """Pixel-space gradient tricks need a parameterization whose parameters are pixels."""
    name = spec.parameterization.name
    if name not in reg.names("parameterization"):
        return []  # reported as an unknown plugin
    pixel_space = reg.get("parameterization", name).pixel_space
    if spec.solver.params.get("lap_normalize") and not pixel_space:
        return [
            f"solver.lap_normalize: normalizes pixel-space gradients, but parameterization "
            f"{name!r} does not optimize pixels; drop it, or use parameterization 'pixels'"
        ]
    return []


def _fill_plugin_defaults(spec: Spec, reg: Registry) -> None:
    """Write every plugin's validated parameters, defaults included, into the spec."""
    refs = [("model", spec.model), ("metric", spec.loss.metric), ("solver", spec.solver)]
    refs += [("parameterization", spec.parameterization)]
    refs += [("regularizer", r) for r in spec.loss.regularizers]
    refs += [("transform", t) for t in spec.transforms.chain]
    for kind, ref in refs:
        params = {k: v for k, v in ref.params.items() if k not in HOST_KEYS[kind]}
        full = reg.get(kind, ref.name).Params.model_validate(params).model_dump(mode="json")
        ref.__pydantic_extra__.update(full)


#: Values a spec may hold once its aliases are expanded: beyond both this and
#: :data:`EXPANSION` times the values written, aliases multiply (a YAML "billion laughs").
EXPANDED_LIMIT = 100_000
EXPANSION = 10


class OutOfProportion(Exception):
    """A spec whose aliases expand it far beyond what is written, or refer to themselves."""


def _expanded(root: yaml.Node) -> tuple[int, int]:
    """(values written, values after expanding every alias) of a composed YAML document,
    counted over the node graph once per node, without expanding it."""

    def children(node: yaml.Node) -> list[yaml.Node]:
        if isinstance(node, yaml.SequenceNode):
            return list(node.value)
        if isinstance(node, yaml.MappingNode):
            return [n for pair in node.value for n in pair]
        return []

    sizes: dict[int, int] = {}
    open_: set[int] = set()  # the nodes being counted: the current one and its parents
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if done:
            open_.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(c)] for c in children(node))
            continue
        if id(node) in sizes:
            continue
        open_.add(id(node))
        stack.append((node, True))
        for child in children(node):
            if id(child) in open_:
                raise OutOfProportion(
                    f"line {child.start_mark.line + 1}: an alias refers to itself (its "
                    "value would be infinite); write the value out"
                )
            if id(child) not in sizes:
                stack.append((child, False))
    return len(sizes), sizes[id(root)]


class UniqueKeyLoader(yaml.SafeLoader):
    """Safe loading that refuses a key given twice in one mapping (YAML keeps the last),
    and aliases that expand the spec out of proportion (checked before any value is made)."""

    def get_single_node(self) -> yaml.Node | None:
        node = super().get_single_node()
        if node is not None:
            written, expanded = _expanded(node)
            if expanded > EXPANDED_LIMIT and expanded > EXPANSION * written:
                raise OutOfProportion(
                    f"its aliases expand {written} written values to {expanded} (the limit "
                    f"is {EXPANDED_LIMIT}, or {EXPANSION}x the values written); write the "
                    "values out or use fewer aliases"
                )
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<:` merges may be overridden on purpose
            key = self.construct_object(key_node, deep=deep)
            try:
                seen = key in first
            except TypeError:
                continue  # an unhashable key: SafeLoader reports it
            if seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (first on line {first[key] + 1})",
                    key_node.start_mark,
                )
            first[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def load(path: str | Path, *, reg: Registry | None = None) -> Spec:
    """Read a YAML spec file (safe loading only) and validate it."""
    path = Path(path)
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=UniqueKeyLoader)
    except FileNotFoundError:
        raise FaceReconError(f"{path}: spec file not found") from None
    except IsADirectoryError:
        raise FaceReconError(f"{path}: is a folder; give a YAML spec file") from None
    except PermissionError:
        raise FaceReconError(f"{path}: spec file not readable (permission denied)") from None
    except UnicodeDecodeError as exc:
        raise FaceReconError(
            f"{path}: not a UTF-8 text file (byte {exc.start}); save the spec as UTF-8"
        ) from None
    except OSError as exc:
        raise FaceReconError(f"{path}: spec file not readable ({exc.strerror})") from None
    except OutOfProportion as exc:
        raise FaceReconError(f"{path}: {exc}") from None
    except RecursionError:
        raise FaceReconError(f"{path}: not a usable spec: nested too deeply") from None
    except ValueError as exc:  # Python's int() refuses over 4300 digits
        raise FaceReconError(
            f"{path}: not a usable spec: a number too long ({shown(str(exc), 100)})"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise FaceReconError(f"{path}:{where}: not valid YAML: {problem}") from None
    try:
        return validate(raw, base_dir=path.parent, reg=reg)
    except FaceReconError as exc:
        lines = [f"{path}: {line}" for line in exc.lines]
        raise FaceReconError(lines[0], lines=lines) from None
