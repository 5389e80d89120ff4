"""New model versions: create one from a logged model, wait until it is READY, link it to the logged model, point
``challenger`` at it, and undo all of it if any step fails (no half-registered model is left behind).

The registering half of `paperline.ops.registry.aliases.ModelRegistry`, which mixes it in: it uses the
registry's client, its per-model lock and its audited alias move.
"""

from __future__ import annotations

import json
import time
from typing import Any

from mlflow.entities.model_registry import ModelVersion, RegisteredModel
from mlflow.exceptions import MlflowException

from paperline.ops.registry.versions import CHALLENGER, READY_TIMEOUT_S, RegistryError, _is


class VersionRegistration:
    """``register`` and its helpers; needs ``client``, ``actor``, ``model_lock``, ``_alias_target`` and
    ``_move_alias`` from the class that mixes it in (ModelRegistry)."""

    client: Any
    actor: str

    def _existing_or_new_model(self, name: str) -> RegisteredModel | None:
        """The registered model ``name``, or None when this call had to create it."""
        try:
            return self.client.get_registered_model(name)
        except MlflowException as error:
            if not _is(error, "RESOURCE_DOES_NOT_EXIST"):
                raise
        try:
            self.client.create_registered_model(name)
            return None
        except MlflowException as error:
            if _is(error, "RESOURCE_ALREADY_EXISTS"):  # a concurrent register won the race
                return self.client.get_registered_model(name)
            raise

    def _source(self, model_uri: str) -> tuple[str, str | None]:
        """(source, logged model id) for ``model_uri``.

        MLflow 3's ``log_model`` keeps a model's files with a logged model, ``models:/<model_id>``, not in the run's
        artifacts. MLflow's SQL registry resolves such a URI through the process-wide tracking URI, not this
        client's (it fails, or reads a stray ./mlflow.db), so it is resolved here with the client we were given.
        The URI itself stays the source where it resolves to the same store (a server resolves it itself; in a
        run, tracking.connect set the process-wide URI to this client's): MLflow's UI links a version to its
        logged model ("Source model") only from a ``models:/<model_id>`` source.
        """
        ref = model_uri.removeprefix("models:/").strip("/")
        if not model_uri.startswith("models:/") or "/" in ref or "@" in ref:
            return model_uri, None  # runs:/, a storage URI, or a registered model's version: MLflow resolves it
        try:
            location = self.client.get_logged_model(ref).artifact_location
            import mlflow

            same_store = self.client.tracking_uri.startswith(("http://", "https://")) or (
                mlflow.get_tracking_uri() == self.client.tracking_uri)
            return (model_uri if same_store else location), ref
        except MlflowException as error:
            if _is(error, "RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
                raise RegistryError(f"no logged model {ref!r} behind {model_uri}; pass the model_uri that "
                                    "log_model returned") from None
            raise

    def _await_ready(self, version: ModelVersion) -> None:
        # Versions are created with await_creation_for=0 and waited for here, so that the version number is
        # known even when waiting fails and the version can be deleted.
        deadline = time.monotonic() + READY_TIMEOUT_S
        while version.status == "PENDING_REGISTRATION" and time.monotonic() < deadline:
            time.sleep(1.0)
            version = self.client.get_model_version(version.name, str(version.version))
        if version.status != "READY":
            raise RegistryError(
                f"version {version.version} of {version.name!r} is {version.status}, not READY "
                f"({version.status_message or 'no message'}); check the model's artifacts and register again"
            )

    def register(
        self, *, name: str, model_uri: str, run_id: str, tags: dict[str, str], flow_run_id: str | None = None
    ) -> str:
        """Create a version of ``name`` from ``model_uri`` with ``tags`` and point ``challenger`` at it.

        Returns the new version number. If any step fails, the new version is deleted, ``challenger`` stays
        where it was (and a model created by this call is deleted) before the error is raised.
        """
        source, model_id = self._source(model_uri)  # before anything is written: it may fail
        created_model = self._existing_or_new_model(name) is None
        version: str | None = None
        try:
            # Tags go in with the version, not one call each afterwards: MLflow validates them before it writes
            # anything, and the version never exists without them.
            created = self.client.create_model_version(
                name=name, source=source, run_id=run_id, tags={k: str(v) for k, v in tags.items()},
                await_creation_for=0, model_id=model_id,
            )
            version = str(created.version)
            self._await_ready(created)
            self._link_logged_model(model_id, name, version)
            with self.model_lock(name):  # re-read under the lock: a concurrent register may have moved it
                previous = self._alias_target(name, CHALLENGER)
                self._move_alias(
                    name, CHALLENGER, version, previous=previous, actor=self.actor, action="register",
                    reason=f"registered {model_uri}", details={"source": model_uri, "tags": tags},
                    mlflow_run_id=run_id, flow_run_id=flow_run_id,
                )
        except BaseException as error:
            if version is not None:
                self._link_logged_model(model_id, name, version, link=False, error=error)
            self._undo_register(name, version, created_model, error)
            raise
        return version

    def set_version_tags(self, name: str, version: str, values: dict[str, str]) -> None:
        """Tags on an existing version (a rerun's comparison with the current champion)."""
        for key, value in values.items():
            self.client.set_model_version_tag(name, version, key, str(value))

    def describe_version(self, name: str, version: str, markdown: str) -> None:
        """The version's description in the registry (its model card): the MLflow UI renders it as markdown."""
        self.client.update_model_version(name, version, description=markdown)

    def _link_logged_model(self, model_id: str | None, name: str, version: str, link: bool = True,
                           error: BaseException | None = None) -> None:
        """Add (or take back) ``name`` v``version`` in the logged model's ``mlflow.modelVersions`` tag: what MLflow's
        UI reads to show a logged model as registered, and what its server writes itself but a client on a database
        does not. Without it the logged model's page says "Not registered" and offers to register it again."""
        if model_id is None:
            return
        from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

        try:
            logged = self.client.get_logged_model(model_id)
            links = json.loads(logged.tags.get(MLFLOW_MODEL_VERSIONS) or "[]")
            others = [v for v in links if (v.get("name"), str(v.get("version"))) != (name, version)]
            entry = [{"name": name, "version": int(version)}] if link else []
            if others + entry != links:
                self.client.set_logged_model_tags(model_id, {MLFLOW_MODEL_VERSIONS: json.dumps(others + entry)})
        except Exception as link_error:
            if error is None:
                raise
            error.add_note(f"taking v{version} of {name!r} off logged model {model_id} failed too ({link_error})")

    def _undo_register(self, name: str, version: str | None, created_model: bool, error: BaseException) -> None:
        # ``challenger`` needs no step here: it is set last, and _move_alias puts it back if its audit row fails.
        try:
            if version is not None:
                self.client.delete_model_version(name, version)
            # Only if still empty: a concurrent register may have added a version of its own meanwhile.
            # ({name!r}: MLflow filters take either quote, and repr picks the one the name does not contain.)
            if created_model and not list(self.client.search_model_versions(f"name = {name!r}", max_results=1)):
                self.client.delete_registered_model(name)
        except Exception as cleanup_error:
            error.add_note(
                f"cleaning up the failed registration failed too ({cleanup_error}): delete version {version} of "
                f"{name!r} by hand"
            )
