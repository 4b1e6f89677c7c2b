"""Export the answer of a finished search: its architecture, trained weights and an ONNX file.

``layernas export RUN_DIR --out DIR`` (:func:`export_run`) reads ``RUN_DIR/result.json``
(the best feasible architecture by validation) and the run's settings, finds that
architecture's trained child among the run's records (``RUN_DIR/trainer/children/<key>/``:
``result.json`` and an orbax ``variables/`` checkpoint), and writes to ``DIR``:

* ``model.json``: the space (name, dataset and its definition as data), the architecture,
  its costs and validation accuracy, the input the model expects (layout, size, the
  per-channel mean and std the child was trained with), and the ONNX check;
* ``variables.msgpack``: the trained flax variables (``params`` and ``batch_stats``), read
  back with ``flax.serialization.msgpack_restore`` (no template needed);
* ``model.onnx``: the model in eval mode (BatchNorm from its running statistics), made
  with jax2onnx. Its input is ``images``: float32 pixels in [0, 255], NHWC, any batch
  size; the normalisation is part of the graph. Its output is ``logits``.

The ONNX file is checked by running it in onnxruntime on real images (the run's data:
its ``test`` split when there is one) and comparing its logits with the JAX model's; the
largest absolute difference is stored in ``model.json`` (``onnx_check.max_abs_diff``).

jax2onnx writes intermediate shape annotations that still describe the NHWC tensors after
it has moved convolutions to NCHW; onnxruntime refuses such a file ("Incompatible
dimensions") for networks whose activations mix with a convolution's output (hard-swish,
squeeze-and-excite). :func:`export_onnx` drops those annotations and lets ONNX infer them
again (strict mode), which is all the graph needs.

Example:
    >>> from layernas.trainers.export import export_run, load_export   # doctest: +SKIP
    >>> meta = export_run("runs/mobilenet", "exported")                 # doctest: +SKIP
    >>> exported = load_export("exported")                             # doctest: +SKIP
    >>> exported.logits(images_uint8_nhwc).argmax(-1)                  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.metadata
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

FORMAT = "layernas-export/1"
MODEL_JSON = "model.json"
WEIGHTS_FILE = "variables.msgpack"
ONNX_FILE = "model.onnx"
CHECK_IMAGES_PER_CLASS = 10


class ExportError(ValueError):
    """A run directory that cannot be exported; the message is one line naming why."""


# ----------------------------------------------------------------------------- the run
@dataclasses.dataclass(frozen=True)
class RunAnswer:
    """What a finished run answered, read from its directory.

    Attributes:
      run_dir: the run directory.
      settings: the run's settings (``result.json``'s ``settings``).
      best: ``result.json``'s ``best`` record (arch, arch_str, reward, costs, trial_id).
      provenance: ``provenance.json`` (empty when the run has none).
    """

    run_dir: Path
    settings: dict
    best: dict
    provenance: dict

    @property
    def arch(self) -> tuple[int, ...]:
        return tuple(int(a) for a in self.best["arch"])


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ExportError(f"{path} does not exist; expected the {what} of a finished search "
                          f"(run `layernas search ... --out DIR` first)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ExportError(f"{path} is not valid JSON ({e.__class__.__name__} at {getattr(e, 'pos', '?')}); "
                          f"the run directory is damaged") from None
    if not isinstance(data, dict):
        raise ExportError(f"{path} holds a {type(data).__name__}; expected a JSON object")
    return data


def read_run(run_dir: str | os.PathLike) -> RunAnswer:
    """Read a finished run's answer.

    Args:
      run_dir: a directory written by ``layernas search --out``.
    Returns:
      the :class:`RunAnswer`.
    Raises:
      ExportError: no such directory, a missing or damaged ``result.json``, or a run that
        found no architecture inside its target.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ExportError(f"run directory {run_dir} does not exist or is not a directory")
    result = _read_json(run_dir / "result.json", "result.json")
    settings, best = result.get("settings"), result.get("best", "missing")
    if not isinstance(settings, dict) or not isinstance(settings.get("space"), str):
        raise ExportError(f"{run_dir / 'result.json'} has no settings.space; expected the result of `layernas search`")
    if best is None:
        raise ExportError(f"run {run_dir} found no architecture inside its target; there is nothing to export")
    if (not isinstance(best, dict) or not isinstance(best.get("arch"), list)
            or not all(isinstance(a, int) for a in best["arch"])):
        raise ExportError(f"{run_dir / 'result.json'} has no best.arch list of option indices; the file is damaged")
    provenance = _read_json(run_dir / "provenance.json", "provenance") if (run_dir / "provenance.json").exists() else {}
    return RunAnswer(run_dir, settings, best, provenance)


def find_trained_child(run_dir: str | os.PathLike, arch: Sequence[int], reward: float | None = None) -> Path | None:
    """The record folder of ``arch``'s trained child in a trainer run, or None.

    Looks through ``run_dir/trainer/children/*/result.json`` for a finished (``"ok"``)
    child of that architecture with a ``variables/`` checkpoint. Where several match
    (the same architecture trained with different seeds), the one whose validation
    accuracy is closest to ``reward`` (the run's answer) is taken.
    """
    children = Path(run_dir) / "trainer" / "children"
    if not children.is_dir():
        return None
    matches = []
    for record in sorted(children.glob("*/result.json")):
        try:
            rec = json.loads(record.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError, OSError):
            continue  # a child interrupted while writing; the search retrained it elsewhere
        if (isinstance(rec, dict) and rec.get("status") == "ok" and rec.get("arch") == list(arch)
                and (record.parent / "variables").is_dir()):
            gap = abs(float(rec.get("reward", 0.0)) - reward) if reward is not None else 0.0
            matches.append((gap, record.parent))
    return min(matches)[1] if matches else None


# ------------------------------------------------------------------------------ export
def export_onnx(model, variables, path: str | os.PathLike, *, image_shape: tuple[int, int, int],
                mean, std) -> None:
    """Write ``model`` (eval mode, ``variables`` baked in) as an ONNX file with jax2onnx.

    Args:
      model: a flax module called as ``model.apply(variables, x, train=False)``.
      variables: its variables (``params``, ``batch_stats``).
      path: the ``.onnx`` file to write.
      image_shape: (H, W, C) of one image; the batch dimension is symbolic (``B``).
      mean, std: per-channel statistics of pixels scaled to [0, 1]; the graph computes
        ``(images / 255 - mean) / std`` first, as training did.
    """
    import jax
    import jax2onnx
    import onnx

    variables = jax.tree_util.tree_map(np.asarray, variables)
    mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    if getattr(model, "depthwise", None) not in (None, "lax"):
        # the runtime's own grouped Conv, not the CPU-training formulation (same function)
        model = model.clone(depthwise="lax")

    def logits(images):
        return model.apply(variables, (images / 255.0 - mean) / std, train=False)

    with _jax_and_flax_plugins_only():
        proto = jax2onnx.to_onnx(logits, [("B", *image_shape)], model_name="layernas",
                                 input_names=["images"], output_names=["logits"])
    # jax2onnx's annotations of intermediate tensors can keep their NHWC shapes after it has
    # moved convolutions to NCHW; the graph itself is right, so infer them again.
    constants = {i.name for i in proto.graph.initializer}
    kept = [v for v in proto.graph.value_info if v.name in constants]
    del proto.graph.value_info[:]
    proto.graph.value_info.extend(kept)
    proto = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    onnx.checker.check_model(proto)
    Path(path).write_bytes(proto.SerializeToString())


# jax2onnx 0.17.1's converter of flax.linen.avg_pool takes window and strides as keywords
# only and padding as a string only; NATS cells call it positionally with explicit padding
# pairs (count_include_pad=False), and its converter of flax.linen.pool (which avg_pool
# calls) refuses explicit padding. Without both, flax's own avg_pool is traced to
# lax.reduce_window and converted from there (checked by tests/test_export.py).
BYPASSED_PLUGINS = ("linen.avg_pool", "linen.pool")


@contextlib.contextmanager
def _jax_and_flax_plugins_only():
    """Load only jax2onnx's jax and flax converters for one conversion, less
    :data:`BYPASSED_PLUGINS`.

    By default jax2onnx imports every plugin and example it ships on its first call,
    equinox's among them, which compiles dozens of XLA programs: about 8 s of CPU against
    1 s for the two trees a flax linen model needs. Version 0.17.1 names the switch
    ``plugin_system._already_imported_plugins``; where it is absent, the default applies.
    Afterwards the switch is restored, so a later conversion of another kind of model
    still imports everything.
    """
    from jax2onnx.plugins import plugin_system

    if not hasattr(plugin_system, "_already_imported_plugins") or not hasattr(plugin_system, "_import_tree"):
        yield
        return
    before = plugin_system._already_imported_plugins
    if not before:
        root = Path(plugin_system.__file__).parent
        for tree in ("jax", "flax"):
            plugin_system._import_tree(root / tree, f"jax2onnx.plugins.{tree}")
        plugin_system._already_imported_plugins = True
    registry = getattr(plugin_system, "PLUGIN_REGISTRY", {})
    set_aside = {name: registry.pop(name) for name in BYPASSED_PLUGINS if name in registry}
    try:
        yield
    finally:
        registry.update(set_aside)
        plugin_system._already_imported_plugins = before


def onnx_logits(path: str | os.PathLike, images: np.ndarray, batch_size: int = 100) -> np.ndarray:
    """Logits of an exported ONNX file in onnxruntime (CPU) for uint8 or float NHWC images."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.asarray(images, np.float32)
    return np.concatenate([session.run(["logits"], {"images": x[i:i + batch_size]})[0]
                           for i in range(0, len(x), batch_size)])


def jax_logits(model, variables, images: np.ndarray, mean, std, batch_size: int = 100) -> np.ndarray:
    """Logits of the flax model in eval mode, normalising ``images`` as training did."""
    import jax
    import jax.numpy as jnp

    mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    apply = jax.jit(lambda v, x: model.apply(v, (x / 255.0 - mean) / std, train=False))
    x = np.asarray(images, np.float32)
    return np.concatenate([np.asarray(apply(variables, jnp.asarray(x[i:i + batch_size])))
                           for i in range(0, len(x), batch_size)])


def export_model(space, arch: Sequence[int], model, variables, out_dir: str | os.PathLike, *,
                 mean, std, image_shape: tuple[int, int, int], check_images: np.ndarray | None,
                 check_source: str = "", onnx: bool = True, model_kwargs: dict | None = None,
                 registry_name: str | None = None, extra: dict | None = None) -> dict:
    """Write ``model.json``, ``variables.msgpack`` and ``model.onnx`` for one trained model.

    Args:
      space: the search space (``name``; ``to_json``/``arch_to_json`` where it has them).
      arch: the architecture.
      model: its flax module.
      variables: its trained variables (None: an architecture-only export).
      out_dir: the export directory (created).
      mean, std: the per-channel input statistics the model was trained with.
      image_shape: (H, W, C) of one input image.
      check_images: uint8 NHWC images on which the ONNX file is compared with the JAX
        model (None: no check).
      check_source: where those images come from, for the record.
      onnx: write the ONNX file (needs the ``export`` extra: jax2onnx, onnx, onnxruntime).
      model_kwargs: the builder options the model was built with (e.g. ``{"C": 8, "N": 1}``
        for a reduced NATS network), recorded so that :func:`load_export` builds it again.
      registry_name: the space's name in :mod:`layernas.registry`, when it has one.
      extra: more fields for ``model.json`` (merged at the top level).
    Returns:
      the ``model.json`` record.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    arch = tuple(int(a) for a in arch)
    to_str = getattr(space, "arch_to_str", None)
    meta: dict[str, Any] = {
        "format": FORMAT,
        "space": {"name": space.name, "registry_name": registry_name,
                  "definition": json.loads(space.to_json()) if hasattr(space, "to_json") else None},
        "arch": list(arch),
        "arch_str": to_str(arch) if to_str else "-".join(map(str, arch)),
        "costs": {k: float(v) for k, v in space.cost(arch).items()},
        "model_kwargs": dict(model_kwargs or {}),
    }
    if hasattr(space, "arch_to_json"):
        meta["network"] = json.loads(space.arch_to_json(arch)).get("network")
    meta["input"] = {"name": "images", "layout": "NHWC", "shape": ["B", *map(int, image_shape)],
                     "dtype": "float32", "range": [0, 255],
                     "mean": [float(m) for m in np.asarray(mean).ravel()],
                     "std": [float(s) for s in np.asarray(std).ravel()],
                     "normalisation": "(images / 255 - mean) / std, inside model.onnx; "
                                      "applied by load_export(...).logits for the flax model"}
    meta["files"] = {"weights": None, "onnx": None}
    meta["onnx_check"] = None
    meta.update(extra or {})
    if variables is not None:
        import flax.serialization

        _write_atomic(out / WEIGHTS_FILE, flax.serialization.msgpack_serialize(_to_numpy(variables)))
        meta["files"]["weights"] = WEIGHTS_FILE
        if onnx:
            try:  # checked here for a one-line error
                onnxruntime = [importlib.import_module(m) for m in ("jax2onnx", "onnx", "onnxruntime")][-1]
            except ImportError as e:
                raise ExportError(f"model.onnx needs jax2onnx, onnx and onnxruntime ({e.name} is missing): "
                                  f"pip install 'layernas[export]'") from None
            export_onnx(model, variables, out / ONNX_FILE, image_shape=image_shape, mean=mean, std=std)
            meta["files"]["onnx"] = ONNX_FILE
            if check_images is not None:
                ours = jax_logits(model, variables, check_images, mean, std)
                theirs = onnx_logits(out / ONNX_FILE, check_images)
                meta["onnx_check"] = {
                    "runtime": f"onnxruntime {onnxruntime.__version__} (CPUExecutionProvider)",
                    "exporter": f"jax2onnx {importlib.metadata.version('jax2onnx')}",
                    "images": int(len(check_images)), "source": check_source,
                    "max_abs_diff": float(np.max(np.abs(ours - theirs))),
                    "max_abs_logit": float(np.max(np.abs(ours))),
                    "top1_agreement": float(np.mean(ours.argmax(-1) == theirs.argmax(-1))),
                }
    _write_atomic(out / MODEL_JSON, json.dumps(meta, indent=1).encode())
    return meta


def _to_numpy(tree):
    import jax

    return jax.tree_util.tree_map(lambda a: np.asarray(a), tree)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _run_data_root(answer: RunAnswer, data) -> Path:
    if data is None:
        data = (answer.provenance.get("args") or {}).get("data") or answer.settings.get("data")
    if not data:
        raise ExportError(f"run {answer.run_dir} names no training data; pass --data DIR (the image folder "
                          f"the search trained on: its input statistics are part of the model)")
    root = Path(data)
    if not (root / "train").is_dir():
        raise ExportError(f"data root {root} has no train/ folder; expected the image folder the search "
                          f"trained on (root/train/<class>/*.png), given with --data DIR")
    return root


def export_run(run_dir: str | os.PathLike, out_dir: str | os.PathLike, *, weights: bool = True,
               data: str | os.PathLike | None = None, space=None, onnx: bool = True) -> dict:
    """Export the answer of a finished search (see the module docstring).

    Args:
      run_dir: the run directory (``layernas search --out``).
      out_dir: where to write the export.
      weights: export the trained child's variables and the ONNX file. A run without
        trained weights (a table or dry-run search) is refused unless this is False, which
        writes ``model.json`` only (architecture and costs).
      data: the image folder the run trained on (default: the one its provenance names);
        it gives the input statistics, and the images of the ONNX check.
      space: the search space (default: the registry's space named in the settings).
      onnx: write and check ``model.onnx`` (with ``weights``).
    Returns:
      the ``model.json`` record.
    Raises:
      ExportError: a damaged run directory, a run without trained weights, or missing data.
    """
    answer = read_run(run_dir)
    settings = answer.settings
    registry_name = None
    if space is None:
        from layernas import registry

        # the registry's name (the space's own name may add the dataset)
        registry_name = (answer.provenance.get("args") or {}).get("space") or settings["space"]
        try:
            space = registry.make_space(registry_name, settings.get("dataset"))
        except ValueError as e:
            raise ExportError(f"run {answer.run_dir}: {e}") from None
    try:
        arch = space.validate(answer.arch)
    except ValueError as e:
        raise ExportError(f"run {answer.run_dir}: best.arch {list(answer.arch)} is not an architecture of "
                          f"space {space.name!r} ({e})") from None
    source = {"run_dir": str(answer.run_dir.resolve()), "searcher": settings.get("searcher"),
              "evaluator": settings.get("evaluator"), "seed": settings.get("seed"),
              "target": settings.get("target"), "validation": answer.best.get("reward"),
              "trial_id": answer.best.get("trial_id")}
    extra = {"dataset": settings.get("dataset"), "source": source}
    if not weights:
        return export_model(space, arch, None, None, out_dir, mean=[], std=[], image_shape=(),
                            check_images=None, registry_name=registry_name, extra=extra)
    child = find_trained_child(answer.run_dir, arch, answer.best.get("reward"))
    if child is None and settings.get("store"):
        raise ExportError(f"run {answer.run_dir} kept its trained children in the child store "
                          f"{settings['store'].get('store')!r}, which this export does not read yet; "
                          f"pass --no-weights for an architecture-only export")
    if child is None:
        how = settings.get("evaluator")
        raise ExportError(f"run {answer.run_dir} has no trained weights for its answer {answer.best.get('arch_str')} "
                          f"(evaluator {how!r}; a table or dry-run search trains nothing): pass --no-weights "
                          f"for an architecture-only export, or search with --trainer")
    from layernas.trainers import data as data_lib
    from layernas.trainers import train as train_lib
    from layernas.trainers.evaluator import TrainerEvaluator, load_variables

    trainer = settings.get("evaluator")
    if trainer not in train_lib.RECIPES:
        raise ExportError(f"run {answer.run_dir} was trained with {trainer!r}; expected a recipe of "
                          f"{sorted(train_lib.RECIPES)}")
    recipe = train_lib.RECIPES[trainer].replace(**(settings.get("recipe_overrides") or {}))
    root = _run_data_root(answer, data)
    evaluator = TrainerEvaluator(space, root, recipe, data_seed=int(settings.get("seed", 0)))
    train_split = evaluator.datasets[0]  # the split the child was trained on: its statistics
    mean, std = train_split.channel_stats()
    model = evaluator.build(arch)
    try:
        variables = load_variables(child / "variables")
    except Exception as e:  # orbax raises many types for a damaged checkpoint
        from layernas.errors import first_line

        raise ExportError(f"trained child {child} has a damaged variables/ checkpoint: {first_line(e)}") from None
    split = "test" if (root / "test").is_dir() else "train"
    images = data_lib.load_image_folder(root, split, per_class=CHECK_IMAGES_PER_CLASS).images
    source["child"] = child.name
    source["recipe"] = dataclasses.asdict(recipe)
    source["data"] = str(root.resolve())
    extra["num_classes"] = int(train_split.num_classes)
    return export_model(space, arch, model, variables, out_dir, mean=mean, std=std,
                        image_shape=tuple(int(s) for s in train_split.images.shape[1:]),
                        check_images=images, onnx=onnx, registry_name=registry_name, extra=extra,
                        check_source=f"{root.name}/{split}, the first {CHECK_IMAGES_PER_CLASS} images of each class")


def run_export(args) -> int:
    """``layernas export RUN_DIR --out DIR [--no-weights] [--data DIR]``: prints what it wrote."""
    meta = export_run(args.run_dir, args.out, weights=not args.no_weights, data=args.data)
    files = [MODEL_JSON] + [f for f in meta["files"].values() if f]
    print(f"exported {meta['space']['name']} {meta['arch_str']} to {args.out}: {', '.join(files)}")
    print("costs: " + ", ".join(f"{k}={v:.6g}" for k, v in meta["costs"].items()))
    check = meta.get("onnx_check")
    if check:
        print(f"onnx check: {check['images']} images ({check['source']}), max |logit difference| "
              f"{check['max_abs_diff']:.3g} (largest |logit| {check['max_abs_logit']:.3g}), "
              f"top-1 agreement {100 * check['top1_agreement']:.1f}%")
    return 0


# -------------------------------------------------------------------------------- load
@dataclasses.dataclass
class ExportedModel:
    """An export read back: the flax model, its variables and ``model.json``."""

    model: Any
    variables: Any
    meta: dict

    def logits(self, images: np.ndarray) -> np.ndarray:
        """Logits for NHWC images with pixels in [0, 255] (uint8 or float)."""
        return jax_logits(self.model, self.variables, images, self.meta["input"]["mean"], self.meta["input"]["std"])


def load_export(out_dir: str | os.PathLike, space=None) -> ExportedModel:
    """Read an export written by :func:`export_run` back into flax.

    Args:
      out_dir: the export directory.
      space: the search space (default: rebuilt from ``model.json``: the registry's space
        of that name, else the space definition it carries).
    Returns:
      an :class:`ExportedModel`.
    """
    import flax.serialization

    from layernas.trainers.models import build_model

    out = Path(out_dir)
    meta = _read_json(out / MODEL_JSON, "model.json of an export")
    if meta.get("format") != FORMAT:
        raise ExportError(f"{out / MODEL_JSON} has format {meta.get('format')!r}; expected {FORMAT!r}")
    if not meta["files"].get("weights"):
        raise ExportError(f"export {out} holds no weights (it was made with --no-weights)")
    if space is None:
        space = _space_of(meta)
    variables = flax.serialization.msgpack_restore((out / meta["files"]["weights"]).read_bytes())
    model = build_model(space, meta["arch"], num_classes=meta.get("num_classes"), **meta.get("model_kwargs", {}))
    return ExportedModel(model, variables, meta)


def _space_of(meta: dict):
    from layernas import registry

    name = meta["space"].get("registry_name") or meta["space"]["name"]
    if name in registry.SPACES:
        return registry.make_space(name, meta.get("dataset"))
    definition = meta["space"].get("definition") or {}
    if "spec" in definition:
        from layernas.search_spaces.layerwise import space_from_json

        return space_from_json(json.dumps(definition))
    raise ExportError(f"space {name!r} of this export is not a named space; pass space=")
