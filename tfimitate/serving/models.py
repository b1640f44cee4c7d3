"""The models a server serves, as a models.config (ModelServerConfig) describes them.

Each `config` entry is one model: its `base_path` of version directories, its
`model_version_policy` (newest N, specific versions, all) and its `version_labels`.
`Models.configure` applies a new config as TF Serving's ServerCore::ReloadConfig does:
new models are added, removed ones unloaded, policies changed, and the label map is
replaced only if every label names a version available after the change (otherwise
the error is returned and the labels stay as they were).

Example:
    models = Models()
    models.configure(single_model_config("sst2", "saved_models/sst2"))
    servable = models.get("sst2", label="stable")
"""

import threading

import grpc
from absl import logging
from tensorflow_serving.config import model_server_config_pb2

from tfimitate.errors import UserError
from tfimitate.serving.config import config_problem
from tfimitate.serving.servables import ModelVersions
from tfimitate.serving.status import RequestError


def single_model_config(name, base_path):
    """The ModelServerConfig of TF Serving's --model_name/--model_base_path: the newest version."""
    config = model_server_config_pb2.ModelServerConfig()
    config.model_config_list.config.add(name=name, base_path=base_path,
                                        model_platform="tensorflow")
    return config


class Models:
    """name -> ModelVersions, configured from a ModelServerConfig and polled together."""

    def __init__(self, max_num_load_retries=5, load_retry_interval=60.0):
        self.max_num_load_retries = max_num_load_retries
        self.load_retry_interval = load_retry_interval
        self._models = {}  # replaced whole, never changed in place
        self._lock = threading.Lock()

    def names(self):
        return sorted(self._models)

    def versions(self, name):
        """The ModelVersions of model `name`; RequestError NOT_FOUND if it is not served."""
        models = self._models
        if name not in models:
            raise RequestError(grpc.StatusCode.NOT_FOUND,
                               f"Could not find any versions of model {name}")
        return models[name]

    def get(self, name, version=None, label=None):
        """The servable a ModelSpec names (RequestError NOT_FOUND otherwise)."""
        models = self._models
        if name not in models:
            if label:
                raise RequestError(grpc.StatusCode.NOT_FOUND,
                                   f"Unrecognized servable version label: {label}")
            spec = f"Latest({name})" if version is None else f"Specific({name}, {version})"
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: {spec}")
        return models[name].get(version, label)

    def configure(self, config):
        """Applies a ModelServerConfig; returns None, or the error (RequestError) that kept its
        version labels from being applied (the models are applied all the same, as in TF
        Serving). A config that TF Serving refuses outright changes nothing (RequestError)."""
        problem = config_problem(config)
        if problem:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, problem)
        with self._lock:
            models = {}
            for model in config.model_config_list.config:
                versions = self._models.get(model.name)
                if versions is None or versions.base_path != model.base_path:
                    versions = ModelVersions(model.name, model.base_path,
                                             self.max_num_load_retries, self.load_retry_interval)
                versions.policy = model.model_version_policy
                models[model.name] = versions
            removed = [v for name, v in self._models.items() if models.get(name) is not v]
            for versions in models.values():  # new versions first, so that labels can move
                versions.poll(unload=False)    # to them before the old ones go
            self._models = models
            error = None
            try:
                for model in config.model_config_list.config:
                    models[model.name].check_labels(dict(model.version_labels))
            except RequestError as refused:
                logging.error("Version labels not applied (the previous ones stay): %s", refused)
                error = refused
            if error is None:
                for model in config.model_config_list.config:
                    models[model.name].labels = dict(model.version_labels)
            for versions in models.values():
                versions.poll()
            for versions in removed:
                versions.unload_all()
                logging.info("Unloaded model %s (no longer in the config).", versions.name)
            return error

    def poll(self):
        """Polls every model's base path once (not while a config is being applied)."""
        with self._lock:
            for versions in self._models.values():
                try:
                    versions.poll()
                except (OSError, UserError) as error:  # being replaced, unreachable: retry
                    logging.warning("Could not scan %s: %s", versions.base_path, error)

    def retrying(self):
        return any(versions.retrying() for versions in self._models.values())

    def states(self):
        """(model, version, State) of every known version."""
        return [(name, version, state) for name, versions in sorted(self._models.items())
                for version, (state, _) in sorted(versions.states.items())]

    def unavailable(self):
        """Names of the models with no available version."""
        return [name for name, versions in sorted(self._models.items())
                if not versions.available()]

