"""The ``MLmodel`` file and the environment files next to it, in MLflow's layout.

A model directory written by :func:`~tracking_plugin.models.save_model`::

    MLmodel                      YAML: flavors, signature, example info, uuid, time
    model.skops | model.pkl      the estimator (sklearn flavor)
    python_model.skops | .pkl    a custom PythonModel (python_function flavor)
    input_example.json           the example, pandas "split" orient without index
    serving_input_example.json   the same as a scoring request body
    requirements.txt             pins of the installed versions
    python_env.yaml, conda.yaml  environments for virtualenv / conda
    manifest.json                sha256 and size of every other file (ours; MLflow ignores it)
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import yaml

from tracking_plugin.errors import ModelLoadRefused, NotFound
from tracking_plugin.models._paths import model_path
from tracking_plugin.models._signature import ModelSignature

__all__ = ["ModelInfo", "ModelMetadata"]

MLMODEL_FILE = "MLmodel"
PYFUNC_FLAVOR = "python_function"
SKLEARN_FLAVOR = "sklearn"
REQUIREMENTS_FILE = "requirements.txt"
PYTHON_ENV_FILE = "python_env.yaml"
CONDA_ENV_FILE = "conda.yaml"
SAVED_BY_KEY = "prefect_mlops_version"  # top-level MLmodel key; MLflow keeps unknown keys

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

_KNOWN_KEYS = {
    "artifact_path",
    "flavors",
    "metadata",
    "mlflow_version",
    "model_size_bytes",
    "model_uuid",
    "run_id",
    "saved_input_example_info",
    "signature",
    "utc_time_created",
    SAVED_BY_KEY,
}


def package_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def our_version() -> str:
    return package_version("prefect-mlops") or "0+unknown"


@dataclass(frozen=True)
class ModelMetadata:
    """The parsed ``MLmodel`` file, plus whether its files were verified at load.

    ``verified`` is True when a sha256 manifest was present and every file matched it;
    False for models without one (saved by MLflow) and for metadata not read from disk.
    """

    flavors: Mapping[str, Mapping[str, Any]]
    model_uuid: str | None = None
    utc_time_created: str | None = None
    run_id: str | None = None
    artifact_path: str | None = None
    signature: ModelSignature | None = None
    saved_input_example_info: Mapping[str, Any] | None = None
    metadata: Mapping[str, Any] | None = None
    model_size_bytes: int | None = None
    mlflow_version: str | None = None
    saved_by_version: str | None = None  # prefect-mlops version that wrote it; None for MLflow's
    verified: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def pyfunc_flavor(self) -> Mapping[str, Any] | None:
        return self.flavors.get(PYFUNC_FLAVOR)

    @property
    def sklearn_flavor(self) -> Mapping[str, Any] | None:
        return self.flavors.get(SKLEARN_FLAVOR)

    @property
    def loader_module(self) -> str | None:
        conf = self.pyfunc_flavor
        return conf.get("loader_module") if conf else None

    @property
    def serialization_format(self) -> str | None:
        """How the model object is stored: ``skops``, ``cloudpickle`` or ``pickle``."""
        for conf in (self.sklearn_flavor, self.pyfunc_flavor):
            if conf and conf.get("serialization_format"):
                return str(conf["serialization_format"])
        if self.sklearn_flavor is not None:
            return "pickle"  # MLflow's default when the key is absent (old models)
        return None

    def to_dict(self) -> dict[str, Any]:
        """The ``MLmodel`` YAML document (``verified`` is load-time state, not written)."""
        out: dict[str, Any] = dict(self.extra)
        out["flavors"] = {name: dict(conf) for name, conf in self.flavors.items()}
        for key in ("artifact_path", "run_id"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        out["model_uuid"] = self.model_uuid
        out["utc_time_created"] = self.utc_time_created
        if self.signature is not None:
            out["signature"] = self.signature.to_dict()
        if self.saved_input_example_info is not None:
            out["saved_input_example_info"] = dict(self.saved_input_example_info)
        if self.metadata is not None:
            out["metadata"] = dict(self.metadata)
        if self.model_size_bytes is not None:
            out["model_size_bytes"] = self.model_size_bytes
        if self.mlflow_version is not None:
            out["mlflow_version"] = self.mlflow_version
        if self.saved_by_version is not None:
            out[SAVED_BY_KEY] = self.saved_by_version
        return out

    def to_yaml(self) -> str:
        return yaml.dump(self.to_dict(), Dumper=_Dumper, default_flow_style=False, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, verified: bool = False) -> ModelMetadata:
        flavors = data.get("flavors")
        if not isinstance(flavors, Mapping) or not flavors:
            raise ModelLoadRefused("The MLmodel file lists no flavors; it is not a model description.")
        malformed = sorted(str(k) for k, v in flavors.items() if v is not None and not isinstance(v, Mapping))
        if malformed:
            raise ModelLoadRefused(f"The MLmodel file is malformed: flavor(s) {', '.join(malformed)} are not mappings.")
        signature = data.get("signature")
        size = data.get("model_size_bytes")
        return cls(
            flavors={str(k): dict(v or {}) for k, v in flavors.items()},
            model_uuid=data.get("model_uuid"),
            utc_time_created=None if data.get("utc_time_created") is None else str(data["utc_time_created"]),
            run_id=data.get("run_id"),
            artifact_path=data.get("artifact_path"),
            signature=ModelSignature.from_dict(signature) if isinstance(signature, Mapping) else None,
            saved_input_example_info=data.get("saved_input_example_info"),
            metadata=data.get("metadata"),
            model_size_bytes=int(size) if isinstance(size, int) else None,
            mlflow_version=data.get("mlflow_version"),
            saved_by_version=data.get(SAVED_BY_KEY),
            verified=verified,
            extra={k: v for k, v in data.items() if k not in _KNOWN_KEYS},
        )

    @classmethod
    def read(cls, model_dir: str | os.PathLike[str], *, verified: bool = False) -> ModelMetadata:
        """Parse ``<model_dir>/MLmodel``."""
        path = model_path(model_dir, MLMODEL_FILE, what="MLmodel file")
        if not path.is_file():
            raise NotFound(
                f"No MLmodel file in {os.fspath(model_dir)!r}: it is not a model directory. "
                "Give the directory that save_model/log_model wrote (it contains 'MLmodel')."
            )
        try:
            text = path.read_text()
        except UnicodeDecodeError as exc:
            raise ModelLoadRefused(f"The MLmodel file in {os.fspath(model_dir)!r} is not UTF-8 text ({exc}).") from exc
        return cls.from_yaml(text, where=os.fspath(model_dir), verified=verified)

    @classmethod
    def from_yaml(cls, text: str, *, where: str, verified: bool = False) -> ModelMetadata:
        """Parse the text of an ``MLmodel`` file; ``where`` names the model in errors."""
        try:
            data = yaml.load(text, Loader=_Loader)
        except yaml.YAMLError as exc:
            raise ModelLoadRefused(f"The MLmodel file in {where!r} is not valid YAML ({exc}).") from exc
        if not isinstance(data, Mapping):
            raise ModelLoadRefused(f"The MLmodel file in {where!r} is not a YAML mapping.")
        return cls.from_dict(data, verified=verified)

    def with_verified(self, verified: bool) -> ModelMetadata:
        return replace(self, verified=verified)


@dataclass(frozen=True)
class ModelInfo:
    """What :func:`~tracking_plugin.models.log_model` logged, as MLflow's ``ModelInfo``."""

    model_uri: str
    run_id: str
    artifact_path: str
    flavors: Mapping[str, Mapping[str, Any]]
    model_uuid: str
    utc_time_created: str
    signature: ModelSignature | None = None
    saved_input_example_info: Mapping[str, Any] | None = None
    registered_model_version: int | None = None
    metadata: Mapping[str, Any] | None = None


# ---------------------------------------------------------------------------- environment


def default_requirements(distributions: list[str]) -> list[str]:
    """``name==version`` for each installed distribution, in the given order."""
    pins = []
    for name in distributions:
        version = package_version(name)
        if version is not None:
            pins.append(f"{name}=={version}")
    return pins


def write_environment(model_dir: Path, requirements: list[str]) -> None:
    """requirements.txt, python_env.yaml and conda.yaml, as MLflow writes them."""
    python = platform.python_version()
    (model_dir / REQUIREMENTS_FILE).write_text("\n".join(requirements) + ("\n" if requirements else ""))
    build = default_requirements(["pip", "setuptools", "wheel"])
    python_env = {"python": python, "build_dependencies": build or ["pip"], "dependencies": [f"-r {REQUIREMENTS_FILE}"]}
    (model_dir / PYTHON_ENV_FILE).write_text(yaml.dump(python_env, Dumper=_Dumper, default_flow_style=False, sort_keys=False))
    pip_version = package_version("pip")
    conda = {
        "channels": ["conda-forge"],
        "dependencies": [f"python={python}", f"pip<={pip_version}" if pip_version else "pip", {"pip": list(requirements)}],
        "name": "mlflow-env",
    }
    (model_dir / CONDA_ENV_FILE).write_text(yaml.dump(conda, Dumper=_Dumper, default_flow_style=False, sort_keys=False))


def pyfunc_env_conf() -> dict[str, Any]:
    return {"env": {"conda": CONDA_ENV_FILE, "virtualenv": PYTHON_ENV_FILE}, "python_version": platform.python_version()}


def model_file(model_dir: str | os.PathLike[str], relative: Any, where: str) -> Path:
    """``model_dir/relative`` for the model file an MLmodel names (see :func:`._paths.model_path`)."""
    return model_path(model_dir, relative, where=where, what="model file")
