"""save_model / load_model / log_model."""

from __future__ import annotations

import functools
import importlib.metadata
import json
import logging
import os
import shutil
import sys
import tempfile
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Collection, Literal, Mapping
from urllib.parse import urlsplit
from urllib.request import url2pathname

from tracking_plugin import fluent
from tracking_plugin.artifacts import get_artifact_repository
from tracking_plugin.errors import AlreadyExists, InvalidArgument, ModelLoadRefused, NotFound
from tracking_plugin.models import _serialization as ser
from tracking_plugin.models._example import Example, prepare_example
from tracking_plugin.models._manifest import file_sha256, read_manifest, verify_manifest, write_manifest
from tracking_plugin.models._mlmodel import (
    MLMODEL_FILE,
    PYFUNC_FLAVOR,
    SKLEARN_FLAVOR,
    ModelInfo,
    ModelMetadata,
    default_requirements,
    model_file,
    our_version,
    package_version,
    pyfunc_env_conf,
    write_environment,
)
from tracking_plugin.models._paths import check_model_paths, check_model_tree
from tracking_plugin.models._pyfunc import (
    PyFuncModel,
    PythonModel,
    _PythonModelImpl,
    _SklearnImpl,
    class_reference,
    context_for,
    import_class,
    instance_state,
    rebuild_instance,
)
from tracking_plugin.models._signature import (
    ModelSignature,
    infer_signature,
    validate_input,
    validate_tensor,
)
from tracking_plugin.models._uris import ModelUriKind, parse_model_uri, resolve_model_uri
from tracking_plugin.validation import validate_artifact_path, validate_model_name

logger = logging.getLogger(__name__)

SerializationFormat = Literal["skops", "cloudpickle", "pickle"]

# The python_function loader_module of custom models: MLflow imports it and calls _load_pyfunc.
CUSTOM_LOADER_MODULE = "tracking_plugin.models.loader"
SKLEARN_LOADER_MODULE = "mlflow.sklearn"  # data in MLmodel so MLflow can load our sklearn models
ARTIFACTS_DIR = "artifacts"

# Import name -> distribution name for the packages a model commonly needs.
_KNOWN_DISTRIBUTIONS = {
    "sklearn": "scikit-learn",
    "numpy": "numpy",
    "scipy": "scipy",
    "pandas": "pandas",
    "skops": "skops",
    "cloudpickle": "cloudpickle",
    "tracking_plugin": "prefect-mlops",
}


# ---------------------------------------------------------------------------- save


def save_model(
    model: Any,
    path: str | os.PathLike[str],
    *,
    signature: ModelSignature | None = None,
    input_example: Any = None,
    serialization_format: SerializationFormat = "skops",
    pip_requirements: list[str] | None = None,
    metadata: dict[str, Any] | None = None,
    run_id: str | None = None,
    artifacts: Mapping[str, str | os.PathLike[str]] | None = None,
    pyfunc_predict_fn: str = "predict",
) -> ModelMetadata:
    """Write ``model`` as an MLflow model directory at ``path`` (which must not exist or be empty).

    ``model`` is a fitted scikit-learn estimator or pipeline, or a :class:`PythonModel`.
    The directory gets flavors ``python_function`` (+ ``sklearn``), the serialized model
    (skops unless you opt in to ``"cloudpickle"``/``"pickle"``), pinned
    ``requirements.txt``, ``python_env.yaml``, ``conda.yaml``, the input example, and a
    sha256 ``manifest.json``. Without ``signature`` one is inferred from the example.
    ``artifacts`` (custom models only) maps names to files or folders copied into the model
    and passed to :meth:`PythonModel.load_context` as ``context.artifacts``.

    >>> import tempfile, pandas as pd
    >>> from sklearn.linear_model import LinearRegression
    >>> X = pd.DataFrame({"x": [1.0, 2.0, 3.0]})
    >>> model = LinearRegression().fit(X, [2.0, 4.0, 6.0])
    >>> path = tempfile.mkdtemp() + "/model"
    >>> meta = save_model(model, path, input_example=X.head(2))
    >>> sorted(meta.flavors), meta.signature.inputs.input_names()
    (['python_function', 'sklearn'], ['x'])
    >>> load_model(path).predict(pd.DataFrame({"x": [4.0]})).round(6).tolist()
    [8.0]
    """
    return _save(
        model,
        Path(path),
        signature=signature,
        input_example=input_example,
        serialization_format=serialization_format,
        pip_requirements=pip_requirements,
        metadata=metadata,
        run_id=run_id,
        artifact_path=None,
        artifacts=artifacts,
        pyfunc_predict_fn=pyfunc_predict_fn,
    )


def _save(
    model: Any,
    target: Path,
    *,
    signature: ModelSignature | None,
    input_example: Any,
    serialization_format: str,
    pip_requirements: list[str] | None,
    metadata: dict[str, Any] | None,
    run_id: str | None,
    artifact_path: str | None,
    artifacts: Mapping[str, str | os.PathLike[str]] | None,
    pyfunc_predict_fn: str,
) -> ModelMetadata:
    fmt = ser.check_format(serialization_format)
    is_custom = isinstance(model, PythonModel)
    if not is_custom:
        _check_estimator(model, pyfunc_predict_fn)
        if artifacts:
            raise InvalidArgument("artifacts= is for custom PythonModel models; a scikit-learn model keeps its state itself.")
    if signature is not None and not isinstance(signature, ModelSignature):
        raise InvalidArgument(f"signature must be a ModelSignature (see infer_signature), not {type(signature).__name__}.")
    if metadata is not None:
        try:
            if not isinstance(metadata, Mapping):
                raise TypeError(f"it is a {type(metadata).__name__}")
            json.dumps(dict(metadata), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(
                f"metadata must be a dict of plain values (str, int, float, bool, None, lists, dicts) "
                f"because it is stored in the MLmodel YAML file: {exc}."
            ) from exc
    if pip_requirements is not None and (isinstance(pip_requirements, str) or not all(isinstance(r, str) for r in pip_requirements)):
        raise InvalidArgument("pip_requirements must be a list of requirement strings, e.g. ['scikit-learn==1.5.2'].")
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise AlreadyExists(
            f"Cannot save the model to {os.fspath(target)!r}: the path already exists and is not an "
            "empty directory. Choose a new path or remove the old model first."
        )
    example = prepare_example(input_example) if input_example is not None else None
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write into a hidden sibling and rename it into place: a failed save leaves nothing behind.
    # (mkdir, not mkdtemp: the model directory gets the umask's permissions, not 0700.)
    staging = target.parent / f".{target.name}.saving-{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    try:
        if is_custom:
            flavors = _write_custom(model, staging, fmt, artifacts)
        else:
            flavors = _write_sklearn(model, staging, fmt, pyfunc_predict_fn)

        if example is not None:
            if signature is None:
                signature = _infer_from_example(model, example, staging, flavors, pyfunc_predict_fn)
            else:
                _check_example_matches(example, signature)
            example.save(staging)

        requirements = list(pip_requirements) if pip_requirements is not None else _default_requirements(model, fmt)
        write_environment(staging, requirements)
        size = sum(p.stat().st_size for p in staging.rglob("*") if p.is_file())
        meta = ModelMetadata(
            flavors=flavors,
            model_uuid=uuid.uuid4().hex,
            utc_time_created=str(datetime.now(timezone.utc).replace(tzinfo=None)),
            run_id=run_id,
            artifact_path=artifact_path,
            signature=signature,
            saved_input_example_info=example.info if example is not None else None,
            metadata=dict(metadata) if metadata is not None else None,
            model_size_bytes=size,
            saved_by_version=our_version(),
        )
        (staging / MLMODEL_FILE).write_text(meta.to_yaml())
        write_manifest(staging)
        try:
            if target.exists():
                target.rmdir()  # empty when checked above; fails if someone wrote there since
            os.replace(staging, target)
        except OSError as exc:
            raise AlreadyExists(
                f"Cannot save the model to {os.fspath(target)!r}: another save wrote there first "
                f"({exc.strerror}). Choose a new path."
            ) from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return meta


def _check_estimator(model: Any, predict_fn: str) -> None:
    if not callable(getattr(model, predict_fn, None)):
        raise InvalidArgument(
            f"Cannot save {type(model).__name__}: it has no {predict_fn}() method. Pass a fitted "
            "scikit-learn estimator or pipeline, or a tracking_plugin.models.PythonModel subclass."
        )
    try:
        from sklearn.exceptions import NotFittedError
        from sklearn.utils.validation import check_is_fitted
    except ImportError:  # pragma: no cover - scikit-learn is a dependency
        return
    try:
        check_is_fitted(model)
    except NotFittedError as exc:
        raise InvalidArgument(f"Cannot save {type(model).__name__}: it is not fitted yet. Call fit() first.") from exc
    except TypeError:
        pass  # not a scikit-learn estimator: duck-typed models are allowed


def _write_sklearn(model: Any, staging: Path, fmt: str, predict_fn: str) -> dict[str, dict[str, Any]]:
    import sklearn

    name = ser.file_name("model", fmt)
    trusted = ser.dump(model, staging / name, fmt, sha256_of=file_sha256)
    pyfunc = {"loader_module": SKLEARN_LOADER_MODULE, "model_path": name, "predict_fn": predict_fn, **pyfunc_env_conf()}
    sklearn_conf = {
        "pickled_model": name,
        "serialization_format": fmt,
        "sklearn_version": sklearn.__version__,
        "code": None,
        "skops_trusted_types": trusted,
    }
    return {PYFUNC_FLAVOR: pyfunc, SKLEARN_FLAVOR: sklearn_conf}


def _write_custom(
    model: PythonModel, staging: Path, fmt: str, artifacts: Mapping[str, str | os.PathLike[str]] | None
) -> dict[str, dict[str, Any]]:
    name = ser.file_name("python_model", fmt)
    conf: dict[str, Any] = {"loader_module": CUSTOM_LOADER_MODULE, "python_model": name, "serialization_format": fmt}
    if fmt == "skops":
        conf["python_model_class"] = class_reference(model)
        conf["skops_trusted_types"] = ser.dump(instance_state(model), staging / name, fmt, sha256_of=file_sha256)
    else:
        ser.dump(model, staging / name, fmt, sha256_of=file_sha256)
    if artifacts:
        conf["artifacts"] = _copy_artifacts(artifacts, staging)
    conf.update(pyfunc_env_conf())
    return {PYFUNC_FLAVOR: conf}


def _copy_artifacts(artifacts: Mapping[str, str | os.PathLike[str]], staging: Path) -> dict[str, dict[str, str]]:
    out = {}
    for key, source in artifacts.items():
        if not isinstance(key, str) or not key or "/" in key or key in (".", ".."):
            raise InvalidArgument(f"Invalid artifact name {key!r}: use a plain name such as 'vocabulary'.")
        src = Path(source)
        if not src.exists():
            raise InvalidArgument(f"Artifact {key!r} points to {os.fspath(source)!r}, which does not exist.")
        relative = f"{ARTIFACTS_DIR}/{key}/{src.name}"
        dest = staging / relative
        dest.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dest)
        else:
            shutil.copy2(src, dest)
        out[key] = {"path": relative, "uri": os.fspath(source)}
    return out


def _infer_from_example(model: Any, example: Example, staging: Path, flavors: Mapping[str, Any], predict_fn: str) -> ModelSignature:
    try:
        if isinstance(model, PythonModel):
            # Predict with the saved copy, as it will run after loading (load_context included).
            impl = _custom_impl(staging, flavors[PYFUNC_FLAVOR], allow_pickle=True, verified=True, digests={}, where=os.fspath(staging))
            output = impl.predict(example.data, None)
        else:
            output = getattr(model, predict_fn)(example.data)
    except InvalidArgument:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's model failed on the user's example
        raise InvalidArgument(
            f"The model failed to predict on input_example ({type(exc).__name__}: {exc}), so no "
            "signature could be inferred. Fix the example (same columns as in training) or pass signature=."
        ) from exc
    try:
        return infer_signature(example.data, output)
    except InvalidArgument:
        # Outputs of unusual types (lists of dicts, ...) get no output schema, as in MLflow.
        return infer_signature(example.data)


def _check_example_matches(example: Example, signature: ModelSignature) -> None:
    schema = signature.inputs
    if schema is None:
        return
    try:
        if schema.is_tensor_spec():
            validate_tensor(example.data, schema)
        elif isinstance(example.data, (dict, Mapping)) or not hasattr(example.data, "columns"):
            raise InvalidArgument("the example is an array, the signature describes columns")
        else:
            validate_input(example.data, signature, allow_extra=True)
    except InvalidArgument as exc:
        raise InvalidArgument(f"input_example does not match the given signature: {exc.message}") from exc


@functools.cache
def _distributions_by_module() -> Mapping[str, list[str]]:
    return importlib.metadata.packages_distributions()


def _top_level_modules(model: Any) -> set[str]:
    modules: set[str] = set()

    def visit(obj: Any, depth: int) -> None:
        modules.add(type(obj).__module__.partition(".")[0])
        if depth <= 0:
            return
        get_params = getattr(obj, "get_params", None)
        if callable(get_params):
            try:
                for value in get_params(deep=True).values():
                    visit(value, 0)
            except Exception:  # noqa: BLE001 - a duck-typed model may have an odd get_params
                pass
        if isinstance(obj, PythonModel):
            for value in vars(obj).values():
                visit(value, depth - 1)

    visit(model, 2)
    return modules


def _default_requirements(model: Any, fmt: str) -> list[str]:
    """Pins from installed versions (importlib.metadata): no pip resolution, no subprocess."""
    is_custom = isinstance(model, PythonModel)
    names = ["prefect-mlops"] if is_custom else ["scikit-learn"]
    names += ["numpy", "pandas", "scipy", "skops" if fmt == "skops" else "cloudpickle"]
    for module in sorted(_top_level_modules(model)):
        if module in _KNOWN_DISTRIBUTIONS:
            names.append(_KNOWN_DISTRIBUTIONS[module])
        elif module not in sys.stdlib_module_names and module != "builtins":
            names.extend(_distributions_by_module().get(module, [])[:1])
    return default_requirements(list(dict.fromkeys(names)))


# ---------------------------------------------------------------------------- log


def log_model(
    model: Any,
    name: str,
    *,
    input_example: Any = None,
    signature: ModelSignature | None = None,
    registered_model_name: str | None = None,
    serialization_format: SerializationFormat = "skops",
    pip_requirements: list[str] | None = None,
    metadata: dict[str, Any] | None = None,
    artifacts: Mapping[str, str | os.PathLike[str]] | None = None,
    pyfunc_predict_fn: str = "predict",
) -> ModelInfo:
    """Save ``model`` under the active run's artifacts at ``name``; optionally register it.

    Starts a run (and leaves it active) when none is active, as MLflow does. With
    ``registered_model_name`` a new version of that registered model is created from
    ``runs:/<run_id>/<name>``.
    """
    artifact_path = validate_artifact_path(name)
    if not artifact_path:
        raise InvalidArgument(f"Invalid model name {name!r}: give a run-relative path such as 'model'.")
    if registered_model_name is not None:
        validate_model_name(registered_model_name)

    run = fluent.active_run() or fluent.start_run()
    run_id = run.info.run_id
    with tempfile.TemporaryDirectory(prefix="mlops-log-model-") as tmp:
        local = Path(tmp, "model")
        meta = _save(
            model,
            local,
            signature=signature,
            input_example=input_example,
            serialization_format=serialization_format,
            pip_requirements=pip_requirements,
            metadata=metadata,
            run_id=run_id,
            artifact_path=artifact_path,
            artifacts=artifacts,
            pyfunc_predict_fn=pyfunc_predict_fn,
        )
        fluent.log_artifacts(os.fspath(local), artifact_path=artifact_path)
    model_uri = f"runs:/{run_id}/{artifact_path}"
    version = None
    if registered_model_name is not None:
        from tracking_plugin.registry import register_model

        version = register_model(model_uri, registered_model_name).version
    assert meta.model_uuid is not None and meta.utc_time_created is not None
    return ModelInfo(
        model_uri=model_uri,
        run_id=run_id,
        artifact_path=artifact_path,
        flavors=meta.flavors,
        model_uuid=meta.model_uuid,
        utc_time_created=meta.utc_time_created,
        signature=meta.signature,
        saved_input_example_info=meta.saved_input_example_info,
        registered_model_version=version,
        metadata=meta.metadata,
    )


# ---------------------------------------------------------------------------- load


def load_model(
    model_uri: str | os.PathLike[str],
    *,
    allow_pickle: bool = False,
    dst_path: str | os.PathLike[str] | None = None,
    trusted_classes: Collection[str] = (),
) -> PyFuncModel:
    """Load a model saved by us or by MLflow (scikit-learn flavor) and return a :class:`PyFuncModel`.

    ``model_uri`` is a local path, ``file://``, ``s3://...``, ``runs:/<run_id>/<path>``,
    ``models:/<name>/<version|stage|latest>`` or ``models:/<name>@<alias>``. Local
    directories are read in place; remote ones are downloaded to ``<dst_path>/<name>``
    (default: a new temporary directory, which is kept: ``local_path`` points into it).

    Every file is checked against the model's sha256 manifest first. Models serialized with
    pickle/cloudpickle are refused unless ``allow_pickle=True``: unpickling runs code.
    A custom model's class (``python_model_class``) is imported by name; for a model
    without a manifest (not saved by prefect-mlops) it is imported only when named in
    ``trusted_classes`` (``"package.module:ClassName"``), since importing a module runs its
    code. A class from the standard library is never imported.
    Refusals raise :class:`~tracking_plugin.errors.ModelLoadRefused` with the reason.
    """
    uri = os.fspath(model_uri)
    location = resolve_model_uri(uri)
    parsed = parse_model_uri(location)
    if parsed.kind is ModelUriKind.LOCAL:
        local = _local_path(location)
    else:
        if dst_path is not None and not Path(dst_path).is_dir():
            raise InvalidArgument(f"dst_path {os.fspath(dst_path)!r} must be an existing directory.")
        base = os.fspath(dst_path) if dst_path is not None else tempfile.mkdtemp(prefix="mlops-model-")
        # As MLflow: the model lands in <dst_path>/<last path component of the location>.
        name = urlsplit(location).path.rstrip("/").rpartition("/")[2] or "model"
        repo = get_artifact_repository(location, fluent.current_client().settings)
        local = Path(repo.download_artifacts("", os.path.join(base, name)))
    return load_local(local, model_uri=uri, allow_pickle=allow_pickle, trusted_classes=trusted_classes)


def _local_path(location: str) -> Path:
    split = urlsplit(location)
    if split.scheme.lower() == "file":
        return Path(url2pathname(split.path))
    return Path(location)


def load_local(
    model_dir: str | os.PathLike[str],
    *,
    model_uri: str | None = None,
    allow_pickle: bool = False,
    trusted_classes: Collection[str] = (),
) -> PyFuncModel:
    """Load the model directory ``model_dir`` (see :func:`load_model`)."""
    root = Path(model_dir)
    where = model_uri or os.fspath(model_dir)
    if not root.is_dir():
        raise NotFound(f"No model directory at {where!r}. Check the path or URI.")
    # Before any file is read: no symlink out of the folder, no FIFO to block on.
    check_model_tree(root, where=where)
    entries = read_manifest(root)
    digests: dict[str, str] = {}
    if entries is not None:
        digests = verify_manifest(root, entries)
    meta = ModelMetadata.read(root, verified=entries is not None)
    check_model_paths(root, meta, where=where)
    if entries is None and meta.saved_by_version is not None:
        raise ModelLoadRefused(
            f"Refusing to load the model at {where!r}: it was saved by prefect-mlops but its "
            "manifest.json is missing, so its files cannot be verified. Re-download or re-save the model."
        )
    pyfunc = meta.pyfunc_flavor or {}
    loader = pyfunc.get("loader_module")
    impl: _SklearnImpl | _PythonModelImpl
    if meta.sklearn_flavor is not None and loader in (None, SKLEARN_LOADER_MODULE):
        impl = _sklearn_impl(root, meta, allow_pickle=allow_pickle, digests=digests, where=where)
    elif loader == CUSTOM_LOADER_MODULE:
        impl = _custom_impl(
            root, pyfunc, allow_pickle=allow_pickle, verified=meta.verified, digests=digests, where=where,
            trusted_classes=trusted_classes,
        )
    else:
        flavors = ", ".join(sorted(meta.flavors))
        raise InvalidArgument(
            f"Cannot load the model at {where!r}: its flavors are {flavors} (python_function loader "
            f"{loader!r}). prefect-mlops loads scikit-learn models and PythonModel models it saved; "
            "load other flavors with MLflow."
        )
    return PyFuncModel(metadata=meta, impl=impl, local_path=os.fspath(root), model_uri=where)


def _sklearn_impl(root: Path, meta: ModelMetadata, *, allow_pickle: bool, digests: Mapping[str, str], where: str) -> _SklearnImpl:
    conf = meta.sklearn_flavor or {}
    pyfunc = meta.pyfunc_flavor or {}
    fmt = conf.get("serialization_format") or "pickle"
    if fmt not in ser.FORMATS:
        raise ModelLoadRefused(f"The model at {where!r} has an unknown serialization_format {fmt!r}.")
    ser.require_pickle_opt_in(fmt, allow_pickle, where)
    relative = conf.get("pickled_model") or pyfunc.get("model_path")
    path = model_file(root, relative, where)
    if not path.is_file():
        raise ModelLoadRefused(f"The model at {where!r} is incomplete: its model file {relative!r} is missing.")
    trusted = list(conf.get("skops_trusted_types") or [])
    if not meta.verified:
        ser.check_foreign_trusted_types(trusted, where)
    sha = digests.get(Path(relative).as_posix()) or file_sha256(path)
    estimator = ser.load(path, fmt, trusted=trusted, sha256=sha, where=where)
    saved_version = conf.get("sklearn_version")
    installed = package_version("scikit-learn")
    if saved_version and installed and saved_version != installed:
        logger.warning(
            "Model at %s was saved with scikit-learn %s; %s is installed. Predictions may differ.",
            where, saved_version, installed,
        )
    predict_fn = pyfunc.get("predict_fn") or "predict"
    if not callable(getattr(estimator, predict_fn, None)):
        raise ModelLoadRefused(f"The model at {where!r} has no {predict_fn}() method (its predict_fn).")
    return _SklearnImpl(estimator, predict_fn)


def _custom_impl(
    root: Path,
    conf: Mapping[str, Any],
    *,
    allow_pickle: bool,
    verified: bool,
    digests: Mapping[str, str],
    where: str,
    trusted_classes: Collection[str] = (),
) -> _PythonModelImpl:
    fmt = conf.get("serialization_format") or "cloudpickle"
    if fmt not in ser.FORMATS:
        raise ModelLoadRefused(f"The model at {where!r} has an unknown serialization_format {fmt!r}.")
    ser.require_pickle_opt_in(fmt, allow_pickle, where)
    relative = conf.get("python_model")
    path = model_file(root, relative, where)
    if not path.is_file():
        raise ModelLoadRefused(f"The model at {where!r} is incomplete: its model file {relative!r} is missing.")
    sha = digests.get(Path(relative).as_posix()) or file_sha256(path)
    if fmt == "skops":
        cls = import_class(conf.get("python_model_class"), where, verified=verified, trusted_classes=trusted_classes)
        trusted = list(conf.get("skops_trusted_types") or [])
        if not verified:
            ser.check_foreign_trusted_types(trusted, where)
        state = ser.load(path, fmt, trusted=trusted, sha256=sha, where=where)
        if not isinstance(state, dict):
            raise ModelLoadRefused(f"The model at {where!r} is malformed: its state is not a dict.")
        python_model = rebuild_instance(cls, state)
    else:
        python_model = ser.load(path, fmt, trusted=None, sha256=sha, where=where)
        if not callable(getattr(python_model, "predict", None)):
            raise ModelLoadRefused(f"The model at {where!r} holds a {type(python_model).__name__}, which has no predict().")
    context = context_for(root, conf.get("artifacts"))
    load_context = getattr(python_model, "load_context", None)
    if callable(load_context):
        load_context(context)
    return _PythonModelImpl(python_model, context)
