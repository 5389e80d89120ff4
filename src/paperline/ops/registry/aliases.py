"""MLflow model registry operations, each alias change written to the audit store.

A new version gets the alias ``challenger``; the promotion policy (``paperline.ops.registry.policy``) or a person moves
``champion``. Aliases only: MLflow's stages are deprecated and never used here.

The MLflow alias and its audit row are kept consistent without a distributed transaction: the row is written in
an open store transaction, then the alias is set, then the transaction commits. If setting the alias fails the
transaction rolls back (no row); if the commit fails after the alias moved, the alias is put back. A failed
``register`` deletes the version it created, so no half-registered model is ever left behind.

Every alias move reads where the aliases are, decides, and writes under a per-model lock (``model:<name>`` in the
audit store: a PostgreSQL advisory lock on a team store, a file lock beside a SQLite one), so two promotions racing
on one model serialise and each audit row's previous version is the one the alias really pointed at.

This module takes an ``MlflowClient`` and never sets tracking or registry URIs itself.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlflow.entities.model_registry import ModelVersion, RegisteredModel
from mlflow.exceptions import MlflowException

from paperline.ops.registry.approvals import Approvals
from paperline.ops.registry.manual_policy import PolicyView, policy_view
from paperline.ops.registry.versions import (
    _MODELS_HINT,
    BUDGET_ALIAS,
    CHAMPION,
    MODEL_LOCK_TIMEOUT_S,
    AliasMove,
    PolicyRefusal,
    RegistryError,
    _alias,
    _current_user,
    _is,
    _pages,
    _required_reason,
    budget_cell,
)
from paperline.ops.registry.policy import Budget, Decision, GridCell, load_policy
from paperline.ops.registry.registration import VersionRegistration
from paperline.ops.store.audit import AliasEvent, AuditStore
from paperline.ops.tracking import tags

# Imported from here by the CLI, the flows and the tests.
__all__ = ["ModelRegistry", "PolicyRefusal", "RegistryError"]


class ModelRegistry(VersionRegistration, Approvals):
    """Register, promote and roll back model versions in MLflow, with an audit row for every alias change."""

    def __init__(self, client: Any, store: AuditStore, actor: str | None = None,
                 policy_path: str | Path | None = None):
        self.client = client
        self.store = store
        self.actor = actor or os.environ.get("PAPERLINE_ACTOR") or _current_user()
        # With a policy, every champion move also moves the budget aliases of the version's project, and a manual
        # promotion is checked against the project's rules.
        self.policy_path = policy_path
        self._held = threading.local()  # the model locks this thread holds: nested moves must not wait on them

    @contextmanager
    def model_lock(self, name: str) -> Iterator[None]:
        """Hold ``name``'s alias lock for the block (re-entrant within a thread): moves of one model serialise
        across threads, processes and, on a team store, machines."""
        held = self._held.__dict__.setdefault("names", set())
        if name in held:
            yield
            return
        with self.store.hold(f"model:{name}", timeout_s=MODEL_LOCK_TIMEOUT_S):
            held.add(name)
            try:
                yield
            finally:
                held.discard(name)

    def _model(self, name: str) -> RegisteredModel:
        try:
            return self.client.get_registered_model(name)
        except MlflowException as error:
            if _is(error, "RESOURCE_DOES_NOT_EXIST"):
                raise RegistryError(f"there is no registered model {name!r}; {_MODELS_HINT}") from None
            raise

    def check_model(self, name: str) -> None:
        """Raise the one-line RegistryError when ``name`` is not a registered model."""
        self._model(name)

    def _version(self, model: RegisteredModel, version: str | int) -> ModelVersion:
        try:
            return self.client.get_model_version(model.name, str(version))
        except MlflowException as error:
            if _is(error, "RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise RegistryError(f"model {model.name!r} has no version {version!r}; {_MODELS_HINT}") from None
            raise

    def _alias_target(self, name: str, alias: str) -> str | None:
        return _alias(self._model(name), alias)

    def aliases(self, name: str) -> dict[str, str]:
        """Every alias of a model and the version it names; {} for a model that does not exist (yet)."""
        try:
            return {alias: str(v) for alias, v in self.client.get_registered_model(name).aliases.items()}
        except MlflowException:
            return {}

    def champion(self, name: str) -> ModelVersion | None:
        """The version with alias ``champion``, or None if the model has none yet."""
        version = self._alias_target(name, CHAMPION)
        return None if version is None else self.client.get_model_version(name, version)

    def version_for_cache_key(self, name: str, cache_key: str) -> str | None:
        """The version registered from a run with this cache key (an unchanged rerun reuses it), if any."""
        try:
            versions = self.client.search_model_versions(f"name = {name!r}")
        except MlflowException as error:
            if _is(error, "RESOURCE_DOES_NOT_EXIST"):
                return None
            raise
        matches = [str(v.version) for v in versions if v.tags.get(tags.CACHE_KEY) == cache_key]
        return max(matches, key=int) if matches else None

    def history(self, name: str) -> list[AliasEvent]:
        """Every audited alias change of ``name``, oldest first (kept after the model is deleted)."""
        return self.store.alias_history(name)

    def _point_alias(self, name: str, alias: str, version: str | None) -> None:
        if version is None:
            self.client.delete_registered_model_alias(name, alias)
        else:
            self.client.set_registered_model_alias(name, alias, version)

    def _move_alias(self, name: str, alias: str, version: str, *, previous: str | None, **audit: Any) -> AliasEvent:
        return self._move_aliases(name, [AliasMove(alias, version, previous)], **audit)[0]

    def _move_aliases(self, name: str, moves: list[AliasMove], **audit: Any) -> list[AliasEvent]:
        """Move several aliases as one change: every audit row commits in one transaction, or none does and
        every alias already moved is put back."""
        moved: list[AliasMove] = []
        try:
            with self.store.transaction() as session:
                events = []
                for move in moves:
                    events.append(self.store.record_alias_event(
                        model_name=name, alias=move.alias, previous_version=move.previous,
                        new_version=move.version, session=session, **{**audit, **move.audit},
                    ))
                    self._point_alias(name, move.alias, move.version)
                    moved.append(move)
        except BaseException as error:
            for move in reversed(moved):  # no audit row committed: no alias may stay where no row says it is
                try:
                    self._point_alias(name, move.alias, move.previous)
                except Exception as undo_error:
                    error.add_note(
                        f"putting alias {move.alias!r} of {name!r} back on version {move.previous} failed too "
                        f"({undo_error}); set it by hand"
                    )
            raise
        return events

    def budgets(self, version: ModelVersion) -> tuple[Budget, ...]:
        """The deployment budgets the policy names for the project that registered ``version``."""
        if self.policy_path is None:
            return ()
        project = version.tags.get(tags.PROJECT) or version.name
        return load_policy(self.policy_path, project).budgets

    def _champion_moves(self, model: RegisteredModel, target: ModelVersion, reason: str) -> list[AliasMove]:
        """``champion`` to ``target``, and each budget alias to ``target`` with the grid cell it serves (or
        removed, when no cell of the target's grid fits the budget: a stale alias would serve the old model)."""
        version = str(target.version)
        moves = [AliasMove(CHAMPION, version, _alias(model, CHAMPION))]
        for budget in self.budgets(target):
            previous = _alias(model, budget.alias)
            cell = budget_cell(target, budget)
            if cell is None:
                if previous is not None:
                    moves.append(AliasMove(budget.alias, None, previous, {
                        "reason": f"{reason} | removed: v{version} has no grid cell within {budget.alias}"}))
                continue
            metric = target.tags.get(tags.PRIMARY_METRIC)
            moves.append(AliasMove(budget.alias, version, previous, {
                "reason": f"{reason} | {budget.alias} serves {cell.layers} layers x {cell.dims} dims "
                          f"({metric} {cell.value:.2f})",
                "details": {"budget": {"max_layers": budget.max_layers, "max_dims": budget.max_dims},
                            "cell": {"layers": cell.layers, "dims": cell.dims, "value": cell.value}},
            }))
        return moves

    def budget_aliases(self, name: str) -> dict[str, str]:
        """Each budget alias of ``name`` and the cell it serves, e.g. {'champion-l3-d128': 'l3 x d128 (60.36)'}."""
        out = {}
        for alias in sorted(self._model(name).aliases):
            cell = self.budget_cell(name, alias)
            if cell is not None:
                out[alias] = f"l{cell.layers} x d{cell.dims} ({cell.value:.2f})"
        return out

    def budget_cell(self, name: str, alias: str) -> GridCell | None:
        """For a budget alias (``champion-l3-d128``), the (layers, dims) cell it serves; None for other aliases."""
        match = BUDGET_ALIAS.fullmatch(alias)
        if not match:
            return None
        version = self._alias_target(name, alias)
        if version is None:
            raise RegistryError(f"{name!r} has no alias {alias!r}; {_MODELS_HINT}")
        target = self.client.get_model_version(name, version)
        return budget_cell(target, Budget(int(match[1]), int(match[2])))

    def apply_decision(
        self, *, name: str, version: str | int, decision: Decision, gate_passed: bool | None,
        flow_run_id: str | None = None, mlflow_run_id: str | None = None,
    ) -> bool:
        """Move ``champion`` to ``version`` if the policy said so (actor "policy"); True when it moved."""
        if not decision.promote:
            return False  # no alias change, so no audit row: the decision itself belongs in the run's lineage
        with self.model_lock(name):  # the caller holds it too when it read the champion it decided against
            model = self._model(name)
            target = self._version(model, version)
            reason = "; ".join(decision.reasons)
            self._move_aliases(
                name, self._champion_moves(model, target, reason), actor="policy", action="auto-promote",
                reason=reason, gate_passed=gate_passed, details=decision.to_dict(),
                mlflow_run_id=mlflow_run_id or target.run_id, flow_run_id=flow_run_id,
            )
        return True

    def _gate_passed(self, version: ModelVersion) -> bool | None:
        """The data gate's verdict for ``version``: its own tag, else its MLflow run's; None if neither has one."""
        tag = version.tags.get(tags.GATE_PASSED)
        if tag is None and version.run_id:
            try:
                tag = self.client.get_run(version.run_id).data.tags.get(tags.GATE_PASSED)
            except MlflowException as error:  # the run was deleted: the gate is unknown
                if not _is(error, "RESOURCE_DOES_NOT_EXIST"):
                    raise
        return None if tag is None else tag.strip().lower() == "true"

    def policy_view(self, model: RegisteredModel, target: ModelVersion, forced: bool = False) -> PolicyView:
        """The policy's view of promoting ``target`` by hand: gate, primary metric vs floor vs champion."""
        policy = None
        if self.policy_path is not None:
            policy = load_policy(self.policy_path, target.tags.get(tags.PROJECT) or target.name)
        metric = target.tags.get(tags.PRIMARY_METRIC)
        champion_version = _alias(model, CHAMPION)
        champion_value = None
        if champion_version is not None and metric:
            try:
                champion_value = self.client.get_model_version(model.name, champion_version).tags.get(
                    tags.METRIC_PREFIX + metric)
            except MlflowException as error:
                if not _is(error, "RESOURCE_DOES_NOT_EXIST"):
                    raise
        return policy_view(
            policy, version=str(target.version), gate_passed=self._gate_passed(target), metric=metric,
            value=target.tags.get(tags.METRIC_PREFIX + metric) if metric else None,
            greater_is_better=target.tags.get(tags.LOWER_IS_BETTER) != "true",
            champion_version=champion_version, champion_value=champion_value, forced=forced)

    def promote(self, name: str, version: str | int, reason: str, force: bool = False) -> AliasEvent:
        """Point ``champion`` at ``version`` by hand, if the policy's hard rules (gate, floor) allow it or ``force``.

        A refusal is a ``PolicyRefusal`` and moves nothing; a forced promotion's reason says what was overridden.
        The audit row's details keep the policy's view (``details["policy"]``), whatever it said.
        """
        reason = _required_reason(reason, "promote a model version")
        with self.model_lock(name):
            model = self._model(name)
            target = self._version(model, version)
            current = _alias(model, CHAMPION)
            if current == str(target.version):
                raise RegistryError(f"version {current} of {name!r} is already the champion; nothing to promote")
            view = self.policy_view(model, target, forced=force)
            if view.refusals and not force:
                raise PolicyRefusal(
                    f"the promotion policy refuses v{target.version} of {name!r}: {view.refusal_text()}; "
                    "promote it anyway with force (`paperline promote ... --force`, or the flow's force)", view)
            if view.forced:
                reason = f"{reason} | forced: {view.refusal_text()}"
            return self._move_aliases(
                name, self._champion_moves(model, target, reason), actor=self.actor, action="promote",
                reason=reason, mlflow_run_id=target.run_id, gate_passed=view.gate_passed,
                details={"policy": view.to_dict()},
            )[0]

    def rollback(self, name: str, reason: str) -> AliasEvent:
        """Point ``champion`` back at the version that was champion before the current one.

        Rollbacks undo like a stack: rolling back twice goes two champions back, never back to the version the
        first rollback moved away from. Versions deleted since are skipped.
        """
        reason = _required_reason(reason, "roll back")
        with self.model_lock(name):
            model = self._model(name)
            current = _alias(model, CHAMPION)
            if current is None:
                raise RegistryError(f"{name!r} has no champion, so there is nothing to roll back")
            target = self._rollback_target(name, current)
            if target is None:
                raise RegistryError(
                    f"{name!r} has no earlier champion to roll back to (the champion is version {current}); "
                    "promote a version by hand with `paperline promote`"
                )
            # Shown, never a refusal: a rollback goes back to a version that was serving.
            view = self.policy_view(model, target)
            return self._move_aliases(
                name, self._champion_moves(model, target, reason), actor=self.actor, action="rollback",
                reason=reason, mlflow_run_id=target.run_id, gate_passed=view.gate_passed,
                details={"policy": view.to_dict()},
            )[0]

    def point_alias(self, name: str, alias: str, version: str, *, action: str, reason: str,
                    details: dict[str, Any] | None = None, mlflow_run_id: str | None = None) -> AliasEvent:
        """Point an alias other than `champion` (a search index's `serving`) at `version`, under the model's lock,
        with its audit row; `champion` moves only through the policy, `promote` and `rollback`."""
        if alias == CHAMPION:
            raise RegistryError("champion moves through the policy, `paperline promote` or `paperline rollback`")
        with self.model_lock(name):
            model = self._model(name)
            target = self._version(model, version)
            return self._move_alias(name, alias, str(target.version), previous=_alias(model, alias),
                                    actor=self.actor, action=action, reason=_required_reason(reason, action),
                                    details=details, mlflow_run_id=mlflow_run_id or target.run_id)

    def _rollback_target(self, name: str, current: str) -> ModelVersion | None:
        # Replay the champion's audit history into a stack of champions: a promotion pushes, a rollback pops
        # back down to the version it went to.
        stack: list[str] = []
        for event in self.store.alias_history(name, CHAMPION):
            if event.new_version is None:
                continue
            if event.action == "rollback":
                while stack and stack[-1] != event.new_version:
                    stack.pop()
                if not stack:
                    stack.append(event.new_version)
            else:
                stack.append(event.new_version)
        for version in reversed(stack):
            if version == current:
                continue
            try:
                return self.client.get_model_version(name, version)
            except MlflowException as error:  # deleted since it was champion: try the one before
                if not _is(error, "RESOURCE_DOES_NOT_EXIST"):
                    raise
        return None

    def list_models(self) -> list[dict[str, Any]]:
        """One row per registered model: latest version, version count, aliases, primary metric of the champion."""
        # One search for all versions instead of one per model: two queries however many models there are.
        versions: dict[str, list[ModelVersion]] = {}
        for mv in _pages(self.client.search_model_versions):
            versions.setdefault(mv.name, []).append(mv)
        rows = []
        for model in _pages(self.client.search_registered_models):
            own = {str(mv.version): mv for mv in versions.get(model.name, [])}
            aliases = {alias: str(v) for alias, v in sorted(model.aliases.items())}
            latest = max(own, key=int) if own else None
            champion = own.get(aliases.get(CHAMPION, ""))
            described = champion or (own[latest] if latest else None)
            metric = described.tags.get(tags.PRIMARY_METRIC) if described else None
            value = champion.tags.get(tags.METRIC_PREFIX + metric) if champion and metric else None
            try:
                value = None if value is None else float(value)
            except ValueError:
                pass  # shown as written rather than dropped: the tag is someone's data
            rows.append({"name": model.name, "latest_version": latest, "versions": len(own), "aliases": aliases,
                         "primary_metric": metric, "champion_metric": value})
        return rows
